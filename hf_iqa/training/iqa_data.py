"""Labelled images for the supervised recipes (LIQE, UniQA adapters, QualiCLIP+ prompts), and their model cards.

A recipe names its data with one mapping per dataset (YAML), either a benchmark read by `hf_iqa.data`:

    {name: koniq, benchmark: koniq10k, data_root: /data/koniq10k, options: {resolution: 512x384}}

(`benchmark: folder` reads your own images with a CSV of scores; `options` go to `hf_iqa.data.load_benchmark`,
e.g. `split_scheme: liqe, split_dir: .../IQA_Database, split_index: 1` for LIQE's splits with their distortion
and scene labels), or files in LIQE's split format, one image per line, tab-separated:

    path  score  [distortion  scene1  scene2  scene3]      e.g. koniq/1024x768/826373.jpg  3.12  other realistic  ...

    {name: koniq, train_file: splits2/1/koniq_train_clip.txt, validation_file: ..., image_root: /data}

where `distortion` is one of LIQE's 33 fine-grained names (mapped to its 11 prompt classes) and the scenes are
LIQE scene words or `invalid` for an empty slot. Scores become `mos` in [0, 1], higher = better: the benchmark's
own range and direction, or `mos_range` / `higher_is_better` from the mapping (default: the file's min/max, higher
is better). Images are read as the dataset's official evaluation reads them (`hf_iqa.data` metadata: the stored
pixels for every named benchmark and for LIQE's split files, turned by their EXIF orientation for a `folder`);
`exif_transpose: true/false` in the mapping decides otherwise.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hf_iqa.io import load_image
from hf_iqa.labels import (  # noqa: F401  (re-exported)
    LIQE_DISTORTIONS,
    LIQE_FINE_TO_COARSE,
    LIQE_SCENES,
    decode_liqe_distortion,
    decode_liqe_scenes,
)
from hf_iqa.training.common import ConfigError, SeededDataset

SPEC_KEYS = {
    "name", "benchmark", "data_root", "options", "train_file", "validation_file", "image_root", "mos_range",
    "higher_is_better", "batch_size", "validation_split", "exif_transpose",
}  # fmt: skip


@dataclass(frozen=True)
class ImageRecord:
    path: str
    mos: float  # in [0, 1], higher = better
    distortion: int = -1  # index into LIQE_DISTORTIONS, -1 = unlabelled
    scenes: tuple[int, ...] | None = None  # multi-hot over LIQE_SCENES, None = unlabelled
    exif_transpose: bool = False  # turn the image by its EXIF orientation tag (False: the stored pixels)

    def image(self) -> Image.Image:
        """The RGB image, through the one gate (`hf_iqa.io.load_image`), oriented as the record says."""
        return load_image(self.path, exif_transpose=self.exif_transpose)


# ----------------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------------


def _normalise(values: Sequence[float], mos_range: Sequence[float] | None, higher_is_better: bool) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if mos_range is None else map(float, mos_range)
    unit = (values - low) / (high - low) if high > low else np.full_like(values, 0.5)
    return (unit if higher_is_better else 1.0 - unit).tolist()


def read_liqe_split_file(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    mos_range: Sequence[float] | None = None,
    higher_is_better: bool = True,
    exif_transpose: bool = False,
) -> list[ImageRecord]:
    """Records from a LIQE split file (`path \\t score [\\t distortion \\t scene1 \\t scene2 \\t scene3]`). Image
    paths are relative to `image_root` (default: the file's folder) unless absolute; images are read as stored
    unless `exif_transpose` (LIQE's training code does not turn them)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: split file not found")
    root = Path(image_root).expanduser() if image_root else path.parent
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        where = f"{path} line {number}"
        if len(fields) < 2:
            raise ConfigError(f"{where}: expected tab-separated `path score [distortion scene1 scene2 scene3]`")
        try:
            score = float(fields[1])
        except ValueError:
            raise ConfigError(f"{where}: score {fields[1]!r} is not a number") from None
        try:  # both label columns are optional here (a plain `path score` file trains the quality head only)
            distortion = decode_liqe_distortion(fields[2]) if len(fields) > 2 and fields[2] else -1
            scenes = decode_liqe_scenes(fields[3:6]) if len(fields) > 3 else None
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
        scenes = scenes if scenes and any(scenes) else None
        image = Path(fields[0]) if Path(fields[0]).is_absolute() else root / fields[0]
        rows.append((str(image), score, distortion, scenes))
    if not rows:
        raise ConfigError(f"{path}: no images listed")
    mos = _normalise([r[1] for r in rows], mos_range, higher_is_better)
    return [ImageRecord(p, m, d, s, exif_transpose) for (p, _, d, s), m in zip(rows, mos)]


def _benchmark_records(spec: dict[str, Any], split: str, where: str) -> list[ImageRecord]:
    try:
        from datasets import Image as ImageFeature

        from hf_iqa.data import dataset_metadata, load_benchmark
    except ImportError as error:
        raise ConfigError(f"{where}: `benchmark` needs hf_iqa.data and `datasets` ({error})") from None
    if "data_root" not in spec:
        raise ConfigError(f"{where}: `benchmark` needs `data_root` (the dataset's folder)")
    options = dict(spec.get("options") or {})
    dataset = load_benchmark(spec["benchmark"], spec["data_root"], split=split, **options)
    meta = dataset_metadata(dataset)
    mos_range = spec.get("mos_range", meta.get("mos_range"))
    higher = bool(spec.get("higher_is_better", meta.get("higher_is_better", True)))
    turn = bool(spec.get("exif_transpose", meta.get("exif_transpose", meta.get("key") == "folder")))
    paths = [item["path"] for item in dataset.cast_column("image", ImageFeature(decode=False))["image"]]
    mos = _normalise(dataset["mos"], mos_range, higher)
    columns = dataset.column_names
    distortions = dataset["distortion_label"] if "distortion_label" in columns else [-1] * len(paths)
    scenes = dataset["scene_labels"] if "scene_labels" in columns else [None] * len(paths)
    return [
        ImageRecord(p, m, int(d), tuple(int(v) for v in s) if s is not None and any(s) else None, turn)
        for p, m, d, s in zip(paths, mos, distortions, scenes)
    ]


def load_records(spec: dict[str, Any], split: str, where: str = "datasets") -> list[ImageRecord]:
    """The `split` ("train" or "validation") of one dataset mapping (see the module docstring)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: each dataset must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(SPEC_KEYS)}")
    if "benchmark" in spec:
        if split == "validation":
            split = spec.get("validation_split", "validation")
        return _benchmark_records(spec, split, where)
    key = f"{split}_file"
    if key not in spec:
        raise ConfigError(f"{where}: give `benchmark` + `data_root`, or `train_file` (and `validation_file`)")
    return read_liqe_split_file(
        spec[key], spec.get("image_root"), spec.get("mos_range"), spec.get("higher_is_better", True),
        bool(spec.get("exif_transpose", False)),
    )  # fmt: skip


def has_validation(spec: dict[str, Any]) -> bool:
    return "benchmark" in spec or "validation_file" in spec


# ----------------------------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------------------------


def fit_short_side(image: Image.Image, size: int) -> Image.Image:
    """Upscale (bicubic) an image whose short side is below `size` so that it equals `size`."""
    if min(image.size) >= size:
        return image
    scale = size / min(image.size)
    return image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BICUBIC)


def normalize(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(3, H, W) float tensor: pixels / 255 (as ToTensor), then (x - mean) / std."""
    array = np.asarray(image, dtype=np.float32) / np.float32(255)
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class RandomCropImages(SeededDataset):
    """Training images: a random `crop_size` square and a horizontal flip with probability 1/2 (pyiqa's
    `random_crop` + `hflip`), normalised; drawn from `self.rng(index)` so a resume replays them exactly.
    `resize_short_side` first resizes the short side (pyiqa's SPAQ recipe)."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        crop_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
        resize_short_side: int | None = None,
    ):
        super().__init__(seed)
        self.records, self.crop_size, self.mean, self.std = list(records), crop_size, mean, std
        self.resize_short_side = resize_short_side

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record, rng = self.records[index], self.rng(index)
        image = record.image()
        if self.resize_short_side:
            scale = self.resize_short_side / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        image = fit_short_side(image, self.crop_size)
        left = int(rng.integers(0, image.width - self.crop_size + 1))
        top = int(rng.integers(0, image.height - self.crop_size + 1))
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return {"pixel_values": normalize(image, self.mean, self.std), "mos": torch.tensor(record.mos)}


class ProcessedImages(Dataset):
    """Validation images through the model's own image processor (the inference preprocessing). With `group`,
    every item carries it as "group" (e.g. the dataset's index, for per-dataset validation metrics)."""

    def __init__(self, records: Sequence[ImageRecord], processor: Callable, group: int | None = None):
        self.records, self.processor, self.group = list(records), processor, group

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        inputs = self.processor(images=record.image(), return_tensors="pt")
        item = {key: (value[0] if isinstance(value, (list, torch.Tensor)) else value) for key, value in inputs.items()}
        item["mos"] = torch.tensor(record.mos)
        if self.group is not None:
            item["group"] = torch.tensor(self.group)
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-shape tensors; keep tensors of different shapes (native-resolution images) as a list."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


# ----------------------------------------------------------------------------------------------------------------
# losses and small helpers shared by the recipes
# ----------------------------------------------------------------------------------------------------------------


def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1 - Pearson r) / 2 in [0, 1] (pyiqa's `PLCCLoss`); L1 for a batch of one, where r is undefined."""
    pred, target = pred.reshape(-1).float(), target.reshape(-1).float()
    if pred.numel() < 2:
        return (pred - target).abs().mean()
    r = (
        torch.nn.functional.normalize(pred - pred.mean(), dim=0)
        * torch.nn.functional.normalize(target - target.mean(), dim=0)
    ).sum()
    return (1 - r) / 2


def epochs_to_steps(num_epochs: float, num_items: int, config: Any, num_processes: int) -> int:
    """Optimizer steps of `num_epochs` passes over `num_items` (batches are dropped when incomplete)."""
    batches = num_items // (config.train_batch_size * num_processes)
    if batches == 0:
        raise ConfigError(f"train_batch_size={config.train_batch_size} is larger than the training set ({num_items})")
    return max(1, math.ceil(num_epochs * batches / config.gradient_accumulation_steps))


def write_card(directory: str | os.PathLike, method: str, title: str, config: Any, notes: str) -> None:
    """A short model card (README.md) for a trained folder: front matter, what was trained how, the options."""
    from dataclasses import asdict

    options = json.dumps(asdict(config), indent=2, default=str)
    text = f"""---
library_name: transformers
tags:
- image-quality-assessment
- iqa
- hf-iqa
- {method}
metrics:
- spearmanr
- pearsonr
---

# {title}

Trained with `hf_iqa.training` ({method} recipe). Load it with `AutoModel.from_pretrained(folder)` (the model code is
in the folder: `trust_remote_code=True` works without hf_iqa) or score images with
`hf_iqa.pipeline("image-quality", model=folder)`; higher scores mean better quality (see `score_range` in
`config.json`).

{notes.strip()}

## Training options

```json
{options}
```
"""
    Path(directory, "README.md").write_text(text, encoding="utf-8")
