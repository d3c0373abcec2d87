"""Input kinds as plug-ins. A kind is a class with `kind`, `alone`, `claims(name)` and `open(name, options)`
(`Source` in `base.py`) in one file, and one `register(...)` line below; `score`, `benchmark` and the demo all
get it through `open_inputs`. Kinds are asked in registration order; the first that claims a name opens it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hf_iqa.scoring.runtime import UsageError
from hf_iqa.scoring.sources.base import (
    FILE_KINDS,
    Inputs,
    Item,
    Segment,
    Source,
    SourceOptions,
    escape_name,
    file_problem,
    has_image_suffix,
    listed,
)  # fmt: skip
from hf_iqa.scoring.sources.files import FileSource, FolderSource, MissingSource, file_item, scan_folder
from hf_iqa.scoring.sources.hf_datasets import DatasetSource
from hf_iqa.scoring.sources.lists import open_list, read_list
from hf_iqa.scoring.sources.tar import TarSource

SOURCES: list[Source] = []


def register(source: Source, first: bool = False) -> None:
    """Add an input kind (`first`: asked before the built-in kinds)."""
    SOURCES.insert(0, source) if first else SOURCES.append(source)


register(DatasetSource())
register(TarSource())
register(FolderSource())
register(FileSource())
register(MissingSource())


def source_for(name: str) -> Source:
    return next(source for source in SOURCES if source.claims(name))


def open_inputs(
    paths: Iterable[str],
    *,
    from_list: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
) -> Inputs:
    """The command line's inputs as one stream. Every name is checked (a missing one is a `UsageError`) before
    anything is scored; `--from-list` entries that are missing are error rows."""
    options = SourceOptions(split, image_column, id_column)
    names = list(paths)
    kinds = [source_for(name) for name in names]
    alone = [name for name, kind in zip(names, kinds) if kind.alone]
    if alone:
        if len(names) != 1 or from_list:
            raise UsageError(f"{alone[0]}: a dataset input is scored on its own (give one dataset and no other input)")
        files = [] if "://" in names[0] else [Path(names[0])]
        return Inputs(kinds[0].open(names[0], options), "id", files)
    listed_names = open_list(from_list, image_column) if from_list else []
    files = [Path(name) for name in names if not Path(name).is_dir()] + ([Path(from_list)] if from_list else [])
    segments: list[Segment] = []
    for name, kind in zip(names, kinds):
        segments.extend(kind.open(name, options))
    for name in listed_names:
        kind = source_for(name)
        missing = kind.alone or isinstance(kind, MissingSource)
        segments.extend([listed([file_item(name)], name)] if missing else kind.open(name, options))
    return Inputs(_merge_listed(segments), "path", files)


def _merge_listed(segments: list[Segment]) -> list[Segment]:
    """Consecutive single files become one segment (positions shared round-robin across processes, as before),
    and a path given twice gets a second uid (`path#2`) so that both are rows."""
    merged: list[Segment] = []
    run: list[Item] = []
    seen: dict[str, int] = {}

    def close_run() -> None:
        if run:
            merged.append(listed(list(run), "files"))
            run.clear()

    for segment in segments:
        if segment.whole or segment.count is None:
            close_run()
            merged.append(segment)
            continue
        for item in segment.read(lambda position: True, lambda uid: False):
            seen[item.uid] = seen.get(item.uid, 0) + 1
            if seen[item.uid] > 1:
                item.uid = f"{item.uid}#{seen[item.uid]}"
            run.append(Item(item.key, item.source, item.error, uid=item.uid))
    close_run()
    return merged


__all__ = [
    "FILE_KINDS", "SOURCES", "DatasetSource", "FileSource", "FolderSource", "Inputs", "Item", "MissingSource",
    "Segment", "Source", "SourceOptions", "TarSource", "escape_name", "file_item", "file_problem", "has_image_suffix",
    "listed", "open_inputs", "open_list", "read_list", "register", "scan_folder", "source_for",
]  # fmt: skip
