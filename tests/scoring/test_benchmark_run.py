"""`hf-iqa benchmark` on the scoring engine (issue 25 item 1): it runs through `scoring.run`, the run of
`hf-iqa score`, and a benchmark SIGKILLed half-way resumes from that run's output, each image once."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time

import numpy as np

from hf_iqa import scoring
from tests import test_evaluation as evaluation_tests
from tests.test_engine import driver_command, subprocess_env

workspace = evaluation_tests.workspace  # the synthetic datasets and tiny models of tests/test_evaluation.py


def test_benchmark_runs_through_the_run_of_score(workspace, tmp_path, monkeypatch):
    from hf_iqa.cli import main

    calls = []
    real = scoring.run

    def counted(inputs, scorer, output, options, *rest):
        calls.append((inputs.key_field, type(output).__name__, options.command))
        return real(inputs, scorer, output, options, *rest)

    monkeypatch.setattr(scoring, "run", counted)
    assert main(evaluation_tests.folder_args(workspace, tmp_path / "out")) == 0
    assert calls == [("image_id", "Output", "benchmark")]


def test_benchmark_killed_then_resumed_scores_each_image_once(workspace, tmp_path):
    from hf_iqa.cli import main

    reference = tmp_path / "reference"
    assert main(evaluation_tests.folder_args(workspace, reference)) == 0
    output = tmp_path / "out"
    scores = output / "model_a" / "mine-all" / "scores.csv"
    command = [*driver_command(tmp_path), *evaluation_tests.folder_args(workspace, output), "--num-workers", "1"]
    process = subprocess.Popen(command, env=subprocess_env(TINY_DELAY="0.5"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if scores.exists() and scores.read_text().count("\n") >= 4:  # header + 3 rows
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    with open(scores, newline="") as handle:
        first = len(list(csv.DictReader(handle)))
    assert 3 <= first < 14, "the benchmark was not killed half-way"
    assert main(evaluation_tests.folder_args(workspace, output)) == 0
    ids, predictions = evaluation_tests.read_predictions(output / "model_a" / "mine-all" / "predictions.csv")
    reference_ids, expected = evaluation_tests.read_predictions(reference / "model_a" / "mine-all" / "predictions.csv")
    assert ids == reference_ids and len(set(ids)) == 14
    np.testing.assert_allclose(predictions, expected, atol=1e-6)
    with open(scores, newline="") as handle:
        assert sorted(int(r["key"]) for r in csv.DictReader(handle)) == list(range(14))
