"""LIQE image processor (PIL/numpy backend; no torchvision).

Two reference protocols give different scores on large images, so both are first-class (`protocol=`):

- "official" (the paper's evaluation, `BIQA_benchmark.py` / `demo.py`): if both sides are >= 768, resize the
  short side to 768 (PIL bilinear, long side `int(768 * long / short)`); windows of 224 on a stride of 48 when
  the long side is >= 1024, else 32.
- "pyiqa": no resize, stride 32.

Windows are laid out row-major on the stride grid (margins that do not fit are dropped); with N windows, the
step is s = N // P and windows 0, s, ..., (P-1)s are used, P = min(num_patches, N). Only those windows are cut
out and normalised: the full window grid is never materialised (pyiqa's unfold copies 4 GB for a 4K image).

Deviations from the originals, for inputs they reject: an image with a side < 224 is upsampled (bilinear) so its
short side is 224, and an image with fewer than `num_patches` windows uses all of them; the output is padded to
`num_patches` windows and `patch_mask` marks the real ones, so any image batches with any other.

Bounded cost, whatever the aspect ratio: the upsampled image is never built. Each window is resampled (PIL
bilinear, `box=`) from the part of the original it covers, so a 40000x2 image (a 224 x 4,480,000 picture once
upsampled, 3 GB) costs 15 windows. Pixels equal those of a whole-image resize to within one 8-bit level. The
official downscale (short side to 768) never enlarges. Memory: the input array, one copy Pillow resamples from
(4 bytes per pixel) and the output (num_patches x 602 KB); with loading, ~14 bytes per input pixel at most
(README, "Limits"), a few MB for a thin image.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs


class LiqeImageProcessorKwargs(ImagesKwargs, total=False):
    protocol: str
    num_patches: int
    patch_size: int
    patch_sampling: str
    seed: int | None


def _check_finite(image: np.ndarray) -> None:
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError("LiqeImageProcessor: the image contains NaN or infinite pixel values")


def upsampled_size(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """(height, width) of an image whose short side is below `patch_size` once upsampled to it; else unchanged."""
    if min(height, width) >= patch_size:
        return height, width
    if height <= width:
        return patch_size, max(patch_size, round(width * patch_size / height))
    return max(patch_size, round(height * patch_size / width)), patch_size


def _resize_hw(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a (3, H, W) uint8 array with PIL bilinear (antialiased when shrinking), as torchvision does for PIL."""
    if image.dtype != np.uint8:
        raise ValueError("LiqeImageProcessor resizes uint8 images only; pass PIL images or uint8 arrays")
    pil = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    return np.asarray(pil.resize((width, height), Image.BILINEAR)).transpose(2, 0, 1)


def window_grid(height: int, width: int, patch_size: int, stride: int) -> tuple[int, int]:
    """Rows and columns of the window grid (margins that do not fit are dropped)."""
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


