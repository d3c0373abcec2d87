"""SPAQ (Fang et al., CVPR 2020): 11 125 smartphone photos with MOS and five attribute scores; no official split."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Value

from .common import BenchmarkInfo, FileIndex, build, descend, find_file, read_xlsx, require_root, to_float

MOS_FILE = "Annotations/MOS and Image attribute scores.xlsx"
ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")

INFO = BenchmarkInfo(
    key="spaq",
    name="SPAQ",
    kind="NR, smartphone photography",
    mos_range=(0.0, 100.0),
    higher_is_better=True,
    label_column="MOS",
    num_images=11125,
    layout=f"<root>/{MOS_FILE} (Image name, MOS, {', '.join(ATTRIBUTES)}), images in <root>/TestImage/",
    homepage="https://github.com/h4nwei/SPAQ",
    folder_names=("spaq", "SPAQ"),
    notes=(
        "Images are full-resolution phone photos; published numbers differ in resizing (pyiqa resize 448, QualiCLIP+ "
        "512 short side, Dog-IQA native), so state the resize used with any result (hf-iqa benchmark "
        "--resize-short-side)."
    ),
)


def load_spaq(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load SPAQ (MOS and the five image attributes). Splits: seeded random by default (no official split);
    options as in `hf_iqa.data.koniq.load_koniq10k`."""
    root = descend(require_root(INFO, root), INFO.folder_names, "Annotations")
    path = find_file(INFO, root, [MOS_FILE], "MOS spreadsheet")
    records, _ = read_xlsx(INFO, path, ["Image name", "MOS", *ATTRIBUTES])
    images = FileIndex(root / "TestImage")
    if not len(images):
        raise INFO.error(f"image folder {str(root / 'TestImage')!r} is missing or empty")
    rows = []
    for line, record in enumerate(records, start=2):
        name = str(record["Image name"]).strip()
        found = images.get(name)
        row = {
            "image": str(found or root / "TestImage" / name),
            "mos": to_float(INFO, path, f"row {line}", record["MOS"]),
            "image_id": Path(name).stem,
            "_path": f"TestImage/{name}",
        }
        for attribute in ATTRIBUTES:
            row[attribute.lower()] = to_float(INFO, path, f"row {line} {attribute}", record[attribute])
        rows.append(row)
    features = Features(
        {"image": Image(), "mos": Value("float32"), "image_id": Value("string")}
        | {attribute.lower(): Value("float32") for attribute in ATTRIBUTES}
    )
    return build(INFO, rows, features, split, **split_options)
