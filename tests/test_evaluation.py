"""hf_iqa.evaluation end to end with a tiny random contract-conforming model on synthetic datasets: outputs,
combined tables, model-card update, interruption + resume, and a two-process torchrun (gloo) run."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from transformers.utils import ModelOutput

from tests.testing_utils import REPO_ROOT

pytest.importorskip("datasets", reason="the benchmark reads datasets through hf_iqa.data: needs the [data] extra")

TESTS_DIR = REPO_ROOT  # sys.path entry for drivers
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*the official release has.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:matplotlib is not installed:UserWarning"),
]


# ---------------------------------------------------------------------------------------------------------------
# A tiny model that follows the hf_iqa output contract (defined here: the real models are written elsewhere)
# ---------------------------------------------------------------------------------------------------------------


class TinyIqaConfig(PreTrainedConfig):
    model_type = "hf_iqa_tiny_benchmark_test"

    def __init__(self, hidden_size: int = 8, score_range=(0.0, 1.0), higher_is_better: bool = True, **kwargs):
        self.hidden_size = hidden_size
        self.score_range = list(score_range)
        self.higher_is_better = higher_is_better
        self.output_labels = {}
        super().__init__(**kwargs)


@dataclass
class TinyIqaOutput(ModelOutput):
    scores: torch.FloatTensor | None = None


class TinyIqaModel(PreTrainedModel):
    config_class = TinyIqaConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TinyIqaConfig):
        super().__init__(config)
        self.project = torch.nn.Linear(3 * 8 * 8, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> TinyIqaOutput:
        hidden = torch.tanh(self.project(pixel_values.flatten(1)))
        return TinyIqaOutput(scores=torch.sigmoid(self.head(hidden))[:, 0].float())


class TinyIqaImageProcessor(PilBackend):
    model_input_names = ["pixel_values"]
    do_resize = True
    size = {"height": 8, "width": 8}
    resample = PILImageResampling.BILINEAR
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]


def register_tiny_model() -> None:
    AutoConfig.register(TinyIqaConfig.model_type, TinyIqaConfig, exist_ok=True)
    AutoModel.register(TinyIqaConfig, TinyIqaModel, exist_ok=True)
    AutoImageProcessor.register(TinyIqaConfig, image_processor_classes={"pil": TinyIqaImageProcessor}, exist_ok=True)


def save_tiny_model(folder: Path, seed: int) -> str:
    register_tiny_model()
    torch.manual_seed(seed)
    TinyIqaModel(TinyIqaConfig()).save_pretrained(folder)
    TinyIqaImageProcessor().save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# Tiny test model\n\nA random model.\n")
    return str(folder)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic datasets
# ---------------------------------------------------------------------------------------------------------------


def save_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.normal(0, 40, (12, 16, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def make_folder_dataset(root: Path, count: int = 14) -> None:
    rows = []
    for i in range(count):
        save_image(root / "images" / f"img{i:02d}.png", i)
        rows.append([f"images/img{i:02d}.png", round(1 + 4 * ((i * 5) % count) / (count - 1), 3)])
    with open(root / "scores.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["image", "mos"], *rows])


def make_koniq_dataset(root: Path, count: int = 8) -> None:
    rows = []
    for i in range(count):
        save_image(root / "1024x768" / f"{500 + i}.jpg", 100 + i)
        rows.append([f"{500 + i}.jpg", 0.2, 0.2, 0.2, 0.2, 0.2, 100, 10 + 9 * ((i * 3) % count), 0.5, "test"])
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]
    with open(root / "koniq10k_distributions_sets.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("benchmark")
    make_folder_dataset(base / "mine")
    make_koniq_dataset(base / "koniq10k")
    return {
        "base": base,
        "model_a": save_tiny_model(base / "model_a", seed=1),
        "model_b": save_tiny_model(base / "model_b", seed=2),
        "cache": str(base / "hf_cache"),
    }


def read_predictions(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["image_id"] for r in rows], np.array([float(r["prediction"]) for r in rows])


def direct_scores(model_dir: str, image_paths: list[str]) -> np.ndarray:
    """Scores computed one image at a time without the benchmark runner."""
    from hf_iqa.io import load_image

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        return np.array([model(**processor(load_image(p), return_tensors="pt")).scores.item() for p in image_paths])


def folder_args(workspace, output_dir: Path, *extra: str) -> list[str]:
    return [
        "benchmark", "--model", workspace["model_a"], "--dataset", "folder",
        "--data-root", str(workspace["base"] / "mine"), "--split", "all", "--batch-size", "3",
        "--output-dir", str(output_dir), "--no-progress", *extra,
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------


def test_models_by_datasets_end_to_end(workspace, tmp_path):
    from hf_iqa.evaluation import evaluate_on_datasets
    from hf_iqa.metrics import iqa_correlations

    output = tmp_path / "out"
    with pytest.warns(UserWarning) if _no_matplotlib() else contextlib.nullcontext():
        results = evaluate_on_datasets(
            [workspace["model_a"], workspace["model_b"]],
            ["folder", "koniq10k"],
            [str(workspace["base"] / "mine"), str(workspace["base"] / "koniq10k")],
            split="all",
            batch_size=4,
            output_dir=output,
            progress=False,
            split_options={"cache_dir": workspace["cache"]},
        )
    assert [(r["model"], r["dataset"]) for r in results] == [
        (workspace["model_a"], "folder"), (workspace["model_a"], "koniq10k"),
        (workspace["model_b"], "folder"), (workspace["model_b"], "koniq10k"),
    ]  # fmt: skip

    run_dir = output / "model_a" / "mine-all"
    with open(run_dir / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["index"] for r in rows] == [str(i) for i in range(14)]
    predictions = np.array([float(r["prediction"]) for r in rows])
    np.testing.assert_allclose(predictions, direct_scores(workspace["model_a"], [r["image"] for r in rows]), atol=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = iqa_correlations(predictions, [float(r["mos"]) for r in rows], fit="logistic4")
    for key in (
        "srcc",
        "krcc",
        "plcc",
        "rmse",
        "plcc_raw",
        "rmse_raw",
        "plcc_fitted",
        "srcc_ci",
        "plcc_ci",
        "krcc_ci",
    ):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9)
    assert metrics["fit_status"] == expected["fit_status"] and metrics["fit_flagged"] == expected["fit_flagged"]
    assert metrics["num_images"] == 14 and metrics["images_scored_now"] == 14 and metrics["num_processes"] == 1
    assert "| SRCC | PLCC | KRCC | RMSE |" in (run_dir / "table.md").read_text()
    assert not (run_dir / "partial").exists()
    assert (run_dir / "scatter.png").exists() != _no_matplotlib()

    combined = (output / "results.md").read_text()
    assert "| Model | mine (all) | KonIQ-10k (all) |" in combined
    cross_dataset = combined.split("## All metrics")[0]
    assert cross_dataset.count("| model_b |") == 1  # one row per model, a column per dataset
    summary = json.loads((output / "results.json").read_text())
    assert len(summary["results"]) == 4
    assert [(s["dataset"], s["models"]) for s in summary["significance"]] == [
        ("folder", [workspace["model_a"], workspace["model_b"]]), ("koniq10k", [workspace["model_a"], workspace["model_b"]]),
    ]  # fmt: skip
    assert summary["significance"][0]["num_items"] == 14 and len(summary["significance"][0]["pairs"]) == 1
    assert "## Paired significance: mine (all)" in combined and "| | model_a | model_b |" in combined


def test_scatter_plot_is_skipped_with_a_warning_without_matplotlib(workspace, tmp_path, monkeypatch):
    from hf_iqa.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.warns(UserWarning, match=r"pip install 'hf-iqa\[plot\]'"):
        assert main(folder_args(workspace, tmp_path / "out")) == 0
    run_dir = tmp_path / "out" / "model_a" / "mine-all"
    assert (run_dir / "metrics.json").exists() and not (run_dir / "scatter.png").exists()


def test_scatter_plot_with_matplotlib(workspace, tmp_path):
    pytest.importorskip("matplotlib", reason="optional extra [plot] (pip install 'hf-iqa[plot]') is not installed")
    from hf_iqa.cli import main

    assert main(folder_args(workspace, tmp_path / "out")) == 0
    with Image.open(tmp_path / "out" / "model_a" / "mine-all" / "scatter.png") as plot:
        assert plot.size[0] > 100


def test_interrupted_run_resumes_without_recomputing(workspace, tmp_path, monkeypatch, capsys):
    from hf_iqa.cli import main
    from hf_iqa.scoring import PipelineScorer

    reference_dir = tmp_path / "reference"
    assert main(folder_args(workspace, reference_dir)) == 0
    reference_ids, reference = read_predictions(reference_dir / "model_a" / "mine-all" / "predictions.csv")

    real_predict = PipelineScorer.predict
    scored: list[int] = []

    def interrupted_after_two_batches(self, prepared):
        if len(scored) >= 6:
            raise KeyboardInterrupt("simulated Ctrl-C")
        scored.extend([1] * len(prepared))
        return real_predict(self, prepared)

    output = tmp_path / "out"
    monkeypatch.setattr(PipelineScorer, "predict", interrupted_after_two_batches)
    assert main(folder_args(workspace, output)) == 130  # one line, no traceback
    assert "interrupted after 6 of 14 images" in capsys.readouterr().err
    run_dir = output / "model_a" / "mine-all"
    with open(run_dir / "scores.csv", newline="") as handle:  # the resumable output of `hf-iqa score`'s run
        assert len(list(csv.DictReader(handle))) == 6 and not (run_dir / "predictions.csv").exists()
    with open(run_dir / "scores.csv", "a") as handle:
        handle.write("img06,6,0.12")  # killed in the middle of writing a line: must not be trusted

    resumed: list[int] = []

    def counting(self, prepared):
        resumed.extend([1] * len(prepared))
        return real_predict(self, prepared)

    monkeypatch.setattr(PipelineScorer, "predict", counting)
    assert main(folder_args(workspace, output)) == 0
    assert len(resumed) == 14 - 6  # finished images are not scored again
    ids, predictions = read_predictions(run_dir / "predictions.csv")
    assert ids == reference_ids
    np.testing.assert_allclose(predictions, reference, atol=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["images_resumed"], metrics["images_scored_now"]) == (6, 8)

    resumed.clear()  # a finished run is not recomputed either
    assert main(folder_args(workspace, output)) == 0 and not resumed

    # a different configuration refuses to mix with the earlier predictions unless told to start over
    capsys.readouterr()
    assert main(folder_args(workspace, output, "--dtype", "bf16")) == 1
    assert main(folder_args(workspace, output, "--dtype", "bf16", "--overwrite")) == 0 and len(resumed) == 14


def test_update_card_writes_model_index(workspace, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    from hf_iqa.evaluation import evaluate_on_datasets

    model_dir = tmp_path / "model"
    shutil.copytree(workspace["model_a"], model_dir)
    for _ in range(2):  # a second run replaces its entries instead of duplicating them
        evaluate_on_datasets(
            [str(model_dir)], ["koniq10k"], workspace["base"], split="test", output_dir=tmp_path / "out",
            update_card=True, progress=False, overwrite=True, split_options={"cache_dir": workspace["cache"]},
        )  # fmt: skip
    card = ModelCard.load(model_dir / "README.md")
    results = {(e.dataset_type, e.dataset_split, e.metric_type): e for e in card.data.eval_results}
    assert len(card.data.eval_results) == len(results) == 4
    metrics = json.loads((tmp_path / "out" / "model" / "koniq10k-test" / "metrics.json").read_text())
    assert results[("koniq10k", "test", "spearmanr")].metric_value == round(metrics["srcc"], 4)
    assert results[("koniq10k", "test", "pearsonr")].metric_name == "PLCC (after a 4-parameter logistic fit)"
    assert card.data.license == "mit" and "A random model." in card.text
    assert card.text.count("hf_iqa:benchmark:start") == 1 and "| KonIQ-10k | test | 8 |" in card.text


def test_cli_reports_bad_input_clearly(workspace, tmp_path, capsys):
    from hf_iqa.cli import main

    args = folder_args(workspace, tmp_path / "out")
    args[args.index("--data-root") + 1] = str(tmp_path / "missing")
    args[args.index("--dataset") + 1] = "koniq10k"
    assert main(args) == 1
    assert f"dataset root {str(tmp_path / 'missing')!r} does not exist" in capsys.readouterr().err
    args[args.index("--dataset") + 1] = "imagenet"
    assert main(args) == 1
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err


DRIVER = """
import os, sys, json
sys.path.insert(0, {tests_dir!r})
from tests.test_evaluation import register_tiny_model
register_tiny_model()
from hf_iqa.commands.benchmark import main
code = main(sys.argv[1:])
# the metrics helper across processes: each rank feeds its own shard of the predictions as torch tensors
import csv, torch
from hf_iqa.metrics import CorrelationMeter
rows = list(csv.DictReader(open({predictions!r})))
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
meter = CorrelationMeter(fit="logistic4")
mine = rows[rank::world]
meter.update(torch.tensor([float(r["prediction"]) for r in mine]), torch.tensor([float(r["mos"]) for r in mine]))
result = meter.compute()
if rank == 0:
    json.dump(result, open({meter_out!r}, "w"))
