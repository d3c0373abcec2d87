"""LIVE Image Quality Assessment Database Release 2 (Sheikh et al., 2006): 29 references, 5 distortions, DMOS."""

from __future__ import annotations

import os

import numpy as np
from datasets import Dataset, DatasetDict

from .common import (
    BenchmarkInfo,
    FileIndex,
    build,
    descend,
    find_file,
    full_reference_features,
    mat_strings,
    read_mat,
    require_root,
)
from .liqe_splits import liqe_split_files

# The 982 entries of the .mat files are these folders in this order, images img1.bmp .. img<count>.bmp each.
FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))

INFO = BenchmarkInfo(
    key="live",
    name="LIVE IQA (Release 2)",
    kind="FR/NR, synthetic distortions",
    mos_range=(0.0, 100.0),
    higher_is_better=False,
    label_column="dmos_new",
    num_images=779,
    layout=(
        "<root>/dmos_realigned.mat (dmos_new, dmos_std, orgs) or <root>/dmos.mat (dmos, orgs), <root>/refnames_all.mat "
        "(refnames_all), folders jp2k/ jpeg/ wn/ gblur/ fastfading/ with img<i>.bmp, references in <root>/refimgs/ "
        "(root = databaserelease2)"
    ),
    homepage="https://live.ece.utexas.edu/research/quality/subjective.htm",
    split_files=liqe_split_files("databaserelease2", "live"),
    folder_names=("databaserelease2", "live", "LIVE"),
    notes=(
        "DMOS, lower is better; the realigned DMOS (default) is what the LIVE authors recommend, dmos_file='original' "
        "reads dmos.mat. Reference copies (orgs == 1) are dropped: 779 distorted images. Random splits are "
        "reference-disjoint."
    ),
)


def load_live(
    root: str | os.PathLike, split: str | None = None, *, dmos_file: str = "realigned", **split_options
) -> DatasetDict | Dataset:
    """Load LIVE Release 2 (779 distorted images) with `reference` and `distortion_type` (folder name)."""
    root = descend(require_root(INFO, root), INFO.folder_names, "refnames_all.mat")
    if dmos_file == "realigned":
        path = find_file(INFO, root, ["dmos_realigned.mat"], "realigned DMOS file")
        dmos, std = read_mat(INFO, path, "dmos_new"), read_mat(INFO, path, "dmos_std")
    elif dmos_file == "original":
        path = find_file(INFO, root, ["dmos.mat"], "DMOS file")
        dmos, std = read_mat(INFO, path, "dmos"), None
    else:
        raise ValueError(f"dmos_file must be 'realigned' or 'original', got {dmos_file!r}")
    orgs = read_mat(INFO, path, "orgs")
    names_path = find_file(INFO, root, ["refnames_all.mat"], "reference-name file")
    reference_names = mat_strings(read_mat(INFO, names_path, "refnames_all"))
    expected = sum(count for _, count in FOLDERS)
    for label, values in (("DMOS", dmos), ("orgs", orgs), ("refnames_all", reference_names)):
        if len(values) != expected:
            raise INFO.error(f"{path if label != 'refnames_all' else names_path} is malformed: {len(values)} {label} "
                             f"entries, expected {expected}")  # fmt: skip
    references = FileIndex(root / "refimgs")
    rows = []
    entry = 0
    for folder, count in FOLDERS:
        for number in range(1, count + 1):
            if not orgs[entry]:
                reference = reference_names[entry]
                rows.append(
                    {
                        "image": str(root / folder / f"img{number}.bmp"),
                        "reference": str(references.get(reference) or root / "refimgs" / reference),
                        "mos": float(dmos[entry]),
                        "mos_std": float(std[entry]) if std is not None else float("nan"),
                        "image_id": f"{folder}/img{number}",
                        "distortion_type": folder,
                        "_path": f"{folder}/img{number}.bmp",
                        "_group": reference,
                    }
                )
            entry += 1
    features = full_reference_features(with_level=False)
    if not np.isfinite([row["mos"] for row in rows]).all():
        raise INFO.error(f"{path} is malformed: DMOS of a distorted image is not a finite number")
    meta = {"label_column": "dmos_new" if dmos_file == "realigned" else "dmos"}
    return build(INFO, rows, features, split, meta_overrides=meta, **split_options)
