"""Assigning rows to train/validation/test: the owners' official split, seeded random splits disjoint by reference
image, published split files (LIQE's ten splits) or a user's JSON/CSV file of image ids."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .info import SPLIT_ALIASES, SPLIT_NAMES, BenchmarkInfo, DatasetLayoutError

# ---------------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------------


def _random_splits(rows: list[dict], seed: int, split_index: int, ratios: Sequence[float]) -> dict[str, list[dict]]:
    """Seeded random split by group (reference-disjoint for FR datasets); ratios are fractions of groups. The test
    part gets at least one group, then validation its share, and train the rest."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(
            f"ratios must be three non-negative fractions (train, validation, test) summing to 1, got {ratios}"
        )
    groups = sorted({row["_group"] for row in rows})
    order = [groups[i] for i in np.random.default_rng([seed, split_index]).permutation(len(groups))]
    num_test = max(1, round(ratios[2] * len(groups))) if ratios[2] > 0 else 0
    num_validation = min(round(ratios[1] * len(groups)), len(groups) - num_test - 1) if ratios[1] > 0 else 0
    assignment = dict.fromkeys(order, "train")
    assignment.update(dict.fromkeys(order[:num_test], "test"))
    assignment.update(dict.fromkeys(order[num_test : num_test + max(num_validation, 0)], "validation"))
    splits: dict[str, list[dict]] = {name: [] for name in SPLIT_NAMES}
    for row in rows:
        splits[assignment[row["_group"]]].append(row)
    return {name: part for name, part in splits.items() if part}


def _split_file_folder(info: BenchmarkInfo, split_dir: str | os.PathLike | None, split_index: int) -> Path:
    files = info.split_files
    if split_dir is None:
        raise ValueError(f"split_scheme={files.scheme!r} needs split_dir: {files.split_dir_help}")
    base = Path(split_dir).expanduser()
    candidates = [base / location if location else base for location in files.locations]
    names = [name for _, name in files.file_names]
    for candidate in candidates:
        if (candidate / str(split_index) / names[-1]).is_file():
            return candidate / str(split_index)
    raise DatasetLayoutError(
        f"{info.name}: {files.source} split {split_index} not found: expected {split_index}/{{{','.join(names)}}} "
        f"under one of {[str(c) for c in candidates]}"
    )


def _read_split_file(info: BenchmarkInfo, path: Path, by_key: dict[str, dict]) -> list[dict]:
    """The rows a split file names, each with the columns its label fields decode to."""
    files = info.split_files
    if not path.is_file():
        raise DatasetLayoutError(f"{info.name}: {files.source} split file {path} is missing")
    num_fields = 2 + len(files.labels.names)
    selected = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < num_fields:
            raise DatasetLayoutError(
                f"{info.name}: {path} line {line_number} is malformed: expected {num_fields} tab-separated fields "
                f"(path, score, {', '.join(files.labels.names)}), got {len(fields)}"
            )
        row = by_key.get(fields[0].strip().lower())
        if row is None:
            raise DatasetLayoutError(
                f"{info.name}: {path} line {line_number} names {fields[0]!r}, which is not an image of the loaded "
                "dataset (wrong dataset root, resolution or image subset?)"
            )
        try:
            selected.append(row | files.labels.decode(fields[2:num_fields]))
        except ValueError as error:
            raise DatasetLayoutError(f"{info.name}: {path} line {line_number}: {error}") from None
    return selected


def _published_splits(info: BenchmarkInfo, rows: list[dict], split_dir, split_index: int) -> dict[str, list[dict]]:
    """The splits of `info.split_files` (see `SplitFiles` for the format)."""
    folder = _split_file_folder(info, split_dir, split_index)
    by_key = {row.get("_split_file_key", row["_path"]).lower(): row for row in rows}
    return {
        name: _read_split_file(info, folder / file_name, by_key) for name, file_name in info.split_files.file_names
    }


def _file_splits(info: BenchmarkInfo, rows: list[dict], split_file: str | os.PathLike) -> dict[str, list[dict]]:
    """A user split file: JSON `{"train": [ids or relative paths], "validation": [...], "test": [...]}` or CSV with
    columns `image_id` (or `image`) and `split`."""
    path = Path(split_file).expanduser()
    if not path.is_file():
        raise DatasetLayoutError(f"{info.name}: split file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DatasetLayoutError(f"{info.name}: split file {path} is not valid JSON ({error})") from None
        if not isinstance(content, dict) or not all(isinstance(v, list) for v in content.values()):
            raise DatasetLayoutError(f"{info.name}: split file {path} must map split names to lists of image ids")
        membership = {str(item): split for split, items in content.items() for item in items}
    else:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {f.strip().lower(): f for f in reader.fieldnames or []}
            key = fields.get("image_id") or fields.get("image")
            if key is None or "split" not in fields:
                raise DatasetLayoutError(
                    f"{info.name}: split file {path} needs columns image_id (or image) and split, found {reader.fieldnames}"
                )
            membership = {r[key].strip(): r[fields["split"]].strip() for r in reader}
    splits: dict[str, list[dict]] = {}
    for row in rows:
        split = membership.get(row["image_id"], membership.get(row["_path"]))
        if split is None:
            continue
        if split.lower() not in SPLIT_ALIASES:
            raise DatasetLayoutError(f"{info.name}: split file {path}: unknown split name {split!r}")
        splits.setdefault(SPLIT_ALIASES[split.lower()], []).append(row)
    if not splits:
        raise DatasetLayoutError(f"{info.name}: no image of the dataset is listed in split file {path}")
    return splits


def assign_splits(
    info: BenchmarkInfo,
    rows: list[dict],
    split_scheme: str | None = None,
    split_index: int = 1,
    split_dir: str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    seed: int = 123,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
) -> dict[str, list[dict]]:
    """Rows per split name under one of `info.split_schemes`:

    * ``official`` (default when the owners publish one): KonIQ's `set` column, AVA's image lists, ...
    * ``random`` (default otherwise): seeded split of `ratios` (train, validation, test), disjoint by reference image
      for FR datasets; `split_index` picks one of several random splits (1..10 as in the papers).
    * ``liqe`` (or another `info.split_files.scheme`): published split files (`SplitFiles`), e.g. LIQE's 10 splits
      (`split_dir` = LIQE's `IQA_Database` or the dataset's `splits2` folder), adding their label columns
      (`liqe_distortion`, `distortion_label` (11 classes) and `scene_labels` (multi-hot, 9 scenes) for LIQE's).
    * ``file``: `split_file`, a JSON or CSV listing image ids per split (e.g. a paper's published split).
    """
    scheme = split_scheme or ("official" if info.official_split else "random")
    if scheme not in info.split_schemes:
        raise ValueError(f"{info.name} supports split_scheme in {info.split_schemes}, not {scheme!r}")
    if scheme == "official":
        splits: dict[str, list[dict]] = {}
        for row in rows:
            if row.get("_split") is not None:
                splits.setdefault(row["_split"], []).append(row)
        if not splits:
            raise info.error("no row carries an official split")
        return {name: splits[name] for name in SPLIT_NAMES if name in splits}
    if scheme == "random":
        return _random_splits(rows, seed, split_index, ratios)
    if info.split_files and scheme == info.split_files.scheme:
        return _published_splits(info, rows, split_dir, split_index)
    if split_file is None:
        raise ValueError("split_scheme='file' needs split_file (JSON or CSV of image ids per split)")
    return _file_splits(info, rows, split_file)
