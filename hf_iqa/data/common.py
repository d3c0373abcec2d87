"""What every benchmark loader shares: reading the owners' meta files with errors that say what was expected where,
assigning splits, and building a typed `datasets.DatasetDict` with `Dataset.from_generator`.

A loader reads its meta file into a list of rows (plain dicts). Keys without a leading underscore are the columns of
the dataset (`image` is a path, `mos` the label on its native scale, ...); private keys steer the splits:
`_path` (path relative to the root, also how published split files name the image unless `_split_file_key` says
otherwise), `_group` (rows that must stay in the
same split, e.g. all distortions of one reference), `_split` (the official split, when the owners publish one).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value

from .info import (  # noqa: F401  (re-exported: loaders import them from here)
    SPLIT_ALIASES,
    SPLIT_NAMES,
    BenchmarkInfo,
    DatasetLayoutError,
    LabelColumns,
    SplitFiles,
)
from .splits import assign_splits  # noqa: F401  (re-exported)

# ---------------------------------------------------------------------------------------------------------------
# Locating files
# ---------------------------------------------------------------------------------------------------------------


def require_root(info: BenchmarkInfo, root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise info.error(f"dataset root {str(path)!r} does not exist")
    if not path.is_dir():
        raise info.error(f"dataset root {str(path)!r} is not a folder")
    return path


def find_file(info: BenchmarkInfo, root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of `candidates` (paths relative to `root`) that exists, else an error listing all of them."""
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    tried = ", ".join(repr(str(root / c)) for c in candidates)
    raise info.error(f"{what} not found; looked for {tried}")


def descend(root: Path, folder_names: Sequence[str], marker: str) -> Path:
    """Accept both the dataset folder and its parent: return `root/<name>` when `marker` exists only there."""
    if (root / marker).exists():
        return root
    for name in folder_names:
        if (root / name / marker).exists():
            return root / name
    return root


class FileIndex:
    """Case-insensitive lookup of files under a folder, for archives whose meta files and file names disagree in
    case (`.JPG` vs `.jpg`, `I01.BMP` vs `i01.bmp`)."""

    def __init__(self, folder: Path, recursive: bool = False):
        self.folder = folder
        self._by_name: dict[str, Path] = {}
        if folder.is_dir():
            for path in folder.rglob("*") if recursive else folder.iterdir():
                if path.is_file():
                    self._by_name.setdefault(str(path.relative_to(folder)).replace(os.sep, "/").lower(), path)
                    self._by_name.setdefault(path.name.lower(), path)

    def get(self, name: str) -> Path | None:
        return self._by_name.get(name.replace("\\", "/").lower())

    def __len__(self) -> int:
        return len(self._by_name)


# ---------------------------------------------------------------------------------------------------------------
# Reading meta files
# ---------------------------------------------------------------------------------------------------------------


def _match_columns(info: BenchmarkInfo, path: Path, header: Sequence[Any], required: Sequence[str]) -> dict[str, int]:
    normalized = {str(h).strip().lower(): i for i, h in enumerate(header) if h is not None}
    missing = [c for c in required if c.lower() not in normalized]
    if missing:
        shown = [str(h) for h in header if h is not None]
        raise info.error(f"{path} is malformed: columns {missing} are missing (found columns {shown})")
    return {c: normalized[c.lower()] for c in required} | {str(h).strip(): i for i, h in enumerate(header) if h}


def read_csv(info: BenchmarkInfo, path: Path, required: Sequence[str], delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a CSV file with a header holding at least `required` (case-insensitive) as dicts keyed by both the
    required names and the file's own header."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise info.error(f"{path} is empty; expected a header with columns {list(required)}")
        columns = _match_columns(info, path, header, required)
        rows = []
        for line_number, values in enumerate(reader, start=2):
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) < len(header):
                raise info.error(
                    f"{path} line {line_number} is malformed: {len(values)} fields, header has {len(header)}"
                )
            rows.append({name: values[i].strip() for name, i in columns.items()})
    if not rows:
        raise info.error(f"{path} has a header but no rows")
    return rows


