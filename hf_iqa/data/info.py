"""What describes a benchmark for its loader: `BenchmarkInfo` (name, owners' files, split schemes, labels),
published split files (`SplitFiles`), split names and the layout error every loader raises."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

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
    has no fixed range, e.g. PIPAL's Elo scores); `higher_is_better=False` marks DMOS-style labels.
    `exif_transpose`: whether the dataset's official evaluation turns images by their EXIF orientation tag. False
    for every benchmark here: pyiqa and the official LIQE, QualiCLIP, UniQA and Dog-IQA code open images with PIL
    and `.convert("RGB")` without rotating (SPAQ's phone photos carry orientation tags, so it matters there).
    `hf-iqa benchmark` reads each dataset this way unless `--exif-transpose`/`--no-exif-transpose` says otherwise."""

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
    exif_transpose: bool = False

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
