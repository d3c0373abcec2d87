"""Benchmark names -> loaders and metadata: `list_datasets()`, `get_dataset_info()`, `load_benchmark()`."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from datasets import Dataset, DatasetDict

from . import agiqa, ava, bid, csiq, flive, kadid, koniq, live, livec, pipal, spaq, tid2013
from .common import BenchmarkInfo
from .folder import load_folder

LOADERS: dict[str, tuple[BenchmarkInfo, Callable[..., DatasetDict | Dataset]]] = {
    module.INFO.key: (module.INFO, loader)
    for module, loader in (
        (koniq, koniq.load_koniq10k),
        (spaq, spaq.load_spaq),
        (livec, livec.load_livec),
        (kadid, kadid.load_kadid10k),
        (agiqa, agiqa.load_agiqa3k),
        (csiq, csiq.load_csiq),
        (live, live.load_live),
        (tid2013, tid2013.load_tid2013),
        (bid, bid.load_bid),
        (pipal, pipal.load_pipal),
        (flive, flive.load_flive),
        (ava, ava.load_ava),
    )
}
_ALIASES = {alias.lower(): key for key, (info, _) in LOADERS.items() for alias in (key, *info.aliases)}


def canonical_name(name: str) -> str:
    """The registry key for a dataset name or alias ("clive" -> "livec"); "folder" for a user's own folder."""
    lowered = name.strip().lower()
    if lowered == "folder":
        return "folder"
    if lowered not in _ALIASES:
        raise KeyError(
            f"unknown dataset {name!r}; known: {sorted(LOADERS)} (or 'folder' for your own images + scores)"
        )
    return _ALIASES[lowered]


def get_dataset_info(name: str) -> BenchmarkInfo:
    return LOADERS[canonical_name(name)][0]


def list_datasets() -> list[dict[str, Any]]:
    """One dict per benchmark: key, name, kind, mos_range, higher_is_better, label_column, num_images, layout,
    split_schemes, homepage, notes."""
    return [info.as_dict() for info, _ in LOADERS.values()]


def load_benchmark(
    name: str, data_root: str | os.PathLike, split: str | None = None, **options
) -> DatasetDict | Dataset:
    """Load a benchmark by name (or alias) from `data_root` (its folder, or a parent of several dataset folders).
    `options` go to the dataset's loader (resolution, split_scheme, split_index, split_dir, cache_dir, ...)."""
    key = canonical_name(name)
    if key == "folder":
        return load_folder(data_root, split, **options)
    return LOADERS[key][1](data_root, split, **options)  # each loader also accepts a parent of its usual folder