def read_xlsx(
    info: BenchmarkInfo, path: Path, required: Sequence[str], sheet: str | None = None, header_search_rows: int = 20
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of an Excel sheet below the first row (within the first `header_search_rows`) holding the `required`
    header cells; searches every sheet unless `sheet` is given. Returns (rows, header)."""
    try:
        import openpyxl
    except ImportError:
        raise ImportError(
            f"{info.name} ships its labels as Excel ({path.name}); reading it needs openpyxl: "
            "pip install 'hf-iqa[data]' (or pip install openpyxl)"
        ) from None
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises zipfile/KeyError/InvalidFileException on bad files
        raise info.error(f"{path} is not a readable .xlsx workbook ({type(error).__name__}: {error})") from None
    wanted = {c.lower() for c in required}
    sheets = [workbook[sheet]] if sheet else list(workbook.worksheets)
    try:
        for worksheet in sheets:
            table = [list(row) for row in worksheet.iter_rows(values_only=True)]
            for header_index, header in enumerate(table[:header_search_rows]):
                cells = {str(c).strip().lower() for c in header if c is not None}
                if wanted <= cells:
                    columns = _match_columns(info, path, header, required)
                    rows = []
                    for values in table[header_index + 1 :]:
                        if all(v is None or str(v).strip() == "" for v in values):
                            continue
                        values = values + [None] * (len(header) - len(values))
                        rows.append({name: values[i] for name, i in columns.items()})
                    return rows, [str(h).strip() for h in header if h is not None]
    finally:
        workbook.close()
    raise info.error(f"{path} is malformed: no sheet has a header row with columns {list(required)}")


def read_mat(info: BenchmarkInfo, path: Path, variable: str) -> np.ndarray:
    """A variable of a MATLAB .mat file (v5), flattened."""
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except Exception as error:  # scipy raises ValueError/TypeError/MatReadError on bad files
        raise info.error(f"{path} is not a readable MATLAB .mat file ({type(error).__name__}: {error})") from None
    if variable not in content:
        found = [k for k in content if not k.startswith("__")]
        raise info.error(f"{path} is malformed: variable {variable!r} missing (found {found})")
    return np.asarray(content[variable]).reshape(-1)


def mat_strings(values: np.ndarray) -> list[str]:
    """MATLAB cell array of strings (as loaded by scipy) -> list of str."""
    return [str(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else "" for v in values]


def to_float(info: BenchmarkInfo, source: Path | str, where: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise info.error(f"{source} is malformed: {where}: expected a number, got {value!r}") from None
    if not np.isfinite(number):
        raise info.error(f"{source} is malformed: {where}: value is {value!r}")
    return number


# ---------------------------------------------------------------------------------------------------------------
# Building the DatasetDict
# ---------------------------------------------------------------------------------------------------------------


def _generate(rows: list[dict], columns: tuple[str, ...]) -> Iterator[dict]:
    for row in rows:
        yield {column: row[column] for column in columns}


def check_images(info: BenchmarkInfo, rows: list[dict], image_columns: Iterable[str], missing: str) -> list[dict]:
    """Raise (or, with `missing="skip"`, drop and warn) when image files named by the meta file are absent;
    `missing="keep"` keeps their rows (the benchmark scores them as error rows and counts them)."""
    if missing not in ("error", "skip", "keep"):
        raise ValueError(f"missing_images must be 'error', 'skip' or 'keep', got {missing!r}")
    if missing == "keep":
        return rows
    columns = [c for c in image_columns if rows and c in rows[0]]
    absent = [row for row in rows if any(row[c] is None or not os.path.isfile(row[c]) for c in columns)]
    if not absent:
        return rows
    examples = [next(row[c] for c in columns if row[c] is None or not os.path.isfile(row[c])) for row in absent[:3]]
    message = f"{len(absent)} of {len(rows)} images listed in the meta file are missing, e.g. {examples}"
    if missing == "error":
        raise info.error(message + " (pass missing_images='skip' to drop them)")
    warnings.warn(f"{info.name}: {message}; skipping them", stacklevel=3)
    dropped = {id(row) for row in absent}
    return [row for row in rows if id(row) not in dropped]


def metadata(info: BenchmarkInfo, **overrides: Any) -> dict[str, Any]:
    data = {
        "key": info.key,
        "name": info.name,
        "mos_range": list(info.mos_range) if info.mos_range else None,
        "higher_is_better": info.higher_is_better,
        "label_column": info.label_column,
        "exif_transpose": info.exif_transpose,
    }
    data.update(overrides)
    return data


def build(
    info: BenchmarkInfo,
    rows: list[dict],
    features: Features,
    split: str | None = None,
    *,
    split_scheme: str | None = None,
    split_index: int = 1,
    split_dir: str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    seed: int = 123,
    ratios: Sequence[float] = (0.7, 0.1, 0.2),
    missing_images: str = "error",
    cache_dir: str | None = None,
    meta_overrides: dict[str, Any] | None = None,
) -> DatasetDict | Dataset:
    """Check the rows, split them and build one `Dataset.from_generator` per split (Arrow tables of paths, cached
    by content, so a changed meta file is re-read). `split` returns one `Dataset`; `split="all"` returns every row in
    the meta file's order regardless of the scheme. Each dataset's `info.description` holds the JSON metadata
    (`mos_range`, `higher_is_better`, `label_column`, split scheme) that `normalize_mos` and the benchmark read."""
    image_columns = [name for name, feature in features.items() if isinstance(feature, Image)]
    rows = check_images(info, rows, image_columns, missing_images)
    if info.num_images is not None and len(rows) != info.num_images and missing_images == "error":
        warnings.warn(
            f"{info.name}: found {len(rows)} images, the official release has {info.num_images}", stacklevel=3
        )
    for row in rows:
        row.setdefault("_group", row["image_id"])
        row.setdefault("_path", row["image_id"])

    scheme = split_scheme or ("official" if info.official_split else "random")
    if split is not None and split.lower() == "all":
        splits = {"all": rows}
    else:
        splits = assign_splits(info, rows, split_scheme, split_index, split_dir, split_file, seed, ratios)
    if info.split_files and scheme == info.split_files.scheme and "all" not in splits:
        features = Features(dict(features) | info.split_files.labels.features())
    splits = {name: part for name, part in splits.items() if part}  # tiny datasets can leave a ratio empty
    if split is not None and split.lower() != "all":
        wanted = SPLIT_ALIASES.get(split.lower(), split)
        if wanted not in splits:
            raise ValueError(
                f"{info.name}: split {split!r} does not exist under scheme {scheme!r}; have {list(splits)}"
            )
        splits = {wanted: splits[wanted]}

    description = json.dumps(
        {
            "hf_iqa": metadata(info, **(meta_overrides or {}))
            | {"split_scheme": "all" if "all" in splits else scheme, "split_index": split_index, "seed": seed}
        }
    )
    columns = tuple(features)  # a tuple: lists in gen_kwargs are treated as shards by datasets
    built = {}
    for name, split_rows in splits.items():
        dataset = Dataset.from_generator(
            _generate, features=features, cache_dir=cache_dir, gen_kwargs={"rows": split_rows, "columns": columns}
        )
        dataset.info.description = description
        dataset.info.dataset_name = info.key
        dataset.info.homepage = info.homepage
        built[name] = dataset
    if split is not None:
        return next(iter(built.values()))
    return DatasetDict(built)


def dataset_metadata(dataset: Dataset | DatasetDict) -> dict[str, Any]:
    """The hf_iqa metadata attached by a loader (`mos_range`, `higher_is_better`, ...), or {} if none."""
    if isinstance(dataset, DatasetDict):
        dataset = next(iter(dataset.values()))
    try:
        return json.loads(dataset.info.description or "{}").get("hf_iqa", {})
    except (json.JSONDecodeError, AttributeError):
        return {}


def normalize_scores(
    values: Any, mos_range: Sequence[float], higher_is_better: bool = True, to: Sequence[float] = (0.0, 1.0)
) -> np.ndarray:
    """Map labels from `mos_range` onto `to`, flipping lower-is-better labels so that higher is better."""
    low, high = float(mos_range[0]), float(mos_range[1])
    if not high > low:
        raise ValueError(f"mos_range must be (low, high) with high > low, got {tuple(mos_range)}")
    unit = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    if not higher_is_better:
        unit = 1.0 - unit
    return to[0] + unit * (to[1] - to[0])


def normalize_mos(
    dataset: Dataset | DatasetDict,
    to: Sequence[float] = (0.0, 1.0),
    *,
    mos_range: Sequence[float] | str | None = None,
    higher_is_better: bool | None = None,
    column: str = "mos",
    output_column: str = "mos_normalized",
) -> Dataset | DatasetDict:
    """Add `output_column`: `column` mapped from the dataset's native range onto `to`, higher = better.

    The range and direction come from the loader's metadata unless given. `mos_range="observed"` uses the labels'
    own min/max (the only choice for PIPAL's Elo scores). The native `mos` column is left untouched.
    """
    meta = dataset_metadata(dataset)
    if higher_is_better is None:
        if "higher_is_better" not in meta:
            raise ValueError("this dataset carries no hf_iqa metadata: pass mos_range and higher_is_better")
        higher_is_better = bool(meta["higher_is_better"])
    if isinstance(mos_range, str):
        if mos_range != "observed":
            raise ValueError(f"mos_range must be (low, high), None or 'observed', got {mos_range!r}")
        parts = dataset.values() if isinstance(dataset, DatasetDict) else [dataset]
        labels = np.concatenate([np.asarray(part[column], dtype=np.float64) for part in parts])
        mos_range = (float(labels.min()), float(labels.max()))
    elif mos_range is None:
        mos_range = meta.get("mos_range")
        if mos_range is None:
            raise ValueError(
                f"{meta.get('name', 'this dataset')} has no fixed label range; pass mos_range=(low, high) or 'observed'"
            )

    def _map(batch: dict) -> dict:
        return {output_column: normalize_scores(batch[column], mos_range, higher_is_better, to).astype(np.float32)}

    if isinstance(dataset, Dataset):
        new_features = Features(dict(dataset.features) | {output_column: Value("float32")})
        return dataset.map(_map, batched=True, features=new_features, desc="normalize_mos")
    return DatasetDict({name: normalize_mos(part, to, mos_range=mos_range, higher_is_better=higher_is_better,
                                            column=column, output_column=output_column)
                        for name, part in dataset.items()})  # fmt: skip


def full_reference_features(with_level: bool = True) -> Features:
    """The schema of the full-reference (synthetic distortion) datasets: distorted image, its reference, MOS/DMOS
    on the native scale with its std, distortion type and (where the dataset has one) level."""
    fields = {
        "image": Image(),
        "reference": Image(),
        "mos": Value("float32"),
        "mos_std": Value("float32"),
        "image_id": Value("string"),
        "distortion_type": Value("string"),
    }
    if with_level:
        fields["distortion_level"] = Value("int8")
    return Features(fields)