sys.exit(code)
"""


def test_two_process_run_matches_single_process(workspace, tmp_path):
    from hf_iqa.cli import main
    from hf_iqa.metrics import iqa_correlations

    single = tmp_path / "single"
    assert main(folder_args(workspace, single)) == 0
    single_predictions = single / "model_a" / "mine-all" / "predictions.csv"

    driver = tmp_path / "driver.py"
    meter_out = tmp_path / "meter.json"
    driver.write_text(
        DRIVER.format(tests_dir=str(TESTS_DIR), predictions=str(single_predictions), meter_out=str(meter_out))
    )
    double = tmp_path / "double"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver)]
    command += folder_args(workspace, double)[1:]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]

    ids_1, predictions_1 = read_predictions(single_predictions)
    ids_2, predictions_2 = read_predictions(double / "model_a" / "mine-all" / "predictions.csv")
    assert ids_2 == ids_1 and len(set(ids_2)) == 14  # every image once, in dataset order
    np.testing.assert_allclose(predictions_2, predictions_1, atol=1e-6)
    metrics = json.loads((double / "model_a" / "mine-all" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["images_scored_now"] == 14
    single_metrics = json.loads((single / "model_a" / "mine-all" / "metrics.json").read_text())
    fields = [k for k in single_metrics if k.startswith(("srcc", "plcc", "krcc", "rmse", "fit", "ci"))]
    assert json.dumps({k: metrics[k] for k in fields}) == json.dumps({k: single_metrics[k] for k in fields})

    with open(single_predictions, newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = iqa_correlations([float(r["prediction"]) for r in rows], [float(r["mos"]) for r in rows])
    gathered = json.loads(meter_out.read_text())
    for key in ("srcc", "krcc", "plcc", "rmse"):
        assert gathered[key] == pytest.approx(expected[key], abs=1e-7)
    assert gathered["num_items"] == 14


def _no_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def test_unreadable_and_missing_images_are_counted_not_fatal(workspace, tmp_path, capsys):
    from hf_iqa.cli import main
    from hf_iqa.metrics import iqa_correlations

    root = tmp_path / "data"
    make_folder_dataset(root)
    (root / "scores.csv").rename(root / "my_labels.csv")  # not a default name: needs --scores-file
    content = (root / "images" / "img03.png").read_bytes()
    (root / "images" / "img03.png").write_bytes(content[: len(content) // 2])  # truncated
    (root / "images" / "img07.png").unlink()  # missing
    args = ["benchmark", "--model", workspace["model_a"], "--dataset", "folder", "--data-root", str(root),
            "--output-dir", str(tmp_path / "out"), "--no-progress", "--batch-size", "4"]  # fmt: skip
    assert main(args) == 1
    assert "--scores-file" in capsys.readouterr().err  # the hint names the option the command line has
    args += ["--scores-file", "my_labels.csv"]
    assert main([*args, "--strict"]) == 1
    assert "1 of 14 images listed in the meta file are missing" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    run_dir = tmp_path / "out" / "model_a" / "data-all"  # no --split: every image of a folder
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["num_images"], metrics["num_errors"]) == (14, 2)
    assert set(metrics["errors"]) == {"images/img03", "images/img07"}
    assert "no such file" in metrics["errors"]["images/img07"]
    with open(run_dir / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    good = [r for r in rows if not r["error"]]
    assert len(good) == 12 and all(r["prediction"] == "" for r in rows if r["error"])
    expected = iqa_correlations([float(r["prediction"]) for r in good], [float(r["mos"]) for r in good])
    assert metrics["srcc"] == pytest.approx(expected["srcc"], abs=1e-12)
    assert "| 14 | 2 |" in (run_dir / "table.md").read_text()
    (root / "images" / "img07.png").write_bytes(content)  # only the truncated image left: --strict names it
    assert main([*args, "--strict", "--overwrite"]) == 1
    assert "1 image(s) of folder could not be scored (--strict)" in capsys.readouterr().err
