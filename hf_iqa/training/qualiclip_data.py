"""QualiCLIP's self-supervised training data (Agnolucci et al., arXiv 2403.11176): pairs of overlapping crops of
pristine images, both degraded with the same synthetic distortion at L increasing levels (ARNIQA's degradation
model). The losses on them are in `qualiclip_losses.py`.

Ours where the released material is silent (the training code was not published; see `qualiclip_losses.py`): the
overlap rule (each axis overlaps by at least sqrt(min_overlap) of the crop side, so the area overlap is >=
`min_overlap`, default 0.5), images smaller than the crop upscaled (bicubic) so their short side equals the crop
size, one distortion per image (`max_distortions=1`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_iqa import degradations
from hf_iqa.io import load_image
from hf_iqa.openai_clip import CLIP_MEAN, CLIP_STD  # the QualiCLIP image tower is CLIP RN50
from hf_iqa.training.common import SeededDataset

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL crop convention)


def overlapping_crop_boxes(
    width: int, height: int, crop_size: int, rng: np.random.Generator, min_overlap: float = 0.5
) -> tuple[Box, Box]:
    """Two `crop_size` squares inside a width x height image whose intersection covers at least `min_overlap` of a
    crop: the first is uniform, the second is displaced by at most (1 - sqrt(min_overlap))·crop_size per axis."""
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    if width < crop_size or height < crop_size:
        raise ValueError(f"image {width}x{height} is smaller than the crop size {crop_size}")
    left, top = int(rng.integers(0, width - crop_size + 1)), int(rng.integers(0, height - crop_size + 1))
    reach = int((1 - math.sqrt(min_overlap)) * crop_size)
    left2 = int(np.clip(left + rng.integers(-reach, reach + 1), 0, width - crop_size))
    top2 = int(np.clip(top + rng.integers(-reach, reach + 1), 0, height - crop_size))
    return (left, top, left + crop_size, top + crop_size), (left2, top2, left2 + crop_size, top2 + crop_size)


def _fit_short_side(image: Image.Image, size: int) -> Image.Image:
    short = min(image.size)
    if short >= size:
        return image
    scale = size / short
    return image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BICUBIC)


def to_normalized_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    array = (np.asarray(image, dtype=np.float32) / 255 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class DegradedCropPairs(SeededDataset):
    """Pristine images -> `pixel_values` of shape (2 crops, L levels, 3, crop, crop), level 1 (mildest) first,
    normalised with `mean`/`std`, and `degradations`: the indices (into `degradations.list_degradations()`) of the
    distortions applied, padded with -1 to `max_distortions`. `groups` restricts the distortion families (default:
    all seven). Both crops get the same distortions with the same
    random choices (angles, noise seeds) at every level, so only content and intensity vary where they should.
    Deterministic per (seed, epoch, index). Photos are read as stored (`exif_transpose=True`: turned by their EXIF
    orientation tag), as the released training code reads them."""

    def __init__(
        self,
        images: Sequence[str | Path | Image.Image],
        crop_size: int = 224,
        num_levels: int = degradations.NUM_LEVELS,
        max_distortions: int = 1,
        min_overlap: float = 0.5,
        groups: Sequence[str] | None = None,
        seed: int = 0,
        exif_transpose: bool = False,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ):
        super().__init__(seed)
        if not images:
            raise ValueError("DegradedCropPairs needs at least one pristine image")
        if not 1 <= num_levels <= degradations.NUM_LEVELS:
            raise ValueError(f"num_levels must be in 1..{degradations.NUM_LEVELS}, got {num_levels}")
        self.images = list(images)
        self.crop_size, self.num_levels, self.max_distortions = crop_size, num_levels, max_distortions
        self.min_overlap, self.mean, self.std = min_overlap, tuple(mean), tuple(std)
        self.groups = list(groups) if groups is not None else None
        self.exif_transpose = exif_transpose
        degradations.sample_degradations(np.random.default_rng(0), max_distortions, self.groups)  # validate early
        self.names = degradations.list_degradations()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng(index)
        image = _fit_short_side(load_image(self.images[index], exif_transpose=self.exif_transpose), self.crop_size)
        boxes = overlapping_crop_boxes(image.width, image.height, self.crop_size, rng, self.min_overlap)
        names = degradations.sample_degradations(rng, self.max_distortions, self.groups)
        degradation_seed = int(rng.integers(2**31))
        levels = range(1, self.num_levels + 1)
        crops = []
        for box in boxes:
            degraded = degradations.degrade_at_levels(image.crop(box), names, levels, seed=degradation_seed)
            crops.append(torch.stack([to_normalized_tensor(d, self.mean, self.std) for d in degraded]))
        applied = [self.names.index(n) for n in names] + [-1] * (self.max_distortions - len(names))
        return {"pixel_values": torch.stack(crops), "degradations": torch.tensor(applied)}
