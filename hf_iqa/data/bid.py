"""BID, the Blurred Image Database (Ciancio et al., 2011): 586 photos with realistic blur, MOS 0-5."""

from __future__ import annotations

import os

from datasets import Dataset, DatasetDict, Features, Image, Value

from .common import BenchmarkInfo, FileIndex, build, descend, find_file, read_xlsx, require_root, to_float
from .liqe_splits import liqe_split_files

INFO = BenchmarkInfo(
    key="bid",
    name="BID",
    kind="NR, realistic blur",
    mos_range=(0.0, 5.0),
    higher_is_better=True,
    label_column="mean grade (DatabaseGrades.xlsx)",
    num_images=586,
    layout=(
        "<root>/DatabaseGrades.xlsx (first column = image number, a column of mean grades), images "
        "<root>/ImageDatabase/DatabaseImage<NNNN>.JPG (or directly in <root>)"
    ),
    homepage="https://www.lps.ufrj.br/profs/eduardo/ImageDatabase.htm",
    split_files=liqe_split_files("BID", "bid"),
    folder_names=("bid", "BID"),
    notes="MOS range and direction are unverified against the archive (values seen in LIQE's split files: 0.3-4.8).",
)

# Header words that name the mean-grade column (the spreadsheet comes from a Brazilian lab).
_MEAN_WORDS = ("mos", "mean", "average", "média", "media")
_PUBLIC_MEAN_COLUMN = 22  # 1-based; the column public loaders read when no header names it


def load_bid(
    root: str | os.PathLike, split: str | None = None, *, mos_column: str | None = None, **split_options
) -> DatasetDict | Dataset:
    """Load BID. The MOS column is found by its header (mean/average/MOS) unless `mos_column` names it; a sheet
    without such a header falls back to column 22, the column public loaders read."""
    root = descend(require_root(INFO, root), INFO.folder_names, "DatabaseGrades.xlsx")
    path = find_file(INFO, root, ["DatabaseGrades.xlsx"], "grade spreadsheet")
    records, header = read_xlsx(INFO, path, [], header_search_rows=1)
    if not header:
        raise INFO.error(f"{path} is malformed: the first row must be a header")
    if mos_column is None:
        named = [h for h in header[1:] if any(word in h.lower() for word in _MEAN_WORDS)]
        if named:
            mos_column = named[0]
        elif len(header) >= _PUBLIC_MEAN_COLUMN:
            mos_column = header[_PUBLIC_MEAN_COLUMN - 1]
        else:
            raise INFO.error(f"{path}: no column of mean grades among {header}; pass mos_column=<header>")
    if mos_column not in header:
        raise INFO.error(f"{path} has no column {mos_column!r} (columns: {header})")
    folder = root / "ImageDatabase" if (root / "ImageDatabase").is_dir() else root
    images = FileIndex(folder)
    rows = []
    for line, record in enumerate(records, start=2):
        number = int(to_float(INFO, path, f"row {line} {header[0]}", record[header[0]]))
        name = f"DatabaseImage{number:04d}.JPG"
        found = images.get(name)
        rows.append(
            {
                "image": str(found or folder / name),
                "mos": to_float(INFO, path, f"row {line} {mos_column}", record[mos_column]),
                "image_id": f"DatabaseImage{number:04d}",
                "_path": (found or folder / name).relative_to(root).as_posix(),
            }
        )
    features = Features({"image": Image(), "mos": Value("float32"), "image_id": Value("string")})
    return build(INFO, rows, features, split, meta_overrides={"label_column": mos_column}, **split_options)
