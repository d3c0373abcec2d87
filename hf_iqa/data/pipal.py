"""PIPAL (Jinjin et al., ECCV 2020; NTIRE IQA challenges): restoration/GAN outputs rated by Elo scores."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Value

from .common import BenchmarkInfo, FileIndex, build, descend, require_root, to_float

INFO = BenchmarkInfo(
    key="pipal",
    name="PIPAL",
    kind="FR, image restoration and GAN outputs",
    mos_range=None,
    higher_is_better=True,
    label_column="Elo score (Train_Label/*.txt)",
    num_images=23200,
    layout=(
        "<root>/Train_Label/*.txt (lines '<distorted name>,<elo score>'), distorted images in <root>/Train_Dis/ "
        "(or Train_Dist/), references <root>/Train_Ref/<ref>.bmp"
    ),
    homepage="https://www.jasongt.com/projectpages/pipal.html",
    folder_names=("pipal", "PIPAL"),
    notes=(
        "Only the training part has public labels. Elo scores have no fixed range (normalize with "
        "mos_range='observed'); higher = preferred (unverified). Random splits are reference-disjoint."
    ),
)


def load_pipal(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load PIPAL's labelled training part with `reference`, `distortion_type` (the 2-digit group of the file
    name) and `distortion_level` (the index within the group)."""
    root = descend(require_root(INFO, root), INFO.folder_names, "Train_Label")
    label_folder = root / "Train_Label"
    label_files = sorted(label_folder.glob("*.txt")) if label_folder.is_dir() else []
    if not label_files:
        raise INFO.error(f"no label files (*.txt) in {str(label_folder)!r}")
    distorted_folder = next((root / d for d in ("Train_Dis", "Train_Dist") if (root / d).is_dir()), root / "Train_Dis")
    distorted = FileIndex(distorted_folder)
    references = FileIndex(root / "Train_Ref")
    rows = []
    for path in label_files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 2:
                raise INFO.error(
                    f"{path} line {number} is malformed: expected '<image name>,<elo score>', got {line!r}"
                )
            name = fields[0]
            parts = Path(name).stem.split("_")
            if len(parts) != 3:
                raise INFO.error(f"{path} line {number}: image name {name!r} is not <ref>_<type>_<index>.bmp")
            reference_name = f"{parts[0]}.bmp"
            found = distorted.get(name)
            rows.append(
                {
                    "image": str(found or distorted_folder / name),
                    "reference": str(references.get(reference_name) or root / "Train_Ref" / reference_name),
                    "mos": to_float(INFO, path, f"line {number}", fields[1]),
                    "image_id": Path(name).stem,
                    "distortion_type": parts[1],
                    "distortion_level": int(parts[2]) if parts[2].isdigit() else -1,
                    "_path": f"{distorted_folder.name}/{name}",
                    "_group": parts[0],
                }
            )
    features = Features(
        {
            "image": Image(),
            "reference": Image(),
            "mos": Value("float32"),
            "image_id": Value("string"),
            "distortion_type": Value("string"),
            "distortion_level": Value("int16"),
        }
    )
    return build(INFO, rows, features, split, **split_options)
