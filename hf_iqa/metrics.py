"""Correlation metrics of IQA papers: SRCC, KRCC, PLCC and RMSE, on scipy.

Which paper tables use what (see the specs in shared/specs):

* **LIQE** (CVPR 2023, all tables; `BIQA_benchmark.py`): SRCC and KRCC on the raw predictions, **PLCC and RMSE after
  the 4-parameter logistic fit** (`fit="logistic4"`), mean ± std over 10 random splits.
* **pyiqa benchmarks, Dog-IQA** (Tables 1-2), and **QualiCLIP** (training-time validation): raw PLCC, no fit
  (`fit=None`).
* **UniQA** tables: SRCC/PLCC as printed by its pyiqa fork, i.e. raw PLCC (`fit=None`).
* The 5-parameter logistic (`fit="logistic5"`, VQEG FR-TV Phase I) is offered for FR-style reporting (LIVE, TID2013
  papers); none of the four reproduced methods uses it.

The fit follows ITU-T P.1401 / VQEG practice (`logistic_fit`): a monotone mapping, data-derived start and bounds, a
deterministic solver, and a soundness check. An unsound fit (a step, a non-monotone curve, a direction that
disagrees with SRCC, no convergence) is never reported as the PLCC: `iqa_correlations` then reports the raw PLCC and
sets `fit_flagged`. Confidence intervals and paired tests between models are in `hf_iqa.significance`.

SRCC/KRCC are rank statistics, unchanged by any monotone fit; KRCC is Kendall's tau-b (ties counted as scipy does).
Every result says whether PLCC/RMSE were fitted, because raw and fitted PLCC differ by several points.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from hf_iqa.metric_inputs import MetricInputError, as_array, check_inputs  # noqa: F401 (public here too)

FITS = (None, "logistic4", "logistic5")
SOUND = "sound"
MAX_STEEPNESS = 50  # the logistic's scale is at least 1/50 of the prediction range: no steps
MIN_TRANSITION_FRACTION = 0.05  # a 4-parameter curve rising (10 % to 90 %) on fewer images is a near-step
MIN_DISTINCT_FRACTION = 0.02  # a fit with fewer distinct values than 2 % of the images (min 3) is degenerate


def logistic4(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float) -> np.ndarray:
    """Monotone 4-parameter logistic: `beta2 + (beta1 - beta2) / (1 + exp(-(x - beta3) / |beta4|))`."""
    z = np.clip(-(x - beta3) / np.abs(beta4), -500, 500)
    return beta2 + (beta1 - beta2) / (1.0 + np.exp(z))


def logistic5(x: np.ndarray, beta1: float, beta2: float, beta3: float, beta4: float, beta5: float) -> np.ndarray:
    """VQEG 5-parameter logistic: `beta1 * (1/2 - 1/(1 + exp(beta2 (x - beta3)))) + beta4 x + beta5`."""
    z = np.clip(beta2 * (x - beta3), -500, 500)
    return beta1 * (0.5 - 1.0 / (1.0 + np.exp(z))) + beta4 * x + beta5


@dataclass(frozen=True)
class LogisticFit:
    """One logistic mapping: the mapped predictions, its parameters in the scale of `pred` (for `logistic4` /
    `logistic5`; empty when the solver failed) and `status`, "sound" or why the fit must not be reported."""

    mapped: np.ndarray
    params: np.ndarray
    status: str

    @property
    def sound(self) -> bool:
        return self.status == SOUND


def _fit_setup(z: np.ndarray, mos: np.ndarray, fit: str, direction: float):
    """(function, start, lower, upper, index of the slope parameter) in z units, all derived from the data: the
    levels within one label range beyond the labels, the centre within the predictions, and the slope bounded so
    that the curve cannot turn into a step (transition narrower than 1/MAX_STEEPNESS of the prediction range)."""
    low, high, span, width = mos.min(), mos.max(), np.ptp(mos), np.ptp(z)
    min_scale = width / MAX_STEEPNESS
    if fit == "logistic4":
        start = [high, low, float(np.median(z)), 1.0] if direction >= 0 else [low, high, float(np.median(z)), 1.0]
        lower = [low - span, low - span, z.min(), min_scale]
        upper = [high + span, high + span, z.max(), 10 * width]
        return logistic4, start, lower, upper, 3
    if fit == "logistic5":
        sign = 1.0 if direction >= 0 else -1.0
        start = [span, sign, float(np.median(z)), 0.0, float(mos.mean())]
        lower = [-2 * span, -1 / min_scale, z.min(), -span, low - span]
        upper = [2 * span, 1 / min_scale, z.max(), span, high + span]
        return logistic5, start, lower, upper, 1
    raise ValueError(f"fit must be one of {FITS[1:]}, got {fit!r}")


def _soundness(z, mos, mapped, params, lower, upper, slope, direction) -> str:
    """Return "sound", or the first reason why the fitted curve is not a usable monotone mapping."""
    bound = lower[slope] if slope == 3 else upper[slope]
    if np.isclose(abs(params[slope]), abs(bound), rtol=1e-3, atol=0):
        return "degenerate: the slope reached its bound (the fit tends to a step)"
    distinct = len(np.unique(np.round((mapped - mos.min()) / np.ptp(mos), 6)))
    needed = max(3, min(len(np.unique(z)), math.ceil(MIN_DISTINCT_FRACTION * len(z))))
    if distinct < needed:
        return f"degenerate: {distinct} distinct fitted values for {len(z)} images"
    if slope == 3:
        low, high = sorted(params[:2])
        inside = (mapped > low + 0.1 * (high - low)) & (mapped < high - 0.1 * (high - low))
        if inside.mean() < MIN_TRANSITION_FRACTION:
            return f"degenerate: the curve rises on {inside.mean():.1%} of the images only (a near-step)"
    curve = mapped[np.argsort(z, kind="stable")]
    steps = np.diff(curve)
    tolerance = 1e-9 * np.ptp(mos)
    if (steps > tolerance).any() and (steps < -tolerance).any():
        return "non-monotonic fitted curve"
    if direction != 0 and np.sign(curve[-1] - curve[0]) != np.sign(direction):
        return "fitted direction disagrees with SRCC"
    return SOUND


def logistic_fit(pred: Any, mos: Any, fit: str = "logistic4") -> LogisticFit:
    """Fit the `fit` mapping of predictions onto the label scale (ITU-T P.1401 / VQEG practice), deterministically,
    and check that the result is a sound monotone mapping.

    **Why the 4-parameter logistic is the default.** It is monotone by construction (its slope `|beta4|` cannot change
    sign), which is what P.1401 requires of the mapping before PLCC/RMSE, and it is the fit LIQE reports. VQEG's
    5-parameter form adds a linear term that lets the curve turn back, and one more parameter to over-fit; it stays
    available for FR-style tables and is checked for monotonicity here.

    The solver is scipy's bounded trust-region least squares on z-scored predictions (tiny and huge score ranges
    converge alike) from one data-derived start (levels at the label extremes ordered as SRCC says, centre at the
    median prediction, unit slope): no random restarts, so the same inputs give bit-identical parameters. Bounds
    keep the levels within one label range of the labels, the centre within the predictions and the transition at
    least 1/MAX_STEEPNESS of the prediction range wide. `status` is "sound" unless the solver failed, the slope
    ended at that bound (the fit wants a step: near-random predictions do this), fewer distinct fitted values than
    MIN_DISTINCT_FRACTION of the images remain, the curve is not monotone, or its direction disagrees with SRCC.
    """
    pred, mos = check_inputs(pred, mos)
    mean, std = pred.mean(), pred.std()
    z = (pred - mean) / std
    direction = float(stats.spearmanr(pred, mos).statistic)
    function, start, lower, upper, slope = _fit_setup(z, mos, fit, direction)
    start = np.clip(start, lower, upper)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(
                function, z, mos, p0=start, bounds=(lower, upper), method="trf", max_nfev=10_000
            )
    except (RuntimeError, ValueError) as error:
        return LogisticFit(pred, np.array([]), f"failed to converge ({error})")
    mapped = function(z, *params)
    if not np.all(np.isfinite(mapped)):
        return LogisticFit(pred, np.array([]), "failed to converge (non-finite fitted values)")
    status = _soundness(z, mos, mapped, params, lower, upper, slope, direction)
    if fit == "logistic4":  # back to the scale of `pred`: (x - b3)/b4 in z units
        params = np.array([params[0], params[1], mean + std * params[2], std * params[3]])
    else:
        b1, b2, b3, b4, b5 = params
        params = np.array([b1, b2 / std, mean + std * b3, b4 / std, b5 - b4 * mean / std])
    return LogisticFit(mapped, params, status)


def fit_logistic(pred: Any, mos: Any, fit: str = "logistic4") -> tuple[np.ndarray, np.ndarray]:
    """(mapped predictions, parameters in the scale of `pred`) of a sound `logistic_fit`; for an unsound one, the raw
    predictions and empty parameters, with a warning saying why, so callers can tell."""
    result = logistic_fit(pred, mos, fit)
    if result.sound:
        return result.mapped, result.params
    warnings.warn(f"{fit} fit not used ({result.status}); PLCC/RMSE are on raw predictions", stacklevel=2)
    return check_inputs(pred, mos)[0], np.array([])


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


def iqa_correlations(
    pred: Any, mos: Any, fit: str | None = "logistic4", *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """All metrics at once, JSON-ready and bit-identical for identical inputs.

    `srcc`, `krcc`; `plcc_raw`, `rmse_raw` (no mapping); `plcc_fitted`, `rmse_fitted` (after the `fit` mapping, None
    without one or when the solver failed); `fit_requested`; `fit_status` ("sound", "not requested" or why the fit
    is unusable, see `logistic_fit`); `fit` (the mapping behind `plcc`/`rmse`: `fit_requested` when sound, else
    None); `fit_flagged` (a fit was asked for but is unsound, so `plcc`/`rmse` are the raw values); `fit_params` (of
    the attempted fit, for diagnosis); `plcc`, `rmse` (fitted only when sound, else raw); `num_items`. With
    `resamples` > 0 also `srcc_ci`, `plcc_ci` (of the reported `plcc`), `krcc_ci` and `ci` (how: see
    `hf_iqa.significance`)."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    pred, mos = check_inputs(pred, mos)
    result: dict[str, Any] = {
        "srcc": float(stats.spearmanr(pred, mos).statistic),
        "krcc": float(stats.kendalltau(pred, mos).statistic),
        "plcc_raw": float(stats.pearsonr(pred, mos).statistic),
        "rmse_raw": float(np.sqrt(np.mean((pred - mos) ** 2))),
        "plcc_fitted": None,
        "rmse_fitted": None,
        "num_items": int(len(pred)),
        "fit_requested": fit,
        "fit_status": "not requested",
        "fit_params": [],
    }
    mapped = pred
    if fit is not None:
        fitted = logistic_fit(pred, mos, fit)
        result["fit_status"], result["fit_params"] = fitted.status, [float(p) for p in fitted.params]
        if len(fitted.params):
            result["plcc_fitted"] = float(stats.pearsonr(fitted.mapped, mos).statistic)
            result["rmse_fitted"] = float(np.sqrt(np.mean((fitted.mapped - mos) ** 2)))
        if fitted.sound:
            mapped = fitted.mapped
        else:
            warnings.warn(f"{fit} fit not used ({fitted.status}); PLCC/RMSE are raw", stacklevel=2)
    sound = result["fit_status"] == SOUND
    result["fit"] = fit if sound else None
    result["fit_flagged"] = fit is not None and not sound
    result["plcc"] = result["plcc_fitted"] if sound else result["plcc_raw"]
    result["rmse"] = result["rmse_fitted"] if sound else result["rmse_raw"]
    if resamples > 0:
        from hf_iqa.significance import confidence_intervals

        result |= confidence_intervals(pred, mos, mapped=mapped, level=level, resamples=resamples, seed=seed)
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

    def __init__(self, fit: str | None = "logistic4", resamples: int = 0):
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        self.fit, self.resamples = fit, resamples
        self.reset()

    def reset(self) -> None:
        self._pred: list[float] = []
        self._mos: list[float] = []

    def update(self, pred: Any, mos: Any) -> None:
        pred, mos = as_array(pred, "pred"), as_array(mos, "mos")
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
        return iqa_correlations(*self.gather(accelerator), fit=self.fit, resamples=self.resamples)
