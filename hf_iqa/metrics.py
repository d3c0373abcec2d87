"""Correlation metrics of IQA papers: SRCC, KRCC, PLCC and RMSE, on scipy.

Which paper tables use what (see the specs in shared/specs):

* **LIQE** (CVPR 2023, all tables; `BIQA_benchmark.py`): SRCC and KRCC on the raw predictions, **PLCC and RMSE after
  the 4-parameter logistic fit** (`fit="logistic4"`), mean ± std over 10 random splits.
* **pyiqa benchmarks, Dog-IQA** (Tables 1-2), and **QualiCLIP** (training-time validation): raw PLCC, no fit
  (`fit=None`).
* **UniQA** tables: SRCC/PLCC as printed by its pyiqa fork, i.e. raw PLCC (`fit=None`).
* The 5-parameter logistic (`fit="logistic5"`, VQEG FR-TV Phase I) is offered for FR-style reporting (LIVE, TID2013
  papers); none of the four reproduced methods uses it.

SRCC/KRCC are rank statistics, unchanged by any monotone fit; KRCC is Kendall's tau-b (ties counted as scipy does).
Every result says whether PLCC/RMSE were fitted, because raw and fitted PLCC differ by several points.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

FITS = (None, "logistic4", "logistic5")


class MetricInputError(ValueError):
    """Predictions/labels that cannot give a meaningful correlation (NaN, constant, mismatched lengths, too short)."""


def _as_array(values: Any, name: str) -> np.ndarray:
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
    pred, mos = _as_array(pred, "pred"), _as_array(mos, "mos")
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


def logistic4(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float) -> np.ndarray:
    """Monotone 4-parameter logistic: `beta2 + (beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|))`."""
    z = np.clip(-(x - beta3) / np.abs(beta4), -500, 500)
    return beta2 + (beta1 - beta2) / (1.0 + np.exp(z))


def logistic5(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float, beta5: float) -> np.ndarray:
    """VQEG 5-parameter logistic: `beta1 * (1/2 - 1/(1 + exp(beta2 (x - beta3)))) + beta4 x + beta5`."""
    z = np.clip(beta2 * (x - beta3), -500, 500)
    return beta1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + beta4 * x + beta5


def fit_logistic(pred: Any, mos: Any, fit: str = "logistic4") -> tuple[np.ndarray, np.ndarray]:
    """Fit `fit` mapping predictions onto the label scale; return (mapped predictions, parameters in the scale of
    `pred`, usable with `logistic4`/`logistic5`).

    The fit runs on z-scored predictions (so tiny or huge score ranges converge alike) with scipy's trust-region
    solver, from the usual start: 4-parameter `[max mos, min mos, mean, std]` (LIQE's initial values, expressed in
    z units), 5-parameter `[ptp mos, 1, mean, 0, mean mos]`. Scipy's default Levenberg-Marquardt stalls on a
    parameter that starts at 0; where both converge they agree to ~1e-8. If the fit fails, the raw predictions are
    returned with a warning and empty parameters, so callers can tell.
    """
    pred, mos = check_inputs(pred, mos)
    mean, std = pred.mean(), pred.std()
    z = (pred - mean) / std
    if fit == "logistic4":
        function, initial = logistic4, [mos.max(), mos.min(), 0.0, 1.0]
    elif fit == "logistic5":
        function, initial = logistic5, [np.ptp(mos), 1.0, 0.0, 0.0, mos.mean()]
    else:
        raise ValueError(f"fit must be one of {FITS[1:]}, got {fit!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(function, z, mos, p0=initial, method="trf", max_nfev=100_000)
    except (RuntimeError, ValueError) as error:
        warnings.warn(f"{fit} fit did not converge ({error}); PLCC/RMSE are reported on raw predictions", stacklevel=2)
        return pred, np.array([])
    mapped = function(z, *params)
    if not np.all(np.isfinite(mapped)) or np.ptp(mapped) == 0:
        warnings.warn(f"{fit} fit is degenerate; PLCC/RMSE are reported on raw predictions", stacklevel=2)
        return pred, np.array([])
    if fit == "logistic4":  # back to the scale of `pred`: (x - b3)/b4 in z units
        params = np.array([params[0], params[1], mean + std * params[2], std * params[3]])
    else:
        b1, b2, b3, b4, b5 = params
        params = np.array([b1, b2 / std, mean + std * b3, b4 / std, b5 - b4 * mean / std])
    return mapped, params


def srcc(pred: Any, mos: Any) -> float:
    """Spearman rank-order correlation."""
    pred, mos = check_inputs(pred, mos)
    return float(stats.spearmanr(pred, mos).statistic)


def krcc(pred: Any, mos: Any) -> float:
    """Kendall rank correlation (tau-b)."""
    pred, mos = check_inputs(pred, mos)
    return float(stats.kendalltau(pred, mos).statistic)


def plcc(pred: Any, mos: Any, fit: str | None = None) -> float:
    """Pearson linear correlation, on raw predictions (`fit=None`) or after a logistic fit."""
    pred, mos = check_inputs(pred, mos)
    if fit is not None:
        pred, _ = fit_logistic(pred, mos, fit)
    return float(stats.pearsonr(pred, mos).statistic)


def rmse(pred: Any, mos: Any, fit: str | None = None) -> float:
    """Root mean squared error on the label scale; meaningful for raw predictions only when both share a scale."""
    pred, mos = check_inputs(pred, mos)
    if fit is not None:
        pred, _ = fit_logistic(pred, mos, fit)
    return float(np.sqrt(np.mean((pred - mos) ** 2)))


def iqa_correlations(pred: Any, mos: Any, fit: str | None = "logistic4") -> dict[str, Any]:
    """All four metrics at once: `srcc`, `krcc`, `plcc`, `rmse` (fitted when `fit` is set, as LIQE reports) plus
    `plcc_raw`, `rmse_raw`, `fit` (what was actually applied; None if the fit failed), `fit_params` and `num_items`."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    pred, mos = check_inputs(pred, mos)
    result: dict[str, Any] = {
        "srcc": float(stats.spearmanr(pred, mos).statistic),
        "krcc": float(stats.kendalltau(pred, mos).statistic),
        "plcc_raw": float(stats.pearsonr(pred, mos).statistic),
        "rmse_raw": float(np.sqrt(np.mean((pred - mos) ** 2))),
        "num_items": int(len(pred)),
    }
    mapped, params = (pred, np.array([])) if fit is None else fit_logistic(pred, mos, fit)
    result["fit"] = fit if len(params) else None
    result["fit_params"] = [float(p) for p in params]
    result["plcc"] = float(stats.pearsonr(mapped, mos).statistic)
    result["rmse"] = float(np.sqrt(np.mean((mapped - mos) ** 2)))
    return result


