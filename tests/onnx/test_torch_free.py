"""Scoring an export where torch cannot be imported: `hf_iqa.pipeline`, the scorer and `hf-iqa score` run in a
subprocess with `sys.modules["torch"] = None` and give the PyTorch numbers. (CI also builds a venv without torch
at all: .ci/run, stage "onnx-without-torch".)"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hf_iqa.onnx.export import max_difference, torch_results
from tests.testing_utils import random_image

BLOCK_TORCH = "import sys\nsys.modules['torch'] = None  # import torch -> ImportError\n"


def run_without_torch(code: str, timeout: float = 600) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.getcwd())
    process = subprocess.Popen(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    if process.returncode != 0:
        raise AssertionError(f"subprocess failed ({process.returncode}):\n{stderr[-4000:]}")
    assert "could not be imported" not in stderr, stderr[-2000:]  # no model folder was imported (needs torch)
    return stdout


def test_uniqa_crop_positions_without_torch_equal_torchs():
    """The shim's Generator/randint reproduce torch's seeded draws, so UniQA's random crops are the same."""
    from hf_iqa.models.uniqa import image_processing_uniqa as with_torch
    from hf_iqa.onnx.processors import _load_without_torch

    shimmed = _load_without_torch("uniqa", "hf_iqa.models.uniqa.image_processing_uniqa")
    assert shimmed.torch is not with_torch.torch
    for seed in (0, 1, 42, 2**31 + 7):
        for height, width in ((224, 224), (500, 375), (1024, 4000), (231, 300)):
            expected = with_torch.crop_positions(height, width, 224, 10, "random", seed)
            assert shimmed.crop_positions(height, width, 224, 10, "random", seed) == expected


@pytest.mark.parametrize("family", ["liqe", "qualiclip", "uniqa"])
def test_pipeline_and_scorer_without_torch(exported, family, tmp_path):
    model, processor, folder = exported[family]
    images = [random_image(w, h, seed=i) for i, (w, h) in enumerate([(90, 70), (64, 64), (130, 97)])]
    paths = []
    for index, image in enumerate(images):
        paths.append(str(tmp_path / f"{index}.png"))
        image.save(paths[-1])
    output = run_without_torch(f"""
        import json
        import hf_iqa
        from hf_iqa.onnx import OnnxScorer
        pipe = hf_iqa.pipeline(model={str(folder)!r})
        scorer = OnnxScorer({str(folder)!r})
        paths = {paths!r}
        assert sys.modules['torch'] is None
        print(json.dumps({{"pipeline": pipe(paths), "scorer": scorer.predict([scorer.prepare(p) for p in paths])}}))
    """)
    got = json.loads(output)
    expected = torch_results(model, processor, images)
    assert max_difference(expected, got["pipeline"]) <= 1e-4
    assert max_difference(expected, got["scorer"]) <= 1e-4


def test_cli_scores_a_folder_without_torch(exported, tmp_path):
    model, processor, folder = exported["liqe"]
    photos = tmp_path / "photos"
    photos.mkdir()
    images = [random_image(100, 80, seed=1), random_image(70, 120, seed=2)]
    for index, image in enumerate(images):
        image.save(photos / f"{index}.jpg", quality=95)
    (photos / "broken.jpg").write_bytes(b"not an image")
    csv_path = tmp_path / "scores.csv"
    run_without_torch(f"""
        from hf_iqa.cli import main
        code = main(["score", "--model", {str(folder)!r}, {str(photos)!r}, "-o", {str(csv_path)!r}, "--no-progress"])
        assert sys.modules['torch'] is None
        sys.exit(0 if code in (0, 1) else code)
    """)
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in csv.DictReader(csv_path.open())}
    assert rows["broken.jpg"]["error"] and not rows["broken.jpg"]["score"]
    from PIL import Image

    decoded = [Image.open(photos / f"{i}.jpg", formats=["JPEG"]).convert("RGB") for i in range(2)]
    for index, expected in enumerate(torch_results(model, processor, decoded)):
        assert abs(float(rows[f"{index}.jpg"]["score"]) - expected["score"]) <= 1e-4