def select_windows(height: int, width: int, patch_size: int, stride: int, num_patches: int) -> list[tuple[int, int]]:
    """Top-left (y, x) of the evenly spaced windows LIQE scores, in the originals' order."""
    rows, cols = window_grid(height, width, patch_size, stride)
    total = rows * cols
    used = min(num_patches, total)
    step = max(1, total // used)
    return [((i * step) // cols * stride, (i * step) % cols * stride) for i in range(used)]


class LiqeImageProcessor(PilBackend):
    r"""
    Args:
        protocol (`str`, defaults to "official"): "official" (paper) or "pyiqa" patching, see the module docstring.
        num_patches (`int`, defaults to 15): windows per image.
        patch_size (`int`, defaults to 224): window side.
        patch_sampling (`str`, defaults to "grid"): "grid" (evaluation, deterministic) or "random" (training:
            `num_patches` windows drawn uniformly with replacement from the same grid, seeded by `seed`).
        seed (`int`, *optional*): seed of the random sampling.
    """

    valid_kwargs = LiqeImageProcessorKwargs
    model_input_names = ["pixel_values", "patch_mask"]
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    resample = PILImageResampling.BILINEAR
    do_resize = False  # resizing is part of the protocol, not a free option
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    protocol = "official"
    num_patches = 15
    patch_size = 224
    patch_sampling = "grid"
    seed = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._check(self.protocol, self.patch_sampling, self.num_patches, self.patch_size)

    @staticmethod
    def _check(protocol: str, patch_sampling: str, num_patches: int, patch_size: int) -> None:
        if protocol not in ("official", "pyiqa"):
            raise ValueError(f"LiqeImageProcessor: protocol must be 'official' or 'pyiqa', got {protocol!r}")
        if patch_sampling not in ("grid", "random"):
            raise ValueError(f"LiqeImageProcessor: patch_sampling must be 'grid' or 'random', got {patch_sampling!r}")
        if int(num_patches) < 1 or int(patch_size) < 1:
            raise ValueError("LiqeImageProcessor: num_patches and patch_size must be positive")

    def prepare_image(self, image: np.ndarray, protocol: str, patch_size: int) -> tuple[np.ndarray, int]:
        """Resize per protocol (official: short side to 768, a downscale); return the image and the stride.

        An image with a side < `patch_size` comes back as it is: its windows are upsampled one by one
        (`upsampled_size`, `_preprocess`); the stride is that of the upsampled size."""
        _, height, width = image.shape
        if protocol == "official" and min(height, width) >= 768:
            short, long = min(height, width), max(height, width)
            new_long = int(768 * long / short)
            height, width = (768, new_long) if height <= width else (new_long, 768)
            if (height, width) != image.shape[1:]:
                image = _resize_hw(image, height, width)
        height, width = upsampled_size(height, width, patch_size)
        stride = 48 if protocol == "official" and max(height, width) >= 1024 else 32
        return image, stride

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float] | tuple[float, ...],
        image_std: float | list[float] | tuple[float, ...],
        return_tensors=None,
        protocol: str | None = None,
        num_patches: int | None = None,
        patch_size: int | None = None,
        patch_sampling: str | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        self._check(protocol, patch_sampling, num_patches, patch_size)
        rng = np.random.default_rng(seed) if patch_sampling == "random" else None
        mean = np.asarray(image_mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(image_std, dtype=np.float32).reshape(3, 1, 1)
        pixel_values = np.zeros((len(images), num_patches, 3, patch_size, patch_size), dtype=np.float32)
        patch_mask = np.zeros((len(images), num_patches), dtype=np.int64)
        for index, image in enumerate(images):
            if image.shape[0] != 3:
                raise ValueError(f"LiqeImageProcessor expects RGB images, got {image.shape[0]} channels")
            _check_finite(image)
            image, stride = self.prepare_image(image, protocol, patch_size)
            source_height, source_width = image.shape[1:]
            height, width = upsampled_size(source_height, source_width, patch_size)
            if rng is None:
                corners = select_windows(height, width, patch_size, stride, num_patches)
            else:
                rows, cols = window_grid(height, width, patch_size, stride)
                picks = rng.integers(0, rows * cols, size=num_patches)
                corners = [(int(p) // cols * stride, int(p) % cols * stride) for p in picks]
            if (height, width) == (source_height, source_width):
                for slot, (y, x) in enumerate(corners):
                    pixel_values[index, slot] = image[:, y : y + patch_size, x : x + patch_size]
            else:
                warnings.warn(
                    f"LIQE: image of {source_width}x{source_height} is smaller than a {patch_size}px window; "
                    f"upsampled to {width}x{height} (the original implementations reject such images)",
                    stacklevel=2,
                )
                if image.dtype != np.uint8:
                    raise ValueError("LiqeImageProcessor resizes uint8 images only; pass PIL images or uint8 arrays")
                source = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
                scale_y, scale_x = source_height / height, source_width / width
                for slot, (y, x) in enumerate(corners):  # only the windows used are resampled, never the whole
                    box = (x * scale_x, y * scale_y, (x + patch_size) * scale_x, (y + patch_size) * scale_y)
                    window = source.resize((patch_size, patch_size), Image.BILINEAR, box=box)
                    pixel_values[index, slot] = np.asarray(window).transpose(2, 0, 1)
            patch_mask[index, : len(corners)] = 1
            windows = pixel_values[index, : len(corners)]  # in place, padding slots stay zero
            if do_rescale:  # divide like ToTensor does, so pixels match the originals bit for bit
                windows /= np.float32(1.0 / rescale_factor)
            if do_normalize:
                windows -= mean
                windows /= std
        return BatchFeature({"pixel_values": pixel_values, "patch_mask": patch_mask}, tensor_type=return_tensors)


__all__ = ["LiqeImageProcessor", "select_windows", "upsampled_size", "window_grid"]