def aggregate_runs(results: Sequence[dict[str, Any]], keys: Sequence[str] = ("srcc", "plcc", "krcc", "rmse")) -> dict:
    """Mean and std over several runs (e.g. LIQE's 10 splits): `{"srcc": {"mean", "std", "median"}, ...}`."""
    if not results:
        raise MetricInputError("no runs to aggregate")
    summary = {}
    for key in keys:
        values = np.array([r[key] for r in results], dtype=np.float64)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values))}
    summary["num_runs"] = len(results)
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Torch tensors, several processes
# ---------------------------------------------------------------------------------------------------------------


def _all_gather_lists(values: list[float], accelerator: Any = None) -> list[float]:
    """Concatenate `values` from every process, in rank order: through accelerate when an `Accelerator` is
    given, else through torch.distributed when a process group is initialised, else unchanged."""
    if accelerator is not None:
        from accelerate.utils import gather_object

        return list(gather_object(values)) if accelerator.num_processes > 1 else list(values)
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a core dependency
        return list(values)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    gathered: list[list[float] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, values)
    return [v for part in gathered for v in part]


class CorrelationMeter:
    """Accumulate (prediction, label) batches as torch tensors or arrays, then compute the metrics over every
    process. Each process must `update` with its own, disjoint items (e.g. a sharded dataloader); `compute` gathers
    them in rank order on every process.

        meter = CorrelationMeter(fit="logistic4")
        for batch in loader:
            meter.update(model(**batch).scores, batch["labels"])
        metrics = meter.compute(accelerator)   # same dict on every rank
    """

    def __init__(self, fit: str | None = "logistic4"):
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        self.fit = fit
        self.reset()

    def reset(self) -> None:
        self._pred: list[float] = []
        self._mos: list[float] = []

    def update(self, pred: Any, mos: Any) -> None:
        pred, mos = _as_array(pred, "pred"), _as_array(mos, "mos")
        if len(pred) != len(mos):
            raise MetricInputError(f"length mismatch in update: {len(pred)} predictions but {len(mos)} labels")
        self._pred.extend(pred.tolist())
        self._mos.extend(mos.tolist())

    def gather(self, accelerator: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, labels) of all processes."""
        pairs = _all_gather_lists(list(zip(self._pred, self._mos)), accelerator)
        pred = np.array([p for p, _ in pairs], dtype=np.float64)
        mos = np.array([m for _, m in pairs], dtype=np.float64)
        return pred, mos

    def compute(self, accelerator: Any = None) -> dict[str, Any]:
        return iqa_correlations(*self.gather(accelerator), fit=self.fit)
