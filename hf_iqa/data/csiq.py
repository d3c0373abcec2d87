"""CSIQ (Larson & Chandler, 2010): 30 references x 6 distortions x 4-5 levels = 866 images, DMOS (lower = better)."""

from __future__ import annotations

import os

from datasets import Dataset, DatasetDict

from .common import (
    BenchmarkInfo,
    FileIndex,
    build,
    descend,
    find_file,
    full_reference_features,
    read_xlsx,
    require_root,
    to_float,
)
from .liqe_splits import liqe_split_files

INFO = BenchmarkInfo(
    key="csiq",
    name="CSIQ",
    kind="FR/NR, synthetic distortions",
    mos_range=(0.0, 1.0),
    higher_is_better=False,
    label_column="dmos",
    num_images=866,
    layout=(
        "<root>/csiq.DMOS.xlsx (a sheet with header image,dst_idx,dst_type,dst_lev,dmos_std,dmos), distorted images "
        "<root>/dst_imgs/<type>/<image>.<TYPE>.<level>.png, references <root>/src_imgs/<image>.png"
    ),
    homepage="https://s2.smu.edu/~eclarson/csiq.html",
    split_files=liqe_split_files("CSIQ", "csiq"),
    folder_names=("csiq", "CSIQ"),
    notes="DMOS in [0, 1], lower is better (LIQE's split files store 1 - DMOS). Random splits are reference-disjoint.",
)

# dst_type in the spreadsheet -> the tag in the file names (matched case-insensitively: AWGN, JPEG, BLUR, ...)
FILE_TAGS = {"noise": "awgn", "jpeg": "jpeg", "jpeg 2000": "jpeg2000", "fnoise": "fnoise", "blur": "blur",
             "contrast": "contrast"}  # fmt: skip


def _image_name(value) -> str:
    """Reference names are words (`sunset_sparrow`) or numbers (`1600`, read by Excel as 1600.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def load_csiq(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load CSIQ's 866 distorted images with `reference`, `distortion_type` (the spreadsheet's dst_type) and
    `distortion_level`. Splits: reference-disjoint seeded random by default, or LIQE's."""
    root = descend(require_root(INFO, root), INFO.folder_names, "dst_imgs")
    path = find_file(INFO, root, ["csiq.DMOS.xlsx"], "DMOS spreadsheet")
    records, _ = read_xlsx(INFO, path, ["image", "dst_type", "dst_lev", "dmos_std", "dmos"])
    distorted = FileIndex(root / "dst_imgs", recursive=True)
    references = FileIndex(root / "src_imgs")
    rows = []
    for line, record in enumerate(records, start=2):
        where = f"row {line}"
        name = _image_name(record["image"])
        kind = str(record["dst_type"]).strip().lower()
        if kind not in FILE_TAGS:
            raise INFO.error(f"{path} is malformed: {where}: dst_type {record['dst_type']!r} not in {list(FILE_TAGS)}")
        level = int(to_float(INFO, path, where, record["dst_lev"]))
        file_name = f"{name}.{FILE_TAGS[kind]}.{level}.png"
        found = distorted.get(file_name)
        reference = references.get(f"{name}.png")
        rows.append(
            {
                "image": str(found or root / "dst_imgs" / FILE_TAGS[kind] / file_name),
                "reference": str(reference or root / "src_imgs" / f"{name}.png"),
                "mos": to_float(INFO, path, where, record["dmos"]),
                "mos_std": to_float(INFO, path, where, record["dmos_std"]),
                "image_id": f"{name}.{FILE_TAGS[kind]}.{level}",
                "distortion_type": kind,
                "distortion_level": level,
                "_path": found.relative_to(root).as_posix() if found else f"dst_imgs/{FILE_TAGS[kind]}/{file_name}",
                "_group": name,
            }
        )
    features = full_reference_features(with_level=True)
    return build(INFO, rows, features, split, **split_options)
