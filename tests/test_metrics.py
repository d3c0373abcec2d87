"""hf_iqa.metrics against independent textbook implementations (written here, not scipy) and known fits."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from hf_iqa import metrics
from hf_iqa.metrics import MetricInputError


def average_ranks(values) -> np.ndarray:
    """1-based ranks, ties sharing the mean rank (what Spearman's rho uses)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return np.array(ranks)


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum()))


def kendall_tau_b(x, y) -> float:
    """Brute force over all pairs: (concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y))."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if sx == 0 and sy == 0:
            continue
        if sx == 0:
            ties_x += 1
        elif sy == 0:
            ties_y += 1
        elif sx == sy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt(
        (concordant + discordant + ties_x) * (concordant + discordant + ties_y)
    )


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    mos = np.round(rng.uniform(1, 5, 40), 1)  # rounded: ties in the labels
    pred = np.round(0.3 * mos + rng.normal(0, 0.3, 40), 2)
    pred[:4] = pred[4]  # ties in the predictions
    return pred, mos


def test_correlations_match_textbook_definitions(scores):
    pred, mos = scores
    assert metrics.srcc(pred, mos) == pytest.approx(pearson(average_ranks(pred), average_ranks(mos)), abs=1e-12)
    assert metrics.plcc(pred, mos) == pytest.approx(pearson(pred, mos), abs=1e-12)
    assert metrics.krcc(pred, mos) == pytest.approx(kendall_tau_b(pred, mos), abs=1e-12)
    assert metrics.rmse(pred, mos) == pytest.approx(math.sqrt(np.mean((pred - mos) ** 2)), abs=1e-12)
    result = metrics.iqa_correlations(pred, mos, fit=None)
    assert result["plcc"] == result["plcc_raw"] == pytest.approx(pearson(pred, mos), abs=1e-12)
    assert result["fit"] is None and result["num_items"] == 40


@pytest.mark.parametrize(("offset", "scale"), [(0.0, 1.0), (0.5, 1e-3), (1000.0, 100.0)])
def test_logistic4_fit_recovers_a_known_mapping(offset, scale):
    """Zero-centred scores (LM stalls there), tiny score spreads (sigmoid outputs) and large ones all converge."""
    x = np.linspace(-3, 3, 60)
    true = (4.0, 1.0, 0.5, 0.7)  # beta1 (top), beta2 (bottom), beta3 (centre), beta4 (slope)
    mos = true[1] + (true[0] - true[1]) / (1 + np.exp(-(x - true[2]) / true[3]))
    pred = offset + scale * x
    result = metrics.iqa_correlations(pred, mos, fit="logistic4")
    assert result["fit"] == "logistic4"
    expected = (true[0], true[1], offset + scale * true[2], scale * true[3])
    np.testing.assert_allclose(result["fit_params"][:3], expected[:3], rtol=1e-5, atol=1e-5 * scale)
    assert abs(result["fit_params"][3]) == pytest.approx(expected[3], rel=1e-4)
    assert result["plcc"] == pytest.approx(1.0, abs=1e-9) and result["rmse"] < 1e-6
    assert result["plcc_raw"] < 0.99  # the fit is what makes it linear
    assert result["srcc"] == pytest.approx(1.0) and result["krcc"] == pytest.approx(1.0)


def test_logistic5_fit_recovers_a_known_mapping():
    pred = np.linspace(0, 10, 80)
    true = (3.0, 1.2, 5.0, 0.05, 2.0)
    mos = true[0] * (0.5 - 1 / (1 + np.exp(true[1] * (pred - true[2])))) + true[3] * pred + true[4]
    mapped, params = metrics.fit_logistic(pred, mos, "logistic5")
    np.testing.assert_allclose(mapped, mos, atol=1e-6)
    np.testing.assert_allclose(metrics.logistic5(pred, *params), mos, atol=1e-6)  # parameters in the input scale
    assert metrics.plcc(pred, mos, fit="logistic5") == pytest.approx(1.0, abs=1e-9)


def test_failed_fit_falls_back_to_raw_with_a_warning(scores, monkeypatch):
    pred, mos = scores

    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", no_convergence)
    with pytest.warns(UserWarning, match="failed to converge"):
        result = metrics.iqa_correlations(pred, mos, fit="logistic4")
    assert result["fit"] is None and result["plcc"] == result["plcc_raw"]


@pytest.mark.parametrize(
    ("pred", "mos", "message"),
    [
        ([1, 2, float("nan"), 4], [1, 2, 3, 4], r"`pred` contains 1 NaN/inf value\(s\), e.g. at positions \[2\]"),
        ([1, 2, 3, 4], [1, 2, float("inf"), 4], "`mos` contains 1 NaN/inf"),
        ([2, 2, 2, 2], [1, 2, 3, 4], "`pred` is constant"),
        ([1, 2, 3], [1, 2, 3, 4], "length mismatch: 3 predictions but 4 labels"),
        ([1, 2], [1, 2], "need at least 3"),
        ([[1, 2], [3, 4]], [1, 2, 3, 4], "must be one-dimensional"),
        (["a", "b", "c"], [1, 2, 3], "must be a sequence of numbers"),
    ],
)
def test_bad_inputs_raise_clear_errors(pred, mos, message):
    with pytest.raises(MetricInputError, match=message):
        metrics.iqa_correlations(pred, mos)


def test_torch_tensors_and_meter(scores):
    pred, mos = scores
    expected = metrics.iqa_correlations(pred, mos, fit="logistic4")
    from_tensors = metrics.iqa_correlations(torch.tensor(pred), torch.tensor(mos), fit="logistic4")
    assert from_tensors["srcc"] == pytest.approx(expected["srcc"], abs=1e-12)
    assert metrics.srcc(torch.tensor(pred, dtype=torch.bfloat16), mos) > 0.5  # low precision input is upcast

    meter = metrics.CorrelationMeter(fit="logistic4")
    for start in range(0, 40, 7):  # batches, as in an evaluation loop
        meter.update(torch.tensor(pred[start : start + 7]), torch.tensor(mos[start : start + 7]))
    result = meter.compute()
    for key in ("srcc", "krcc", "plcc", "rmse"):
        assert result[key] == pytest.approx(expected[key], abs=1e-9)
    meter.reset()
    with pytest.raises(MetricInputError, match="length mismatch in update"):
        meter.update(torch.zeros(3), torch.zeros(2))


def test_aggregate_runs_mean_and_std():
    runs = [{"srcc": v, "plcc": v + 0.01, "krcc": v - 0.1, "rmse": 0.3} for v in (0.90, 0.92, 0.94)]
    summary = metrics.aggregate_runs(runs)
    assert summary["srcc"]["mean"] == pytest.approx(0.92)
    assert summary["srcc"]["std"] == pytest.approx(np.std([0.90, 0.92, 0.94]))
    assert summary["num_runs"] == 3


def test_local_evaluate_module_offline(scores):
    evaluate = pytest.importorskip(
        "evaluate", reason="`evaluate` is an optional extra (pip install evaluate); hf_iqa.metrics is the main API"
    )
    from hf_iqa.evaluate_metric import IQA_CORRELATION_PATH

    pred, mos = scores
    metric = evaluate.load(IQA_CORRELATION_PATH)
    metric.add_batch(predictions=pred[:25], references=mos[:25])
    metric.add_batch(predictions=pred[25:], references=mos[25:])
    result = metric.compute(fit="logistic4")
    expected = metrics.iqa_correlations(pred, mos, fit="logistic4")
    for key in ("srcc", "krcc", "plcc", "rmse", "srcc_ci", "plcc_ci", "krcc_ci"):
        assert result[key] == pytest.approx(expected[key], abs=1e-9)
    compared = metric.compute(predictions=pred, references=mos, resamples=200, compare_with=mos + 0.01 * pred)
    assert compared["paired_test"]["significant"] and compared["paired_test"]["difference"] < 0


# ---------------------------------------------------------------------------------------------------------------
# ITU-T P.1401 fit: sound or flagged, deterministic
# ---------------------------------------------------------------------------------------------------------------
def near_random(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Predictions that are tiny noise around a constant, unrelated to the labels (the issue's near-random model)."""
    rng = np.random.default_rng(seed)
    mos = rng.uniform(1, 5, n)
    return 0.5 + 1e-3 * rng.standard_normal(n), mos


