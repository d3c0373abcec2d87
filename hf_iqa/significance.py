"""Confidence intervals of SRCC, PLCC and KRCC, and paired tests between models scored on the same images.

* **SRCC and PLCC: percentile bootstrap over images**, seeded (`RESAMPLES` = 1,000 resamples, `SEED` = 0), vectorised
  with numpy in chunks of about `CHUNK_ELEMENTS` values, so memory stays bounded whatever the number of images. The
  bootstrap makes no assumption about the joint distribution of scores and labels (IQA labels are bounded, skewed and
  often clustered by distortion), which the Fisher-z interval of a Pearson correlation does. PLCC is bootstrapped on
  the predictions as they are reported (after the logistic mapping when it is sound), with the mapping held fixed:
  refitting it in every resample would cost 1,000 nonlinear fits, and four parameters fitted on thousands of images
  add little variance.
* **KRCC: Fisher z with the Fieller, Hartley & Pearson (1957) variance `0.437 / (n - 4)`**. A bootstrap of Kendall's
  tau needs one O(n log n) pass per resample that numpy cannot vectorise (about 100x the cost of the SRCC bootstrap
  at 10,000 images); Fieller's variance is accurate for |tau| < 0.8 under bivariate normality.
* **Paired test**: the same resampled images for every model, so the bootstrap distribution of each pair's
  difference keeps the dependence between the two correlations (both share the labels and the images). A difference
  is significant at `1 - level` when its interval excludes 0. Pairs are not corrected for multiple comparisons.

Same inputs and seed give bit-identical numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from scipy import stats

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
CHUNK_ELEMENTS = 2_000_000  # resampled values held at once per array (16 MB of float64)
PAIRED_METRICS = ("srcc", "plcc")


def _resamples(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Index matrices `(rows, n)` drawing images with replacement, `resamples` rows in all, from one seeded stream."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `x` with the same row of `y` (NaN for a constant row)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))


def _bootstrap(columns: list[np.ndarray], mos: np.ndarray, metric: str, resamples: int, seed: int) -> np.ndarray:
    """`(resamples, len(columns))` bootstrap values of `metric` ("srcc" or "plcc") of each column against `mos`."""
    out = []
    for index in _resamples(len(mos), resamples, seed):
        labels = mos[index]
        if metric == "srcc":
            labels = stats.rankdata(labels, axis=1)
        values = []
        for column in columns:
            sample = column[index]
            values.append(_row_pearson(stats.rankdata(sample, axis=1) if metric == "srcc" else sample, labels))
        out.append(np.stack(values, axis=1))
    return np.concatenate(out)


def _percentile(values: np.ndarray, level: float) -> list[float] | None:
    """The central `level` interval of the finite `values`; None when too few are finite (tiny samples)."""
    values = values[np.isfinite(values)]
    if len(values) < 10:
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def fisher_interval(value: float, n: int, level: float = LEVEL, variance: float = 0.437) -> list[float] | None:
    """Fisher-z interval `tanh(atanh(r) -+ z * sqrt(variance / (n - 4)))`; 0.437 is Fieller's for Kendall's tau."""
    if n < 5 or not np.isfinite(value):
        return None
    half = stats.norm.ppf((1 + level) / 2) * np.sqrt(variance / (n - 4))
    centre = np.arctanh(np.clip(value, -0.999999, 0.999999))
    return [float(np.tanh(centre - half)), float(np.tanh(centre + half))]


def confidence_intervals(
    pred: Any, mos: Any, *, mapped: Any = None, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, Any]:
    """`{"srcc_ci": [low, high], "plcc_ci": ..., "krcc_ci": ..., "ci": {level, resamples, seed, method}}`; an
    interval is None where the sample is too small for one (fewer than 10 usable resamples, KRCC below 5 images).

    `mapped`: the predictions PLCC is reported on (the fitted mapping), default `pred`."""
    from hf_iqa.metric_inputs import check_inputs

    pred, mos = check_inputs(pred, mos)
    mapped = pred if mapped is None else check_inputs(mapped, mos)[0]
    srcc_values = _bootstrap([pred], mos, "srcc", resamples, seed)[:, 0]
    plcc_values = _bootstrap([mapped], mos, "plcc", resamples, seed)[:, 0]
    tau = float(stats.kendalltau(pred, mos).statistic)
    return {
        "srcc_ci": _percentile(srcc_values, level),
        "plcc_ci": _percentile(plcc_values, level),
        "krcc_ci": fisher_interval(tau, len(pred), level),
        "ci": {"level": level, "resamples": resamples, "seed": seed,
               "method": "SRCC, PLCC: percentile bootstrap over images; KRCC: Fisher z, Fieller variance"},
    }  # fmt: skip


def paired_bootstrap(
    predictions: Mapping[str, Any],
    mos: Any,
    *,
    metric: str = "srcc",
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """Paired bootstrap of every pair's difference in `metric` ("srcc", or "plcc" on the given predictions) for
    models scored on the same images (same order as `mos`).

    Returns `{"metric", "level", "resamples", "seed", "num_items", "models", "values": {model: point estimate},
    "pairs": [{"a", "b", "difference" (a - b), "ci", "p_value", "significant"}]}`; `p_value` is the two-sided
    bootstrap p (twice the smaller tail of the difference's distribution around 0)."""
    if metric not in PAIRED_METRICS:
        raise ValueError(f"metric must be one of {PAIRED_METRICS}, got {metric!r}")
    if len(predictions) < 2:
        raise ValueError(f"a paired test needs at least two models, got {len(predictions)}")
    from hf_iqa.metric_inputs import check_inputs

    names = list(predictions)
    columns = [check_inputs(predictions[name], mos)[0] for name in names]
    mos = check_inputs(columns[0], mos)[1]
    point = stats.spearmanr if metric == "srcc" else stats.pearsonr
    values = {name: float(point(column, mos).statistic) for name, column in zip(names, columns)}
    boot = _bootstrap(columns, mos, metric, resamples, seed)
    pairs = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            difference = boot[:, i] - boot[:, j]
            interval = _percentile(difference, level)
            if interval is None:
                raise ValueError(f"too few images ({len(mos)}) for a paired bootstrap")
            low, high = interval
            difference = difference[np.isfinite(difference)]
            tail = min(float(np.mean(difference <= 0)), float(np.mean(difference >= 0)))
            pairs.append({"a": a, "b": names[j], "difference": values[a] - values[names[j]], "ci": [low, high],
                          "p_value": min(1.0, 2 * tail), "significant": not low <= 0 <= high})  # fmt: skip
    return {"metric": metric, "level": level, "resamples": resamples, "seed": seed, "num_items": len(mos),
            "models": names, "values": values, "pairs": pairs}  # fmt: skip


def compare_predictions(pred_a: Any, pred_b: Any, mos: Any, **options: Any) -> dict[str, Any]:
    """The paired test of two prediction sets: one pair record of `paired_bootstrap` (`a` and `b` named so)."""
    result = paired_bootstrap({"a": pred_a, "b": pred_b}, mos, **options)
    return {**result["pairs"][0], "metric": result["metric"], "level": result["level"], "values": result["values"]}
