"""QualiCLIP self-supervised training (Agnolucci et al., arXiv 2403.11176): quality-aware image-text alignment
without any human opinion score.

    accelerate launch -m hf_iqa.training.qualiclip --config examples/training/qualiclip.yaml
    hf-iqa train qualiclip --config examples/training/qualiclip.yaml --image_dir /data/pristine

Data: any folder of good-quality photos (`image_dir`, searched recursively). Each image gives two random
overlapping crops, both degraded with the same synthetic distortion (`hf_iqa.degradations`, ARNIQA's 24
distortions in 7 groups) at `num_levels` increasing intensities (`hf_iqa.training.qualiclip_data.
DegradedCropPairs`). Only the image encoder trains; the text side is the model's stored prompt features, fixed.
For each selected antonym pair (default: "Good photo." / "Bad photo.") the loss ranks the crops' cosine
similarities: L_pos (similarity to the positive prompt decreases with the level), L_neg (to the negative prompt
increases), L_cons (the two equally degraded crops agree), margin ranking losses (`qualiclip_losses`).

Validation, optional: held-out pristine images (`validation_image_dir`) degraded the same way, SRCC between the
model's quality score and the (reversed) degradation level; or a MOS dataset (`validation_data`, a dataset mapping
of `hf_iqa.training.iqa_data`), SRCC/PLCC against MOS at native resolution.

Hyperparameters. The paper's (qualiclip.md §8.1): CLIP RN50 start, only the image encoder trained, two
overlapping crops per image, L increasing degradation levels of ARNIQA's distortion model, the three losses against
fixed antonym prompts. The released material does not give the rest (the training code is unreleased), so these
are ours, to confirm against the paper before quoting results: crop 224, L = 5, one distortion per image, crop
overlap >= 50 %, ranking margin 0.05, consistency margin 0, unit loss weights, means over level pairs (all i < j),
AdamW lr 1e-6 without weight decay, batch 16, cosine schedule, BatchNorm layers kept in eval mode (frozen
statistics; `freeze_batch_norm`), the first prompt pair only. The pristine set of the paper is KADIS-700k's
pristine images (unverified); any set of clean photos works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hf_iqa.training.common import ConfigError, TrainingConfig, TrainingTask, option, run_recipe
from hf_iqa.training.iqa_data import ProcessedImages, collate, epochs_to_steps, load_records, write_card
from hf_iqa.training.qualiclip_data import DegradedCropPairs
from hf_iqa.training.qualiclip_losses import QualiClipLossConfig, qualiclip_step_loss


@dataclass
class QualiClipTrainingConfig(TrainingConfig):
    """QualiCLIP self-supervised options (see the module docstring)."""

    model_name_or_path: str = option(
        "", help="start from an hf_iqa QualiCLIP folder (e.g. converted OpenAI RN50 CLIP, or QualiCLIP)"
    )
    model_config: dict | None = option(
        None, help="random init from these QualiClipConfig values instead (no model_name_or_path)"
    )
    image_dir: str = option("", help="pristine photos for self-supervised training, searched recursively")
    validation_image_dir: str | None = option(None, help="held-out pristine photos: level-ranking validation")
    validation_data: dict | None = option(None, help="or a MOS dataset mapping: validation against MOS")
    num_epochs: float | None = option(None, help="if set, max_steps covers this many passes over image_dir")
    crop_size: int = option(224, help="side of the two overlapping crops taken from each photo")
    num_levels: int = option(5, help="degradation intensity levels per crop")
    max_distortions: int = option(1, help="distortions combined on one image (at most)")
    min_overlap: float = option(0.5, help="minimum overlap (fraction) of the two crops")
    degradation_groups: list[str] | None = option(None, help="degradation groups to draw from; null: all seven")
    exif_transpose: bool = option(False, help="turn photos by their EXIF orientation tag (default: the stored "
                                  "pixels, as the released training code reads them)")  # fmt: skip
    prompt_pairs: list[int] = option(default_factory=lambda: [0], help="indices into the model's prompt pairs")
    margin: float = option(0.05, help="margin of the level-ranking losses")
    consistency_margin: float = option(0.0, help="margin of the consistency loss between the two crops")
    weight_pos: float = option(1.0, help="weight of the positive-prompt ranking loss")
    weight_neg: float = option(1.0, help="weight of the negative-prompt ranking loss")
    weight_cons: float = option(1.0, help="weight of the consistency loss")
    freeze_batch_norm: bool = option(True, help="keep the ResNet's BatchNorm statistics fixed")
    # ours (the paper's values are not released); TrainingConfig defaults overridden
    learning_rate: float = 1e-6
    lr_scheduler: str = "cosine"
    train_batch_size: int = 16
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.image_dir:
            raise ConfigError("image_dir: give a folder of pristine (good-quality) photos")
        if self.validation_image_dir and self.validation_data:
            raise ConfigError("give validation_image_dir or validation_data, not both")
        if not self.prompt_pairs:
            raise ConfigError("prompt_pairs: give at least one prompt pair index")


def build_model(config: QualiClipTrainingConfig):
    from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipModel

    if config.model_name_or_path:
        model = QualiClipModel.from_pretrained(config.model_name_or_path)
    elif config.model_config is not None:
        model = QualiClipModel(QualiClipConfig(**config.model_config))
    else:
        raise ConfigError("give model_name_or_path (an hf_iqa QualiCLIP folder) or model_config")
    pairs = len(model.config.prompt_pairs)
    if not all(0 <= p < pairs for p in config.prompt_pairs):
        raise ConfigError(f"prompt_pairs {config.prompt_pairs}: the model has {pairs} prompt pairs")
    model.requires_grad_(False)
    model.vision_model.requires_grad_(True)
    return model


def _image_paths(folder: str, what: str) -> list:
    from hf_iqa.io import find_images

    if not folder or not Path(folder).is_dir():
        raise ConfigError(f"{what}: {folder!r} is not a folder")
    images = find_images([folder])
    if not images:
        raise ConfigError(f"{what}: no images found in {folder}")
    return images


def level_predict(model, batch):
    """Quality scores of the first crop at every level, against the reversed level (higher = better)."""
    pixel_values = batch["pixel_values"][:, 0]  # (B, L, 3, S, S)
    batch_size, levels = pixel_values.shape[:2]
    scores = model(pixel_values=pixel_values.flatten(0, 1)).scores
    target = torch.arange(levels, 0, -1, dtype=torch.float32, device=scores.device).repeat(batch_size)
    return scores, target


def degraded_sequences(
    images: Sequence, crop_size: int, names: Sequence[str] | None = None, seed: int = 0, mean=None, std=None
) -> tuple[torch.Tensor, list[str]]:
    """A level-ranking test set: the centre `crop_size` crop of each image degraded by each distortion in `names`
    (default: all 24) at levels 1..5 with fixed random choices. Returns normalised pixels (N, 5, 3, S, S) and
    the distortion group of each of the N sequences."""
    from hf_iqa import degradations
    from hf_iqa.io import load_image
    from hf_iqa.openai_clip import CLIP_MEAN, CLIP_STD
    from hf_iqa.training.iqa_data import fit_short_side, normalize

    names = list(names or degradations.list_degradations())
    levels = range(1, degradations.NUM_LEVELS + 1)
    sequences, groups = [], []
    for number, image in enumerate(images):
        image = fit_short_side(load_image(image), crop_size)
        left, top = (image.width - crop_size) // 2, (image.height - crop_size) // 2
        crop = image.crop((left, top, left + crop_size, top + crop_size))
        for name in names:
            degraded = degradations.degrade_at_levels(crop, [name], levels, seed=seed + number)
            sequences.append(torch.stack([normalize(d, mean or CLIP_MEAN, std or CLIP_STD) for d in degraded]))
            groups.append(degradations.DEGRADATIONS[name].group)
    return torch.stack(sequences), groups


@torch.no_grad()
def level_ranking(model, pixel_values: torch.Tensor, groups: Sequence[str], batch_size: int = 128) -> dict[str, float]:
    """How well `model` orders degradation levels (`degraded_sequences`): the Spearman correlation between each
    sequence's scores and the reversed level, averaged over all sequences (`srcc`) and per group (`srcc_<group>`).
    A sequence with constant scores counts as 0."""
    from scipy.stats import spearmanr

    was_training = model.training
    model.eval()
    flat = pixel_values.flatten(0, 1)
    scores = torch.cat([model(pixel_values=chunk).scores.float().cpu() for chunk in flat.split(batch_size)])
    model.train(was_training)
    scores = scores.reshape(pixel_values.shape[:2]).numpy()
    reversed_levels = -np.arange(pixel_values.shape[1])
    per_group: dict[str, list[float]] = {}
    for row, group in zip(scores, groups):
        value = 0.0 if np.ptp(row) == 0 else float(spearmanr(row, reversed_levels).statistic)
        per_group.setdefault(group, []).append(value)
    result = {"srcc": float(np.mean([v for values in per_group.values() for v in values]))}
    return result | {f"srcc_{group}": float(np.mean(values)) for group, values in per_group.items()}


def build_task(config: QualiClipTrainingConfig, accelerator) -> TrainingTask:
    from transformers import AutoImageProcessor

    from hf_iqa.models.qualiclip import QualiClipImageProcessor

    model = build_model(config)
    processor = None
    if config.model_name_or_path:
        try:
            processor = AutoImageProcessor.from_pretrained(config.model_name_or_path)
        except OSError:
            processor = None
    if not isinstance(processor, QualiClipImageProcessor):
        processor = QualiClipImageProcessor()
    crops = dict(
        crop_size=config.crop_size,
        num_levels=config.num_levels,
        max_distortions=config.max_distortions,
        min_overlap=config.min_overlap,
        groups=config.degradation_groups,
        exif_transpose=config.exif_transpose,
        mean=processor.image_mean,
        std=processor.image_std,
    )
    images = _image_paths(config.image_dir, "image_dir")
    train_dataset = DegradedCropPairs(images, seed=config.seed, **crops)
    eval_dataset, predict = None, None
    if config.validation_image_dir:
        held_out = _image_paths(config.validation_image_dir, "validation_image_dir")
        eval_dataset, predict = DegradedCropPairs(held_out, seed=config.seed + 1, **crops), level_predict
    elif config.validation_data:
        eval_dataset = ProcessedImages(
            load_records(config.validation_data, "validation", "validation_data"), processor
        )

        def predict(model, batch):
            return model(pixel_values=batch["pixel_values"]).scores, batch["mos"]

    if config.num_epochs is not None:
        config.max_steps = epochs_to_steps(config.num_epochs, len(images), config, accelerator.num_processes)
    loss_config = QualiClipLossConfig(
        config.margin, config.consistency_margin, config.weight_pos, config.weight_neg, config.weight_cons
    )
    unwrap = accelerator.unwrap_model

    def compute_loss(model, batch):
        raw = unwrap(model)
        if config.freeze_batch_norm:
            for module in raw.vision_model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.eval()
        pixel_values = batch["pixel_values"]
        embeds = model(pixel_values=pixel_values.flatten(0, 2)).image_embeds
        per_pair = [
            qualiclip_step_loss(
                embeds, raw.prompt_text_features[2 * p : 2 * p + 2], tuple(pixel_values.shape[:3]), loss_config
            )
            for p in config.prompt_pairs
        ]
        losses = {key: torch.stack([losses[key] for losses in per_pair]).mean() for key in per_pair[0]}
        return losses.pop("loss"), losses

    def save_extra(directory: str) -> None:
        pairs = [model.config.prompt_pairs[p] for p in config.prompt_pairs]
        notes = (
            "QualiCLIP (Agnolucci et al., arXiv 2403.11176): the image encoder trained without opinion scores to rank "
            f"synthetically degraded crops of pristine photos against the antonym prompts {pairs}. Scores are in "
            "[0, 1]. Hyperparameters the paper does not give are hf_iqa's choices (see the training options)."
        )
        write_card(directory, "qualiclip", "QualiCLIP (self-supervised, trained with hf_iqa)", config, notes)

    return TrainingTask(
        model=model,
        train_dataset=train_dataset,
        collate_fn=collate,
        compute_loss=compute_loss,
        eval_dataset=eval_dataset,
        predict=predict,
        image_processor=processor,
        save_extra=save_extra,
    )


def main(argv: list[str] | None = None, prog: str = "accelerate launch -m hf_iqa.training.qualiclip") -> int:
    return run_recipe(QualiClipTrainingConfig, build_task, argv, prog=prog, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
