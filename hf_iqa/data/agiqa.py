"""AGIQA-3K (Li et al., 2023): AI-generated images with perceptual-quality and text-alignment MOS."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Value

from .common import BenchmarkInfo, FileIndex, build, descend, find_file, read_csv, require_root, to_float

COLUMNS = ("name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align")

INFO = BenchmarkInfo(
    key="agiqa3k",
    name="AGIQA-3K",
    kind="NR, AI-generated images",
    mos_range=(0.0, 5.0),
    higher_is_better=True,
    label_column="mos_quality",
    num_images=2982,
    layout=f"<root>/data.csv ({','.join(COLUMNS)}), images anywhere under <root> (found by file name)",
    homepage="https://github.com/lcysyzxdxc/AGIQA-3k-Database",
    folder_names=("agiqa3k", "AGIQA-3K", "AGIQA-3k", "agiqa-3k"),
    aliases=("agiqa-3k", "agiqa"),
    notes="Label range and image count are unverified against the archive; the image folder name varies, so images "
    "are looked up by file name anywhere under the root.",
)


def load_agiqa3k(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load AGIQA-3K: `mos` is `mos_quality`; the alignment MOS, prompt and generation attributes are kept."""
    root = descend(require_root(INFO, root), INFO.folder_names, "data.csv")
    path = find_file(INFO, root, ["data.csv"], "label file")
    images = FileIndex(root, recursive=True)
    rows = []
    for line, record in enumerate(read_csv(INFO, path, list(COLUMNS)), start=2):
        where = f"line {line}"
        found = images.get(record["name"])
        rows.append(
            {
                "image": str(found or root / record["name"]),
                "mos": to_float(INFO, path, where, record["mos_quality"]),
                "mos_std": to_float(INFO, path, where, record["std_quality"]),
                "image_id": Path(record["name"]).stem,
                "prompt": record["prompt"],
                "adj1": record["adj1"],
                "adj2": record["adj2"],
                "style": record["style"],
                "mos_align": to_float(INFO, path, where, record["mos_align"]),
                "std_align": to_float(INFO, path, where, record["std_align"]),
                "_path": found.relative_to(root).as_posix() if found else record["name"],
            }
        )
    features = Features(
        {"image": Image(), "mos": Value("float32"), "mos_std": Value("float32"), "image_id": Value("string")}
        | {c: Value("string") for c in ("prompt", "adj1", "adj2", "style")}
        | {"mos_align": Value("float32"), "std_align": Value("float32")}
    )
    return build(INFO, rows, features, split, **split_options)
