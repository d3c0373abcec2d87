"""LIVE In the Wild Image Quality Challenge (CLIVE, ChallengeDB; Ghadiyaram & Bovik, 2016): 1 162 test photos."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Value

from .common import BenchmarkInfo, FileIndex, build, descend, find_file, mat_strings, read_mat, require_root
from .liqe_splits import liqe_split_files

INFO = BenchmarkInfo(
    key="livec",
    name="LIVE Challenge (CLIVE)",
    kind="NR, authentic distortions",
    mos_range=(0.0, 100.0),
    higher_is_better=True,
    label_column="AllMOS_release",
    num_images=1162,
    layout=(
        "<root>/Data/AllImages_release.mat, <root>/Data/AllMOS_release.mat, <root>/Data/AllStdDev_release.mat, "
        "images in <root>/Images/ (root = ChallengeDB_release)"
    ),
    homepage="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
    split_files=liqe_split_files("ChallengeDB_release", "clive"),
    folder_names=("ChallengeDB_release", "livec", "clive", "CLIVE"),
    aliases=("clive", "live_challenge", "livechallenge", "challengedb"),
    notes="The first 7 entries are the database's training images (t1..t7) and are dropped, as in pyiqa and LIQE.",
)

NUM_TRAINING_IMAGES = 7


def load_livec(
    root: str | os.PathLike, split: str | None = None, *, include_training_images: bool = False, **split_options
) -> DatasetDict | Dataset:
    """Load LIVE Challenge from `ChallengeDB_release`. The 7 training images are dropped unless
    `include_training_images`. Splits: seeded random by default, or LIQE's (`split_scheme="liqe"`)."""
    root = descend(require_root(INFO, root), INFO.folder_names, "Data")
    names_file = find_file(INFO, root, ["Data/AllImages_release.mat"], "image list")
    mos_file = find_file(INFO, root, ["Data/AllMOS_release.mat"], "MOS file")
    std_file = find_file(INFO, root, ["Data/AllStdDev_release.mat"], "MOS standard deviation file")
    names = mat_strings(read_mat(INFO, names_file, "AllImages_release"))
    mos = read_mat(INFO, mos_file, "AllMOS_release").astype(float)
    std = read_mat(INFO, std_file, "AllStdDev_release").astype(float)
    if not len(names) == len(mos) == len(std):
        raise INFO.error(
            f"{names_file.parent} is malformed: {len(names)} image names, {len(mos)} MOS and {len(std)} std values"
        )
    images = FileIndex(root / "Images", recursive=True)  # the training images live in Images/trainingImages/
    start = 0 if include_training_images else NUM_TRAINING_IMAGES
    rows = []
    for name, score, deviation in zip(names[start:], mos[start:], std[start:]):
        found = images.get(name) or images.get(f"trainingImages/{name}")
        relative = found.relative_to(root).as_posix() if found else f"Images/{name}"
        rows.append(
            {
                "image": str(found or root / "Images" / name),
                "mos": float(score),
                "mos_std": float(deviation),
                "image_id": Path(name).stem,
                "_path": relative,
            }
        )
    features = Features(
        {"image": Image(), "mos": Value("float32"), "mos_std": Value("float32"), "image_id": Value("string")}
    )
    return build(INFO, rows, features, split, **split_options)
