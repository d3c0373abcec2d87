"""`--from-list FILE`: a text file of paths (one a line) or a CSV/TSV with a path column. Relative paths are
relative to the list's folder and normalised (`lists/../photos/a.jpg` is `photos/a.jpg`); a listed path that is
missing is an error row (the list is data), a listed folder or `.tar` shard is read as on the command line."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from hf_iqa.scoring.runtime import UsageError


def read_list(path: Path, image_column: str | None) -> list[str]:
    """The normalised paths of a list file."""
    base = path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() in (".csv", ".tsv"):
            reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            columns = reader.fieldnames or []
            column = image_column or next(
                (c for c in ("path", "image", "file", "filename", "file_name", "image_path") if c in columns),
                columns[0] if columns else None,
            )
            if column not in columns:
                raise UsageError(f"{path}: no column {column!r} (columns: {columns})")
            names = [row[column] for row in reader if row.get(column)]
        else:
            names = [line.rstrip("\n\r") for line in handle]
            names = [n for n in names if n.strip() and not n.lstrip().startswith("#")]
    return [os.path.normpath(name if os.path.isabs(name) else os.path.join(base, name)) for name in names]


def open_list(from_list: str, image_column: str | None) -> list[str]:
    list_path = Path(from_list)
    if not list_path.is_file():
        raise UsageError(f"--from-list {from_list}: no such file")
    try:
        return read_list(list_path, image_column)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"--from-list {from_list}: cannot read it ({error})") from None
