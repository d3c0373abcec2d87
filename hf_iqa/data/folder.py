"""Your own images + a CSV or JSON file of scores, loaded like the benchmarks (typed features, splits, metadata)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value

from .common import SPLIT_ALIASES, BenchmarkInfo, DatasetLayoutError, build, require_root, to_float

SCORE_FILES = ("scores.csv", "metadata.csv", "labels.csv", "mos.csv", "scores.json", "metadata.jsonl", "scores.jsonl")
IMAGE_COLUMNS = ("image", "file_name", "filename", "image_name", "img_name", "name", "path", "image_path")
MOS_COLUMNS = ("mos", "score", "dmos", "quality", "label", "rating")
STD_COLUMNS = ("mos_std", "std", "sd", "std_dev")
SPLIT_COLUMNS = ("split", "set")


def _read_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv" or suffix == ".tsv":
            with open(path, newline="", encoding="utf-8-sig") as handle:
                return [dict(r) for r in csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")]
        if suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if suffix == ".json":
            content = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(content, dict):  # {"a.jpg": 3.2, ...}
                return [{"image": name, "mos": score} for name, score in content.items()]
            if isinstance(content, list):
                return content
            raise DatasetLayoutError(f"{path}: expected a list of objects or a {{image: score}} object")
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as error:
        raise DatasetLayoutError(f"{path} is malformed ({type(error).__name__}: {error})") from None
    raise DatasetLayoutError(f"{path}: unsupported score file type {suffix!r}; use .csv, .tsv, .json or .jsonl")


def _pick(columns: list[str], given: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str | None:
    if given is not None:
        if given not in columns:
            raise DatasetLayoutError(f"{path} has no column {given!r} for the {what} (columns: {columns})")
        return given
    lowered = {c.lower(): c for c in columns}
    return next((lowered[c] for c in candidates if c in lowered), None)


def load_folder(
    root: str | os.PathLike,
    split: str | None = None,
    *,
    scores_file: str | os.PathLike | None = None,
    image_column: str | None = None,
    mos_column: str | None = None,
    mos_range: tuple[float, float] | None = None,
    higher_is_better: bool = True,
    name: str | None = None,
    **split_options,
) -> DatasetDict | Dataset:
    """Load images under `root` scored in a CSV/TSV/JSON/JSONL file (default: the first of `scores.csv`,
    `metadata.csv`, ... in `root`). Image paths are relative to `root` (or absolute). Columns are detected by name
    (`image`/`file_name`/..., `mos`/`score`/...) unless given; a `std` column becomes `mos_std`, a `split` column
    (train/validation/test) the official split, and every other column is kept (numbers as float32).
    `mos_range` defaults to the observed min/max of the scores."""
    root = require_root(_info("folder", root, None, higher_is_better), root)
    path = _find_scores_file(root, scores_file)
    records = _read_records(path)
    if not records or not isinstance(records[0], dict):
        raise DatasetLayoutError(f"{path} holds no score records")
    columns = _find_columns(records, path, image_column, mos_column)
    info = _info(name or root.name, root, None, higher_is_better, official=columns.split is not None)
    rows = [_row(info, root, path, number, record, columns) for number, record in enumerate(records, start=1)]
    if mos_range is None:
        labels = np.array([row["mos"] for row in rows])
        mos_range = (float(labels.min()), float(labels.max()))
    features = Features(
        {"image": Image(), "mos": Value("float32"), "image_id": Value("string")}
        | ({"mos_std": Value("float32")} if columns.std else {})
        | {c: Value("float32") if columns.numeric[c] else Value("string") for c in columns.extra}
    )
    info = _info(name or root.name, root, mos_range, higher_is_better, official=columns.split is not None)
    meta = {"label_column": columns.mos, "scores_file": str(path)}
    return build(info, rows, features, split, meta_overrides=meta, **split_options)


def _find_scores_file(root: Path, scores_file: str | os.PathLike | None) -> Path:
    """`scores_file` (relative to the working directory or `root`), else the first of SCORE_FILES in `root`."""
    if scores_file is None:
        found = next((root / f for f in SCORE_FILES if (root / f).is_file()), None)
        if found is None:
            raise DatasetLayoutError(
                f"{root}: no score file; expected one of {list(SCORE_FILES)} or scores_file=... (--scores-file)"
            )
        return found
    path = Path(scores_file).expanduser()
    path = path if path.is_absolute() or path.is_file() else root / path
    if not path.is_file():
        raise DatasetLayoutError(f"score file {str(path)!r} does not exist")
    return path


@dataclass(frozen=True)
class _Columns:
    """Which record keys hold what; `extra` columns are kept, as float32 where `numeric`."""

    image: str
    mos: str
    std: str | None
    split: str | None
    extra: list[str]
    numeric: dict[str, bool]


def _find_columns(records: list[dict], path: Path, image_column: str | None, mos_column: str | None) -> _Columns:
    columns = list(records[0])
    image_key = _pick(columns, image_column, IMAGE_COLUMNS, "image path", path)
    mos_key = _pick(columns, mos_column, MOS_COLUMNS, "score", path)
    if image_key is None or mos_key is None:
        raise DatasetLayoutError(
            f"{path}: cannot tell the image and score columns among {columns}; expected one of {list(IMAGE_COLUMNS)} "
            f"and one of {list(MOS_COLUMNS)}, or pass image_column=/mos_column="
        )
    std_key = _pick(columns, None, STD_COLUMNS, "std", path)
    split_key = _pick(columns, None, SPLIT_COLUMNS, "split", path)
    extra = [c for c in columns if c not in (image_key, mos_key, std_key, split_key)]
    numeric = {c: all(_is_number(r.get(c)) for r in records) for c in extra}
    return _Columns(image_key, mos_key, std_key, split_key, extra, numeric)


def _row(info: BenchmarkInfo, root: Path, path: Path, number: int, record: dict, columns: _Columns) -> dict:
    """The dataset row of score record `number` (1-based, for messages)."""
    relative = str(record.get(columns.image, "")).strip()
    if not relative:
        raise DatasetLayoutError(f"{path} record {number}: empty image path")
    image_path = Path(relative) if Path(relative).is_absolute() else root / relative
    row = {
        "image": str(image_path),
        "mos": to_float(info, path, f"record {number} {columns.mos}", record.get(columns.mos)),
        "image_id": Path(relative).with_suffix("").as_posix(),
        "_path": relative,
    }
    if columns.std:
        row["mos_std"] = to_float(info, path, f"record {number} {columns.std}", record.get(columns.std))
    if columns.split:
        value = str(record.get(columns.split, "")).strip().lower()
        if value not in SPLIT_ALIASES:
            raise DatasetLayoutError(f"{path} record {number}: unknown split {value!r} (use train/validation/test)")
        row["_split"] = SPLIT_ALIASES[value]
    for column in columns.extra:
        value = record.get(column)
        row[column] = float(value) if columns.numeric[column] else ("" if value is None else str(value))
    return row


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    try:
        float(str(value))
        return True
    except ValueError:
        return False


def _info(name: str, root, mos_range, higher_is_better: bool, official: bool = False) -> BenchmarkInfo:
    return BenchmarkInfo(
        key="folder",
        name=str(name),
        kind="user folder",
        mos_range=tuple(mos_range) if mos_range else None,
        higher_is_better=higher_is_better,
        label_column="mos",
        num_images=None,
        layout="<root>/<images> + <root>/scores.csv (image,mos[,std][,split][,...]) or a JSON/JSONL equivalent",
        homepage="",
        official_split=official,
        exif_transpose=True,  # your own photos, scored as a viewer shows them (what their raters saw, presumably)
    )
