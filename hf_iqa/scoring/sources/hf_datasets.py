"""One `datasets` dataset: a save_to_disk folder, a `.parquet`/`.arrow` file, or a Hub dataset written
`hf://datasets/OWNER/NAME` (only that form: a typo in a local path is never sent to the Hub). Rows are keyed by
the `--id-column` (or the row index) and identified by their row index, so duplicate ids are two rows; a null or
missing image cell is an error row."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hf_iqa.scoring.runtime import UsageError
from hf_iqa.scoring.sources.base import Item, Mine, Segment, Skip, SourceOptions

HUB_PREFIX = "hf://datasets/"


def _dataset_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _open_dataset(source: str, split: str | None) -> Any:
    """A `datasets` Dataset (memory-mapped) or IterableDataset (streamed); a damaged one is a `UsageError`."""
    try:
        import datasets
    except ImportError:
        raise UsageError(
            f"{source}: reading datasets needs the datasets package: pip install 'hf-iqa[data]'"
        ) from None
    path = Path(source)
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity_error()  # a damaged file is said once, below, not also in the library's log
    try:
        if source.startswith(HUB_PREFIX):
            loaded = datasets.load_dataset(source.removeprefix(HUB_PREFIX), split=split or "train", streaming=True)
        elif path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        elif path.suffix.lower() == ".arrow":
            loaded = datasets.Dataset.from_file(str(path))
        else:
            loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True)
    except Exception as error:  # offline, unknown id, damaged folder or file: one line
        raise UsageError(f"{source}: cannot open the dataset ({type(error).__name__}: {error})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is None:
            if len(loaded) != 1:
                raise UsageError(f"{source} has the splits {list(loaded)}: choose one with --split")
            split = next(iter(loaded))
        if split not in loaded:
            raise UsageError(f"{source} has no split {split!r} (splits: {list(loaded)})")
        loaded = loaded[split]
    return loaded


def _image_column(features: Any, asked: str | None) -> str:
    if asked:
        if asked not in features:
            raise UsageError(f"--image-column {asked!r} is not a column of the dataset (columns: {list(features)})")
        return asked
    from datasets import Image

    found = [name for name, feature in features.items() if isinstance(feature, Image)]
    if found:
        return found[0]
    for name in ("image", "img", "path", "file_name"):
        if name in features:
            return name
    raise UsageError(f"no image column found; pass --image-column (columns: {list(features)})")


def _rows(source: str, loaded: Any, column: str, id_column: str | None, mine: Mine, skip: Skip) -> Iterator[Item]:
    number = -1
    try:
        for number, row in enumerate(loaded):
            if not mine(number):
                continue
            key, uid = (str(row[id_column]) if id_column else str(number)), f"{source}#{number}"
            cell = row.get(column)
            if skip(uid):
                yield Item(key, index=number, uid=uid)
            elif cell is None or (isinstance(cell, dict) and cell.get("bytes") is None and not cell.get("path")):
                yield Item(key, error="no image (the dataset cell is empty)", index=number, uid=uid)
            else:
                yield Item(key, source=cell, index=number, uid=uid)
    except Exception as error:  # a damaged file found while reading: one error row, the rows before it kept
        if mine(number + 1):
            yield Item(source, error=f"cannot read the dataset after row {number} ({type(error).__name__}: {error})",
                       index=number + 1, uid=f"{source}#damaged")  # fmt: skip


def dataset_segment(source: str, options: SourceOptions) -> Segment:
    loaded = _open_dataset(source, options.split)
    features = loaded.features or {}
    column = _image_column(features, options.image_column)
    id_column = options.id_column
    if id_column and id_column not in features:
        raise UsageError(f"--id-column {id_column!r} is not a column of {source} (columns: {list(features)})")
    from datasets import Image

    if isinstance(features.get(column), Image):
        loaded = loaded.cast_column(column, Image(decode=False))  # bytes decoded by hf_iqa.io in the loader threads
    loaded = loaded.select_columns([c for c in (column, id_column) if c])
    total = len(loaded) if hasattr(loaded, "__len__") else None
    return Segment(source, lambda mine, skip: _rows(source, loaded, column, id_column, mine, skip), total)


class DatasetSource:
    kind, alone = "dataset", True

    def claims(self, name: str) -> bool:
        if name.startswith(HUB_PREFIX):
            return True
        if os.path.isdir(name):
            return _dataset_folder(Path(name))
        return Path(name).suffix.lower() in (".parquet", ".arrow") and os.path.lexists(name)

    def open(self, name: str, options: SourceOptions) -> list[Segment]:
        return [dataset_segment(name, options)]
