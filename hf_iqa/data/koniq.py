"""KonIQ-10k (Hosu et al., 2020): 10 073 in-the-wild photos, crowd MOS, official train/validation/test split."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

from .common import BenchmarkInfo, build, descend, find_file, read_csv, require_root, to_float
from .liqe_splits import liqe_split_files

SETS_FILE = "koniq10k_distributions_sets.csv"
SCORES_FILE = "koniq10k_scores_and_distributions.csv"

INFO = BenchmarkInfo(
    key="koniq10k",
    name="KonIQ-10k",
    kind="NR, authentic distortions",
    mos_range=(0.0, 100.0),
    higher_is_better=True,
    label_column="MOS",
    num_images=10073,
    layout=(
        f"<root>/{SETS_FILE} (image_name,c1..c5,c_total,MOS,SD,set; MOS 0-100) or <root>/{SCORES_FILE} "
        "(image_name,c1..c5,c_total,MOS,SD,MOS_zscore; MOS 1-5), images in <root>/1024x768/ or <root>/512x384/"
    ),
    homepage="https://database.mmsp-kn.de/koniq-10k-database.html",
    official_split=True,
    split_files=liqe_split_files("koniq-10k", "koniq10k"),
    folder_names=("koniq10k", "koniq-10k", "KonIQ-10k"),
    aliases=("koniq", "koniq-10k"),
    notes=(
        f"{SETS_FILE} carries the official split and MOS on 0-100; {SCORES_FILE} has MOS on the 1-5 rating scale "
        "(LIQE, Dog-IQA) and MOS_zscore (0-100); the two are not exactly rank-equivalent, so record the label used."
    ),
)

_SET_NAMES = {"training": "train", "validation": "validation", "test": "test"}
# (meta file, label column) -> native range of that label
_RANGES = {("sets", "MOS"): (0.0, 100.0), ("scores", "MOS"): (1.0, 5.0), ("scores", "MOS_zscore"): (0.0, 100.0)}


def load_koniq10k(
    root: str | os.PathLike,
    split: str | None = None,
    *,
    resolution: str = "1024x768",
    meta_file: str | None = None,
    label: str = "MOS",
    **split_options,
) -> DatasetDict | Dataset:
    """Load KonIQ-10k from the owners' layout.

    Args:
        root: folder with the meta CSV and the image folders (or its parent).
        split: None for a `DatasetDict`, or "train"/"validation"/"test"/"all" for one `Dataset`.
        resolution: image folder, "1024x768" (original) or "512x384" (the half-size release).
        meta_file: "sets" (`koniq10k_distributions_sets.csv`, official split, MOS 0-100) or "scores"
            (`koniq10k_scores_and_distributions.csv`, MOS 1-5 and MOS_zscore, no split); default: "sets" if present.
        label: "MOS" or, with the scores file, "MOS_zscore".
        **split_options: `split_scheme`, `split_index`, `split_dir`, `split_file`, `seed`, `ratios`,
            `missing_images`, `cache_dir` (see `hf_iqa.data.common.assign_splits` and `build`).
    """
    root = descend(require_root(INFO, root), INFO.folder_names, resolution)
    if meta_file is None:
        meta_file = "sets" if any((root / d / SETS_FILE).is_file() for d in ("", "metadata")) else "scores"
    if (meta_file, label) not in _RANGES:
        raise ValueError(
            f"label must be one of {[lab for f, lab in _RANGES if f == meta_file]} with meta_file={meta_file!r}"
        )
    name = SETS_FILE if meta_file == "sets" else SCORES_FILE
    path = find_file(INFO, root, [name, f"metadata/{name}"], f"meta file ({meta_file})")
    required = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD"]
    required += ["set"] if meta_file == "sets" else ["MOS_zscore"]
    image_folder = root / resolution
    if not image_folder.is_dir():
        raise INFO.error(f"image folder {str(image_folder)!r} does not exist (resolution={resolution!r})")

    columns = {
        "image": Image(),
        "mos": Value("float32"),
        "mos_std": Value("float32"),
        "image_id": Value("string"),
        "rating_distribution": Sequence(Value("float32"), length=5),
        "num_ratings": Value("int32"),
    }
    if meta_file == "scores":
        columns["mos_zscore" if label == "MOS" else "mos_1to5"] = Value("float32")
    rows = []
    for line, record in enumerate(read_csv(INFO, path, required), start=2):
        where = f"line {line}"
        row = {
            "image": str(image_folder / record["image_name"]),
            "mos": to_float(INFO, path, where, record[label]),
            "mos_std": to_float(INFO, path, where, record["SD"]),
            "image_id": Path(record["image_name"]).stem,
            "rating_distribution": [to_float(INFO, path, where, record[f"c{k}"]) for k in range(1, 6)],
            "num_ratings": int(to_float(INFO, path, where, record["c_total"])),
            "_path": f"{resolution}/{record['image_name']}",
            "_split_file_key": f"1024x768/{record['image_name']}",  # LIQE's split files name the full-size images
        }
        if meta_file == "scores":
            other = "MOS_zscore" if label == "MOS" else "MOS"
            row["mos_zscore" if label == "MOS" else "mos_1to5"] = to_float(INFO, path, where, record[other])
        else:
            if record["set"] not in _SET_NAMES:
                raise INFO.error(f"{path} is malformed: {where}: set {record['set']!r} not in {list(_SET_NAMES)}")
            row["_split"] = _SET_NAMES[record["set"]]
        rows.append(row)

    if meta_file == "scores" and split_options.get("split_scheme") in (None, "official"):
        if split_options.get("split_scheme") == "official":
            raise INFO.error(f"the official split is in {SETS_FILE}; {SCORES_FILE} has none")
        split_options["split_scheme"] = "random"
    info_overrides = {"mos_range": list(_RANGES[(meta_file, label)]), "label_column": label, "meta_file": name,
                      "resolution": resolution}  # fmt: skip
    return build(INFO, rows, Features(columns), split, meta_overrides=info_overrides, **split_options)
