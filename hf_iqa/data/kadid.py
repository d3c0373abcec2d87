"""KADID-10k (Lin et al., QoMEX 2019): 81 references x 25 distortion types x 5 levels = 10 125 images."""

from __future__ import annotations

import math
import os
from pathlib import Path

from datasets import Dataset, DatasetDict

from .common import BenchmarkInfo, build, descend, find_file, full_reference_features, read_csv, require_root, to_float
from .liqe_splits import liqe_split_files

INFO = BenchmarkInfo(
    key="kadid10k",
    name="KADID-10k",
    kind="FR/NR, synthetic distortions",
    mos_range=(1.0, 5.0),
    higher_is_better=True,
    label_column="dmos",
    num_images=10125,
    layout="<root>/dmos.csv (dist_img,ref_img,dmos,var), images and references in <root>/images/",
    homepage="https://database.mmsp-kn.de/kadid-10k-database.html",
    split_files=liqe_split_files("kadid10k", "kadid10k"),
    folder_names=("kadid10k", "kadid-10k", "KADID-10k"),
    aliases=("kadid", "kadid-10k"),
    notes="Despite its name the `dmos` column is MOS-like: 1-5, higher is better. Random splits are reference-disjoint.",
)


def load_kadid10k(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load KADID-10k with `reference`, `distortion_type` ("01".."25", the file-name code) and `distortion_level`.
    Splits: reference-disjoint seeded random by default, or LIQE's (`split_scheme="liqe"`)."""
    root = descend(require_root(INFO, root), INFO.folder_names, "dmos.csv")
    path = find_file(INFO, root, ["dmos.csv"], "label file")
    rows = []
    for line, record in enumerate(read_csv(INFO, path, ["dist_img", "ref_img", "dmos", "var"]), start=2):
        stem = Path(record["dist_img"]).stem
        parts = stem.split("_")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise INFO.error(f"{path} line {line}: image name {record['dist_img']!r} is not I<ref>_<type>_<level>.png")
        rows.append(
            {
                "image": str(root / "images" / record["dist_img"]),
                "reference": str(root / "images" / record["ref_img"]),
                "mos": to_float(INFO, path, f"line {line}", record["dmos"]),
                "mos_std": math.sqrt(max(to_float(INFO, path, f"line {line}", record["var"]), 0.0)),
                "image_id": stem,
                "distortion_type": parts[1],
                "distortion_level": int(parts[2]),
                "_path": f"images/{record['dist_img']}",
                "_group": Path(record["ref_img"]).stem,
            }
        )
    features = full_reference_features(with_level=True)
    return build(INFO, rows, features, split, **split_options)
