"""Checked inputs of every correlation metric (`hf_iqa.metrics`, `hf_iqa.significance`): float64 arrays of equal
length, finite, not constant, or one `MetricInputError` saying what is wrong."""

from __future__ import annotations

from typing import Any

import numpy as np


class MetricInputError(ValueError):
    """Predictions/labels that cannot give a meaningful correlation (NaN, constant, mismatched lengths, too short)."""


def as_array(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch
        values = values.detach().cpu().double().numpy()  # float64: bf16 has no numpy dtype, fp32 would round
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MetricInputError(f"`{name}` must be a sequence of numbers ({error})") from None
    if array.ndim != 1:
        if array.ndim == 2 and 1 in array.shape:
            array = array.reshape(-1)
        else:
            raise MetricInputError(f"`{name}` must be one-dimensional, got shape {array.shape}")
    return array


def check_inputs(pred: Any, mos: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return `pred`, `mos` as float64 arrays, or raise `MetricInputError` saying what is wrong."""
    pred, mos = as_array(pred, "pred"), as_array(mos, "mos")
    if len(pred) != len(mos):
        raise MetricInputError(f"length mismatch: {len(pred)} predictions but {len(mos)} labels (mos)")
    if len(pred) < 3:
        raise MetricInputError(f"need at least 3 (prediction, label) pairs for a correlation, got {len(pred)}")
    for name, array in (("pred", pred), ("mos", mos)):
        bad = ~np.isfinite(array)
        if bad.any():
            where = np.flatnonzero(bad)[:5].tolist()
            raise MetricInputError(f"`{name}` contains {int(bad.sum())} NaN/inf value(s), e.g. at positions {where}")
        if np.ptp(array) == 0:
            raise MetricInputError(
                f"`{name}` is constant ({array[0]!r} for all {len(array)} items): correlation is undefined"
            )
    return pred, mos
