"""hf_iqa.reports: tables say which PLCC they show, carry intervals, and render the paired-significance matrix."""

from __future__ import annotations

import warnings

import numpy as np

from hf_iqa import reports
from hf_iqa.metrics import iqa_correlations


def record(pred, mos, model="model", **extra) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = iqa_correlations(pred, mos, fit="logistic4", resamples=200)
    return {"model": model, "dataset": "folder", "dataset_name": "mine", "split": "all", "num_images": len(mos),
            "num_errors": 0, **metrics, **extra}  # fmt: skip


def test_flagged_fit_shows_raw_plcc_with_a_visible_mark():
    rng = np.random.default_rng(2)
    mos = rng.uniform(1, 5, 500)
    result = record(0.5 + 1e-3 * rng.standard_normal(500), mos, model="random")
    assert result["fit_flagged"]
    table = reports.markdown_table([result])
    row = next(line for line in table.splitlines() if line.startswith("| random"))
    plcc_cell = row.split("|")[7]
    assert plcc_cell.strip().startswith(f"{result['plcc_raw']:.4f}") and plcc_cell.strip().endswith("†")
    assert f"{result['plcc_fitted']:.4f}" not in table
    assert "† the logistic fit was unsound" in table and "after a 4-parameter logistic fit" in table
    assert " †" in reports.combined_table([result]).split("## All metrics")[0]


def test_sound_fit_row_shows_fitted_plcc_and_intervals():
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 300)
    result = record(mos + rng.normal(0, 0.8, 300), mos, model="good")
    assert result["fit_status"] == "sound"
    table = reports.markdown_table([result])
    low, high = result["srcc_ci"]
    assert f"{result['srcc']:.4f} [{low:.3f}, {high:.3f}]" in table and "†" not in table
    assert f"{result['plcc_fitted']:.4f} [" in table and "Brackets: 95% confidence intervals" in table


def test_significance_matrix_marks_the_significant_pair():
    rng = np.random.default_rng(1)
    mos = rng.uniform(1, 5, 400)
    good = mos + rng.normal(0, 1.0, 400)
    predictions = {"good": good, "same": good + rng.normal(0, 1e-4, 400), "better": mos + rng.normal(0, 0.3, 400)}
    comparison, text = reports.significance_section(predictions, mos, resamples=300)
    assert comparison["models"] == ["good", "same", "better"]
    rows = {
        line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line
    }
    good_row = [cell.strip() for cell in rows["good"].split("|")[2:-1]]
    assert good_row[0] == "·" and not good_row[1].startswith("**") and good_row[2].startswith("**-")
    better_row = [cell.strip() for cell in rows["better"].split("|")[2:-1]]
    assert better_row[0].startswith("**+")  # the same pair from the other side
    assert "row minus column" in text and "400 images" in text
