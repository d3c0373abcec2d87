"""The images the exporter checks with: deterministic, no download, no torch.

`parity_images()`: 8 textured photos-like images of varied sizes and aspect ratios (smooth gradients, edges,
fine texture and noise, so that every part of the network sees non-trivial input). `degraded_images()`: each of
the first photos degraded by `hf_iqa.degradations` at levels 1, 3 and 5 of several distortions, the set on which
the int8 / fp16 drift is measured (a quality model's job is to rank exactly such images).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PARITY_SIZES = ((320, 240), (512, 384), (256, 256), (640, 427), (300, 500), (224, 224), (700, 466), (384, 512))
DRIFT_DISTORTIONS = ("gaublur", "whitenoise", "jpeg", "brighten", "pixelate")
DRIFT_LEVELS = (1, 3, 5)


def textured_image(width: int, height: int, seed: int) -> Image.Image:
    """A synthetic RGB picture: two-colour gradient, a few flat shapes with hard edges, texture and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3) * (x / width)[..., None] + rng.uniform(0, 255, 3) * (y / height)[..., None]
    image = base / 2 + 40 * np.sin(x[..., None] / rng.uniform(3, 12) + rng.uniform(0, 6, 3))
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.3) * min(width, height)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def parity_images(sizes=PARITY_SIZES) -> list[Image.Image]:
    return [textured_image(width, height, seed) for seed, (width, height) in enumerate(sizes)]


def degraded_images(photos: int = 3) -> list[Image.Image]:
    from hf_iqa import degradations

    images = []
    for photo in parity_images()[:photos]:
        images.append(photo)
        for name in DRIFT_DISTORTIONS:
            images.extend(degradations.apply(photo, name, level, rng=0) for level in DRIFT_LEVELS)
    return images
