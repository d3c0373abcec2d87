"""TID2013 (Ponomarenko et al., 2015): 25 references x 24 distortions x 5 levels = 3 000 images, MOS 0-9."""

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
    require_root,
    to_float,
)

INFO = BenchmarkInfo(
    key="tid2013",
    name="TID2013",
    kind="FR/NR, synthetic distortions",
    mos_range=(0.0, 9.0),
    higher_is_better=True,
    label_column="mos_with_names.txt",
    num_images=3000,
    layout=(
        "<root>/mos_with_names.txt (lines '<mos> <file name>'), optional <root>/mos_std.txt (one value per line, "
        "same order), <root>/distorted_images/i<ref>_<type>_<level>.bmp, <root>/reference_images/I<ref>.BMP"
    ),
    homepage="https://www.ponomarenko.info/tid2013.htm",
    folder_names=("tid2013", "TID2013"),
    notes="Research licence: never commit TID2013 images (pyiqa's ResultsCalibra BMPs are TID2013 images). Random "
    "splits are reference-disjoint.",
)


def load_tid2013(root: str | os.PathLike, split: str | None = None, **split_options) -> DatasetDict | Dataset:
    """Load TID2013 with `reference`, `distortion_type` ("01".."24") and `distortion_level` (1..5)."""
    root = descend(require_root(INFO, root), INFO.folder_names, "mos_with_names.txt")
    path = find_file(INFO, root, ["mos_with_names.txt"], "MOS file")
    lines = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    std_path = root / "mos_std.txt"
    stds = [line.strip() for line in std_path.read_text().splitlines() if line.strip()] if std_path.is_file() else None
    if stds is not None and len(stds) != len(lines):
        raise INFO.error(f"{std_path} is malformed: {len(stds)} values for {len(lines)} lines in {path.name}")
    distorted = FileIndex(root / "distorted_images")
    references = FileIndex(root / "reference_images")
    rows = []
    for number, fields in enumerate(lines, start=1):
        if len(fields) != 2:
            raise INFO.error(
                f"{path} line {number} is malformed: expected '<mos> <file name>', got {' '.join(fields)!r}"
            )
        name = fields[1]
        parts = name.rsplit(".", 1)[0].split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in (parts[0][1:], parts[1], parts[2])):
            raise INFO.error(f"{path} line {number}: file name {name!r} is not i<ref>_<type>_<level>.bmp")
        reference_name = f"I{parts[0][1:]}.BMP"
        found = distorted.get(name)
        rows.append(
            {
                "image": str(found or root / "distorted_images" / name),
                "reference": str(references.get(reference_name) or root / "reference_images" / reference_name),
                "mos": to_float(INFO, path, f"line {number}", fields[0]),
                "mos_std": to_float(INFO, std_path, f"line {number}", stds[number - 1]) if stds else float("nan"),
                "image_id": name.rsplit(".", 1)[0].lower(),
                "distortion_type": parts[1],
                "distortion_level": int(parts[2]),
                "_path": f"distorted_images/{found.name if found else name}",
                "_group": parts[0][1:],
            }
        )
    features = full_reference_features(with_level=True)
    return build(INFO, rows, features, split, **split_options)
