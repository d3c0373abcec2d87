"""The model-agnostic parts of QualiCLIP's self-supervised training (Agnolucci et al., arXiv 2403.11176): pairs of
overlapping crops of pristine images degraded at L increasing levels, and the three margin ranking losses on the
cosine similarities between their image features and the fixed antonym prompt features ("Good photo." /
"Bad photo.").

Known from the paper and its repository (qualiclip.md §8.1): two random overlapping crops per pristine image, both
degraded with the same synthetic distortion at L increasing levels (ARNIQA's degradation model), only the image
encoder trained, `L_pos` (similarity to the positive prompt decreases with the level), `L_neg` (similarity to the
negative prompt increases with the level), `L_cons` (equally degraded crops have equal similarities).

Ours where the released material is silent (the training code was not published; confirm against the paper before
quoting numbers): all-pairs (i < j) ranking instead of only adjacent levels, the margin defaults (0.05 ranking,
0.0 consistency), equal loss weights, means instead of sums, the overlap rule (each axis overlaps by at least
sqrt(min_overlap) of the crop side, so the area overlap is >= `min_overlap`, default 0.5), images smaller than the
crop upscaled (bicubic) so their short side equals the crop size, one distortion per image (`max_distortions=1`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
    Deterministic per (seed, epoch, index)."""

    def __init__(
        self,
        images: Sequence[str | Path | Image.Image],
        crop_size: int = 224,
        num_levels: int = degradations.NUM_LEVELS,
        max_distortions: int = 1,
        min_overlap: float = 0.5,
        groups: Sequence[str] | None = None,
        seed: int = 0,
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
        degradations.sample_degradations(np.random.default_rng(0), max_distortions, self.groups)  # validate early
        self.names = degradations.list_degradations()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng(index)
        image = _fit_short_side(load_image(self.images[index]), self.crop_size)
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


def prompt_similarities(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarities (N, P) between N image features and P prompt features (both (·, D))."""
    image_features = torch.nn.functional.normalize(image_features.float(), dim=-1)
    text_features = torch.nn.functional.normalize(text_features.float(), dim=-1)
    return image_features @ text_features.t()


@dataclass
class QualiClipLossConfig:
    """Margins and weights of the three losses; all values are ours (see the module docstring)."""

    margin: float = 0.05
    consistency_margin: float = 0.0
    weight_pos: float = 1.0
    weight_neg: float = 1.0
    weight_cons: float = 1.0


def _pairwise_order_violation(similarity: torch.Tensor, margin: float) -> torch.Tensor:
    """mean over i < j (levels) of max(0, s_j - s_i + margin): zero when s decreases by >= margin per level pair."""
    num_levels = similarity.shape[-1]
    i, j = torch.triu_indices(num_levels, num_levels, offset=1, device=similarity.device)
    return torch.relu(similarity[..., j] - similarity[..., i] + margin).mean()


def qualiclip_losses(
    sim_pos: torch.Tensor, sim_neg: torch.Tensor, config: QualiClipLossConfig | None = None
) -> dict[str, torch.Tensor]:
    """The ranking and consistency losses on similarities of shape (B, 2 crops, L levels), level 1 first.

    l_pos = mean_{i<j} max(0, s⁺_j - s⁺_i + m)        (less degraded -> closer to the positive prompt)
    l_neg = mean_{i<j} max(0, s⁻_i - s⁻_j + m)        (more degraded -> closer to the negative prompt)
    l_cons = mean max(0, |s_crop1 - s_crop2| - m_cons)  over levels and both prompts
    loss = w_pos·l_pos + w_neg·l_neg + w_cons·l_cons
    """
    config = config or QualiClipLossConfig()
    if sim_pos.shape != sim_neg.shape or sim_pos.ndim != 3 or sim_pos.shape[1] != 2:
        raise ValueError(
            f"similarities must both have shape (batch, 2 crops, levels), got {tuple(sim_pos.shape)} and {tuple(sim_neg.shape)}"
        )
    if sim_pos.shape[-1] < 2:
        raise ValueError("the ranking losses need at least 2 degradation levels")
    l_pos = _pairwise_order_violation(sim_pos, config.margin)
    l_neg = _pairwise_order_violation(-sim_neg, config.margin)
    gaps = torch.cat([(sim_pos[:, 0] - sim_pos[:, 1]).abs(), (sim_neg[:, 0] - sim_neg[:, 1]).abs()])
    l_cons = torch.relu(gaps - config.consistency_margin).mean()
    loss = config.weight_pos * l_pos + config.weight_neg * l_neg + config.weight_cons * l_cons
    return {"loss": loss, "l_pos": l_pos, "l_neg": l_neg, "l_cons": l_cons}


def qualiclip_step_loss(
    image_features: torch.Tensor,
    prompt_features: torch.Tensor,
    batch_shape: tuple[int, int, int],
    config: QualiClipLossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """From image features of the flattened (B·2·L, D) crops and the (2, D) [positive, negative] prompt features to
    the losses; `batch_shape` = (B, 2, L) as in `DegradedCropPairs`' pixel_values."""
    if prompt_features.shape[0] != 2:
        raise ValueError(f"prompt_features must hold [positive, negative], got shape {tuple(prompt_features.shape)}")
    similarities = prompt_similarities(image_features, prompt_features).reshape(*batch_shape, 2)
    return qualiclip_losses(similarities[..., 0], similarities[..., 1], config)
