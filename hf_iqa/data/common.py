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
import dataclasses
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value

SPLIT_NAMES = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train", "0": "train",
    "val": "validation", "valid": "validation", "validation": "validation", "1": "validation",
    "test": "test", "testing": "test", "2": "test",
}  # fmt: skip


class DatasetLayoutError(ValueError):
    """The dataset folder does not look as its owners distribute it: the message names what was expected where."""


class LabelColumns(Protocol):
    """Decodes the label columns that a published split file carries after `path` and `score`."""

    names: tuple[str, ...]  # the columns' names, for messages

    def features(self) -> dict[str, Any]:
        """The `datasets` features of the columns `decode` adds."""

    def decode(self, fields: list[str]) -> dict[str, Any]:
        """The dataset columns of one line's label fields; `ValueError` names a bad value."""


@dataclasses.dataclass(frozen=True)
class SplitFiles:
    """Splits that a paper published as text files, offered by a loader as `split_scheme=<scheme>`.

    Format: split k is a folder `<k>/` under one of `locations` (folders relative to the user's `split_dir`, "" for
    `split_dir` itself) holding one file per split, `file_names` = ((split name, file name), ...). Each line is one
    image, tab-separated: `path  score  label columns...`. `path` names the image as the row's `_split_file_key`
    (default `_path`, relative to the dataset root); `score` is ignored (the dataset's own label is kept); the label
    columns are decoded by `labels` into extra dataset columns. LIQE's files are one user (`data/liqe_splits.py`).
    """

    scheme: str
    source: str  # who publishes the files, for messages ("LIQE")
    locations: tuple[str, ...]
    file_names: tuple[tuple[str, str], ...]
    labels: LabelColumns
    split_dir_help: str = ""  # what `split_dir` should be, for the message when it is missing

    def as_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "source": self.source, "files": [name for _, name in self.file_names]}


@dataclasses.dataclass(frozen=True)
class BenchmarkInfo:
    """What a benchmark is and how its labels read. `mos_range` is the native scale of `label_column` (None when it
    has no fixed range, e.g. PIPAL's Elo scores); `higher_is_better=False` marks DMOS-style labels."""

    key: str
    name: str
    kind: str
    mos_range: tuple[float, float] | None
    higher_is_better: bool
    label_column: str
    num_images: int | None
    layout: str
    homepage: str
    official_split: bool = False
    split_files: SplitFiles | None = None  # published split files, e.g. LIQE's (`liqe_splits.liqe_split_files`)
    folder_names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    notes: str = ""

    @property
    def split_schemes(self) -> tuple[str, ...]:
        schemes = ["official"] if self.official_split else []
        schemes.append("random")
        if self.split_files:
            schemes.append(self.split_files.scheme)
        schemes.append("file")
        return tuple(schemes)

    def error(self, message: str) -> DatasetLayoutError:
        return DatasetLayoutError(f"{self.name}: {message}\nExpected layout: {self.layout}")

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(dataclasses.replace(self, split_files=None))
        data["split_files"] = self.split_files.as_dict() if self.split_files else None
        data["split_schemes"] = list(self.split_schemes)
        return data


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