@pytest.mark.parametrize("seed", [2, 3, 7, 10])
def test_near_random_predictions_give_a_flagged_fit_and_raw_plcc(seed):
    """An unbounded fit of these data converges to a step (two plateaus, slope ~1e-8) and 'fits' a PLCC several
    times the raw one; here the fit is flagged and the reported PLCC is the raw one."""
    pred, mos = near_random(seed)
    with pytest.warns(UserWarning, match="fit not used"):
        result = metrics.iqa_correlations(pred, mos, fit="logistic4", resamples=0)
    assert result["fit_flagged"] and result["fit"] is None and result["fit_status"] != "sound"
    assert result["plcc"] == result["plcc_raw"] and result["rmse"] == result["rmse_raw"]
    assert result["plcc_fitted"] is not None and abs(result["plcc_fitted"]) > abs(result["plcc_raw"]) + 0.02


def test_sound_fit_recovers_a_noisy_logistic_relation():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 400)
    true = (80.0, 20.0, 0.5, 0.1)
    mos = metrics.logistic4(x, *true) + rng.normal(0, 3, 400)
    result = metrics.iqa_correlations(x, mos, fit="logistic4", resamples=0)
    assert result["fit_status"] == "sound" and not result["fit_flagged"] and result["fit"] == "logistic4"
    np.testing.assert_allclose(result["fit_params"], true, rtol=0.05, atol=0.01)
    assert result["plcc"] == result["plcc_fitted"] > result["plcc_raw"]


def test_non_monotonic_five_parameter_fit_is_flagged():
    """A 5-parameter fit whose linear term bends the curve back inside the data is not a monotone mapping."""
    x = np.linspace(0, 1, 200)
    mos = 10 * x - 12 * np.clip(x - 0.6, 0, None) ** 0.5 + 0.01 * np.sin(40 * x)  # rises, then falls
    result = metrics.logistic_fit(x, mos, "logistic5")
    assert result.status in ("non-monotonic fitted curve", "fitted direction disagrees with SRCC") or "degenerate" in (
        result.status
    )


def test_identical_inputs_give_byte_identical_records():
    rng = np.random.default_rng(3)
    mos = rng.uniform(1, 5, 300)
    pred = mos + rng.normal(0, 1.5, 300)
    first = json.dumps(metrics.iqa_correlations(pred, mos, fit="logistic4"))
    second = json.dumps(metrics.iqa_correlations(pred.copy(), mos.copy(), fit="logistic4"))
    assert first == second
    assert json.loads(first)["srcc_ci"][0] < json.loads(first)["srcc"] < json.loads(first)["srcc_ci"][1]
