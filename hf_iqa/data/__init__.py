"""IQA benchmark datasets as `datasets.DatasetDict`s, read from the archives as their owners distribute them.

Nothing is downloaded or redistributed: point a loader at the folder you downloaded. Tables store image paths (not
bytes); `mos` keeps the native scale of each dataset (see `list_datasets()` for ranges and directions, and
`normalize_mos` for an explicit mapping to [0, 1], higher = better).

    from hf_iqa.data import load_koniq10k, load_benchmark, list_datasets
    koniq = load_koniq10k("~/data/koniq10k")                 # DatasetDict: train / validation / test
    clive = load_benchmark("livec", "~/data", split="all")   # one Dataset, every image

Needs the `[data]` extra: pip install 'hf-iqa[data]'.
"""

try:
    import datasets  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "hf_iqa.data needs the Hugging Face `datasets` library, which is not installed: pip install 'hf-iqa[data]'"
    ) from error

from hf_iqa.labels import LIQE_DISTORTIONS, LIQE_SCENES

from .agiqa import load_agiqa3k
from .ava import load_ava
from .bid import load_bid
from .common import (
    BenchmarkInfo,
    DatasetLayoutError,
    SplitFiles,
    assign_splits,
    dataset_metadata,
    normalize_mos,
    normalize_scores,
)
from .csiq import load_csiq
from .flive import load_flive
from .folder import load_folder
from .kadid import load_kadid10k
from .koniq import load_koniq10k
from .live import load_live
from .livec import load_livec
from .pipal import load_pipal
from .registry import canonical_name, get_dataset_info, list_datasets, load_benchmark
from .spaq import load_spaq
from .tid2013 import load_tid2013

__all__ = [
    "LIQE_DISTORTIONS",
    "LIQE_SCENES",
    "BenchmarkInfo",
    "DatasetLayoutError",
    "SplitFiles",
    "assign_splits",
    "canonical_name",
    "dataset_metadata",
    "get_dataset_info",
    "list_datasets",
    "load_agiqa3k",
    "load_ava",
    "load_benchmark",
    "load_bid",
    "load_csiq",
    "load_flive",
    "load_folder",
    "load_kadid10k",
    "load_koniq10k",
    "load_live",
    "load_livec",
    "load_pipal",
    "load_spaq",
    "load_tid2013",
    "normalize_mos",
    "normalize_scores",
]
