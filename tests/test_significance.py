"""hf_iqa.significance: seeded intervals that cover the population correlation, paired tests that tell models apart."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hf_iqa import significance


def bivariate_normal(rng: np.random.Generator, n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal(n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.standard_normal(n)


def test_intervals_are_seeded():
    x, y = bivariate_normal(np.random.default_rng(0), 200, 0.5)
    first = significance.confidence_intervals(x, y, resamples=200, seed=4)
    assert first == significance.confidence_intervals(x, y, resamples=200, seed=4)
    other = significance.confidence_intervals(x, y, resamples=200, seed=5)
    assert other["srcc_ci"] != first["srcc_ci"] and other["krcc_ci"] == first["krcc_ci"]  # KRCC: Fisher z


def test_intervals_cover_the_population_correlation_at_about_the_nominal_rate():
    """Bivariate normal with rho = 0.6: Pearson rho, Spearman 6/pi asin(rho/2), Kendall 2/pi asin(rho)."""
    rho = 0.6
    truth = {"plcc": rho, "srcc": 6 / math.pi * math.asin(rho / 2), "krcc": 2 / math.pi * math.asin(rho)}
    rng = np.random.default_rng(2026)
    hits = {key: 0 for key in truth}
    draws = 200
    for seed in range(draws):
        x, y = bivariate_normal(rng, 80, rho)
        intervals = significance.confidence_intervals(x, y, resamples=300, seed=seed)
        for key, value in truth.items():
            low, high = intervals[f"{key}_ci"]
            hits[key] += low <= value <= high
    for key, count in hits.items():
        assert 0.88 <= count / draws <= 0.99, (key, count / draws)


def test_paired_test_tells_a_better_model_from_noise():
    rng = np.random.default_rng(1)
    mos = rng.uniform(1, 5, 500)
    good = mos + rng.normal(0, 1.0, 500)
    result = significance.paired_bootstrap(
        {"good": good, "good+noise": good + rng.normal(0, 1e-4, 500), "better": mos + rng.normal(0, 0.4, 500)},
        mos,
        resamples=400,
    )
    pairs = {(p["a"], p["b"]): p for p in result["pairs"]}
    assert not pairs[("good", "good+noise")]["significant"] and pairs[("good", "good+noise")]["p_value"] > 0.05
    assert pairs[("good", "better")]["significant"] and pairs[("good", "better")]["difference"] < 0
    assert pairs[("good+noise", "better")]["significant"] and pairs[("good+noise", "better")]["p_value"] < 0.05
    low, high = pairs[("good", "better")]["ci"]
    assert low < pairs[("good", "better")]["difference"] < high < 0
    two = significance.compare_predictions(good, mos + rng.normal(0, 0.4, 500), mos, metric="plcc", resamples=400)
    assert two["significant"] and two["metric"] == "plcc"


def test_paired_test_refuses_a_single_model_and_unknown_metrics():
    with pytest.raises(ValueError, match="at least two models"):
        significance.paired_bootstrap({"a": [1, 2, 3]}, [1, 2, 3])
    with pytest.raises(ValueError, match="metric must be one of"):
        significance.paired_bootstrap({"a": [1, 2, 3], "b": [3, 2, 1]}, [1, 2, 3], metric="krcc")


def test_tiny_samples_give_no_interval_rather_than_nan():
    intervals = significance.confidence_intervals([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], resamples=50)
    assert intervals["krcc_ci"] is None and all(
        v is None or len(v) == 2 for v in intervals.values() if v != intervals["ci"]
    )
    assert "NaN" not in json.dumps(intervals)
