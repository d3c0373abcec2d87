"""AVA (Murray et al., CVPR 2012): ~255k photos from dpchallenge.com with 10-bin aesthetic vote histograms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

from .common import BenchmarkInfo, build, descend, find_file, require_root

INFO = BenchmarkInfo(
    key="ava",
    name="AVA (aesthetics)",
    kind="aesthetics",
    mos_range=(1.0, 10.0),
    higher_is_better=True,
    label_column="mean of the 10-bin vote histogram",
    num_images=None,
    layout=(
        "<root>/AVA.txt (15 space-separated columns: index, image id, 10 vote counts for scores 1..10, 2 semantic "
        "tags, challenge id), images <root>/images/<id>.jpg, optional official lists "
        "<root>/aesthetics_image_lists/generic_ls_train.jpgl and generic_test.jpgl"
    ),
    homepage="",  # no official site; the images circulate as community mirrors of the original crawl
    official_split=True,
    folder_names=("ava", "AVA", "AVA_dataset"),
    notes=(
        "Some AVA downloads lack a few images: pass missing_images='skip'. The official split has no validation part "
        "(pyiqa carves 2 000 validation images out of train)."
    ),
)

TRAIN_LIST = "aesthetics_image_lists/generic_ls_train.jpgl"
TEST_LIST = "aesthetics_image_lists/generic_test.jpgl"


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()} if path.is_file() else set()


def load_ava(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load AVA: `mos` is the mean vote (1-10), `mos_std` its standard deviation, `rating_distribution` the
    10 vote counts. The official split comes from the generic train/test image lists when present."""
    root = descend(require_root(INFO, root), INFO.folder_names, "AVA.txt")
    path = find_file(INFO, root, ["AVA.txt"], "annotation file")
    train_ids, test_ids = _read_list(root / TRAIN_LIST), _read_list(root / TEST_LIST)
    scores = np.arange(1, 11, dtype=np.float64)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 15 or not all(f.lstrip("-").isdigit() for f in fields):
            raise INFO.error(f"{path} line {number} is malformed: expected 15 integers, got {line!r}")
        image_id = fields[1]
        votes = np.array([int(v) for v in fields[2:12]], dtype=np.float64)
        total = votes.sum()
        if total <= 0:
            raise INFO.error(f"{path} line {number}: image {image_id} has no votes")
        mean = float((votes * scores).sum() / total)
        row = {
            "image": str(root / "images" / f"{image_id}.jpg"),
            "mos": mean,
            "mos_std": float(np.sqrt((votes * (scores - mean) ** 2).sum() / total)),
            "image_id": image_id,
            "rating_distribution": votes.tolist(),
            "num_ratings": int(total),
            "semantic_tags": [int(fields[12]), int(fields[13])],
            "challenge_id": int(fields[14]),
            "_path": f"images/{image_id}.jpg",
        }
        if image_id in test_ids:
            row["_split"] = "test"
        elif image_id in train_ids:
            row["_split"] = "train"
        rows.append(row)
    if not (train_ids or test_ids) and split_options.get("split_scheme") in (None, "official"):
        if split_options.get("split_scheme") == "official":
            raise INFO.error(f"the official split needs {root / TRAIN_LIST} and {root / TEST_LIST}")
        split_options["split_scheme"] = "random"
    features = Features(
        {
            "image": Image(),
            "mos": Value("float32"),
            "mos_std": Value("float32"),
            "image_id": Value("string"),
            "rating_distribution": Sequence(Value("float32"), length=10),
            "num_ratings": Value("int32"),
            "semantic_tags": Sequence(Value("int16"), length=2),
            "challenge_id": Value("int32"),
        }
    )
    return build(INFO, rows, features, split, **split_options)
