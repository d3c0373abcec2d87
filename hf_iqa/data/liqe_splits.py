"""LIQE's published splits (Zhang et al., CVPR 2023), one user of the general split-file scheme (`SplitFiles`).

LIQE's repository ships ten train/val/test splits per dataset as `IQA_Database/<dataset>/splits2/<k>/
<prefix>_{train,val,test}_clip.txt`; each line is `path  score  distortion  scene1  scene2  scene3`, with one of
LIQE's 33 fine distortion names (mapped to its 11 prompt classes) and up to three scene words (`invalid` = empty).
"""

from __future__ import annotations

from typing import Any

from datasets import ClassLabel, Value
from datasets import Sequence as SequenceFeature

from hf_iqa.labels import LIQE_DISTORTIONS, LIQE_SCENES, decode_liqe_distortion, decode_liqe_scenes

from .common import SplitFiles

SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))  # (dataset split, LIQE's file name part)


class LiqeLabelColumns:
    """LIQE's `distortion scene1 scene2 scene3` -> `liqe_distortion`, `distortion_label`, `scene_labels`."""

    names = ("distortion", "scene1", "scene2", "scene3")

    def features(self) -> dict[str, Any]:
        return {
            "liqe_distortion": Value("string"),
            "distortion_label": ClassLabel(names=list(LIQE_DISTORTIONS)),
            "scene_labels": SequenceFeature(Value("int8"), length=len(LIQE_SCENES)),
        }

    def decode(self, fields: list[str]) -> dict[str, Any]:
        return {
            "liqe_distortion": fields[0].strip(),
            "distortion_label": decode_liqe_distortion(fields[0]),
            "scene_labels": list(decode_liqe_scenes(fields[1:4])),
        }


def liqe_split_files(folder: str, prefix: str) -> SplitFiles:
    """LIQE's splits of one dataset: `folder` under LIQE's `IQA_Database`, files named `<prefix>_<split>_clip.txt`."""
    return SplitFiles(
        scheme="liqe",
        source="LIQE",
        locations=("", f"{folder}/splits2", f"IQA_Database/{folder}/splits2", "splits2"),
        file_names=tuple((split, f"{prefix}_{name}_clip.txt") for split, name in SPLITS),
        labels=LiqeLabelColumns(),
        split_dir_help=(
            "the LIQE repository's IQA_Database folder (or the dataset's splits2 folder, e.g. "
            f"IQA_Database/{folder}/splits2)"
        ),
    )
