"""FLIVE / PaQ-2-PiQ (Ying et al., CVPR 2020): ~40k in-the-wild pictures (plus patches), MOS 0-100."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Value

from .common import SPLIT_ALIASES, BenchmarkInfo, build, descend, find_file, read_csv, require_root, to_float

INFO = BenchmarkInfo(
    key="flive",
    name="FLIVE (PaQ-2-PiQ)",
    kind="NR, authentic distortions",
    mos_range=(0.0, 100.0),
    higher_is_better=True,
    label_column="mos",
    num_images=None,
    layout="<root>/labels_image.csv (name, mos, ...; name relative to <root>/database/ or <root>), images under "
    "<root>/database/",
    homepage="https://github.com/baidut/PaQ-2-PiQ",
    official_split=True,
    folder_names=("flive", "FLIVE", "livefb", "paq2piq"),
    aliases=("paq2piq", "livefb", "live_fb"),
    notes=(
        "Image-level labels only (labels_patch.csv is ignored). The official split is read from a `set`/`split` or "
        "`is_valid` column when the CSV has one; otherwise use a seeded random split or split_file."
    ),
)


def _official_split(record: dict[str, str]) -> str | None:
    for column in ("set", "split"):
        value = record.get(column, "").strip().lower()
        if value:
            return SPLIT_ALIASES.get(value)
    if record.get("is_valid", "").strip():
        return "test" if record["is_valid"].strip().lower() in ("true", "1") else "train"
    return None


def load_flive(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load FLIVE's image-level labels (`mos`, 0-100)."""
    root = descend(require_root(INFO, root), INFO.folder_names, "labels_image.csv")
    path = find_file(INFO, root, ["labels_image.csv"], "image label file")
    records = read_csv(INFO, path, ["name", "mos"])
    image_folder = root / "database" if (root / "database").is_dir() else root
    rows = []
    for line, record in enumerate(records, start=2):
        row = {
            "image": str(image_folder / record["name"]),
            "mos": to_float(INFO, path, f"line {line}", record["mos"]),
            "image_id": Path(record["name"]).with_suffix("").as_posix(),
            "_path": record["name"],
        }
        official = _official_split(record)
        if official is not None:
            row["_split"] = official
        rows.append(row)
    has_official = any("_split" in row for row in rows)
    if not has_official and split_options.get("split_scheme") in (None, "official"):
        if split_options.get("split_scheme") == "official":
            raise INFO.error(
                f"{path} has no split column (set, split or is_valid); use split_scheme='random' or 'file'"
            )
        split_options["split_scheme"] = "random"
    features = Features({"image": Image(), "mos": Value("float32"), "image_id": Value("string")})
    return build(INFO, rows, features, split, **split_options)
