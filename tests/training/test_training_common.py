"""The shared accelerate training loop (hf_iqa.training.common) on a tiny model and synthetic data: config
loading, loss going down, best-model selection and a loadable save_pretrained folder, bit-identical resume,
a two-process CPU run under torchrun, and the `hf-iqa train` dispatch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from hf_iqa.training import common
from hf_iqa.training.common import ConfigError, SeededDataset, TrainingConfig, TrainingTask
from tests.testing_utils import REPO_ROOT

# ---------------------------------------------------------------------------------------------------------------
# a tiny IQA-like model (features -> score) and a synthetic regression set; also imported by the torchrun script
# ---------------------------------------------------------------------------------------------------------------

NUM_FEATURES = 8


class ToyConfig(PreTrainedConfig):
    model_type = "hf_iqa_test_toy"

    def __init__(self, hidden_size: int = 16, dropout: float = 0.1, **kwargs):
        self.hidden_size = hidden_size
        self.dropout = dropout
        super().__init__(**kwargs)


@dataclass
class ToyOutput(ModelOutput):
    scores: torch.Tensor | None = None


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    main_input_name = "features"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(NUM_FEATURES, config.hidden_size),
            torch.nn.GELU(),
            torch.nn.Dropout(config.dropout),  # consumes the global torch RNG: resume must restore it
            torch.nn.Linear(config.hidden_size, 1),
        )
        self.post_init()

    def forward(self, features: torch.Tensor) -> ToyOutput:
        return ToyOutput(scores=self.net(features).squeeze(-1))


class ToyDataset(SeededDataset):
    """y = w.x with fixed w; items get per-(seed, epoch, index) jitter, like a random-crop augmentation."""

    def __init__(self, size: int, seed: int, data_seed: int = 123):
        super().__init__(seed)
        rng = np.random.default_rng(data_seed)
        self.features = rng.standard_normal((size, NUM_FEATURES)).astype(np.float32)
        self.targets = (self.features @ np.linspace(1.0, -1.0, NUM_FEATURES)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        jitter = self.rng(index).normal(0, 0.05, NUM_FEATURES).astype(np.float32)
        return {"features": torch.from_numpy(self.features[index] + jitter), "mos": torch.tensor(self.targets[index])}


def toy_loss(model, batch):
    scores = model(features=batch["features"]).scores
    loss = torch.nn.functional.mse_loss(scores, batch["mos"])
    return loss, {"mean_score": scores.mean()}


def toy_predict(model, batch):
    return model(features=batch["features"]).scores, batch["mos"]


def build_toy_task(config: TrainingConfig, accelerator) -> TrainingTask:
    AutoConfig.register(ToyConfig.model_type, ToyConfig, exist_ok=True)
    AutoModel.register(ToyConfig, ToyModel, exist_ok=True)
    return TrainingTask(
        model=ToyModel(ToyConfig()),
        train_dataset=ToyDataset(64, seed=config.seed),
        eval_dataset=ToyDataset(40, seed=config.seed, data_seed=7),
        compute_loss=toy_loss,
        predict=toy_predict,
        save_extra=lambda directory: Path(directory, "README.md").write_text("# toy\n"),
    )


def toy_config(output_dir, **overrides) -> TrainingConfig:
    values = dict(
        output_dir=str(output_dir),
        seed=3,
        max_steps=30,
        train_batch_size=8,
        eval_batch_size=16,
        learning_rate=1e-2,
        eval_steps=10,
        logging_steps=1,
        checkpointing_steps=0,
    )
    values.update(overrides)
    return TrainingConfig(**values)


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _losses(history, first_step=1):
    return {h["step"]: h["loss"] for h in history if "loss" in h and h["step"] >= first_step}


# ---------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class RecipeConfig(TrainingConfig):
    data_dir: str = ""
    margins: list[float] | None = None


def test_config_from_yaml_with_command_line_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("output_dir: out\nlearning_rate: 5e-6\nmax_steps: 7\nreport_to: [jsonl]\ndata_dir: /data\n")
    config = common.parse_config(
        RecipeConfig, ["--config", str(path), "--max_steps", "9", "--margins", "[0.1, 1]", "--max-grad-norm", "null"]
    )
    assert isinstance(config, RecipeConfig)
    assert config.learning_rate == 5e-6 and isinstance(config.learning_rate, float)  # YAML reads 5e-6 as a string
    assert config.max_steps == 9 and config.data_dir == "/data"
    assert config.margins == [0.1, 1.0] and config.max_grad_norm is None
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps({"seed": 5, "mixed_precision": "bf16"}))
    assert common.load_config(RecipeConfig, json_path).mixed_precision == "bf16"


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rte: 1e-5\n", "unknown option(s) ['learning_rte']"),
        ("max_steps: ten\n", "max_steps: expected an integer"),
        ("mixed_precision: fp8\n", "mixed_precision must be"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("report_to: [mlflow]\n", "unknown tracker"),
    ],
)
def test_config_errors_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        common.load_config(RecipeConfig, path)
    assert message in str(error.value) and "bad.yaml" in str(error.value)
    with pytest.raises(ConfigError, match="config file not found"):
        common.load_config(RecipeConfig, tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------


def test_loss_goes_down_best_model_is_kept_and_loads_with_automodel(tmp_path):
    config = toy_config(tmp_path / "run")
    result = common.train(config, build_toy_task)

    losses = list(_losses(result.history).values())
    assert result.global_step == 30 and len(losses) == 30
    assert np.mean(losses[-5:]) < 0.25 * np.mean(losses[:5])
    evals = [h for h in result.history if "eval/srcc" in h]
    assert [h["step"] for h in evals] == [10, 20, 30]
    assert result.best_metric == max(h["eval/srcc"] for h in evals) > 0.9
    assert result.model_dir == str(tmp_path / "run" / "best")

    # the JSONL tracker wrote the same records
    lines = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 31))
    assert json.loads((tmp_path / "run" / "logs" / "config.json").read_text())["max_steps"] == 30

    # best/ and last/ are save_pretrained folders that load with AutoModel and score like the trained weights
    for folder in ("best", "last"):
        assert (tmp_path / "run" / folder / "README.md").read_text() == "# toy\n"
    model = AutoModel.from_pretrained(result.model_dir).eval()
    dataset = ToyDataset(40, seed=3, data_seed=7)
    with torch.no_grad():
        scores = model(features=torch.from_numpy(dataset.features)).scores
    from hf_iqa.metrics import srcc

    assert srcc(scores, dataset.targets) == pytest.approx(result.best_metric, abs=0.02)  # eval used jittered inputs
    last = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    best = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    assert set(last) == set(best) == set(model.state_dict())


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    overrides = dict(
        max_steps=8, checkpointing_steps=4, gradient_accumulation_steps=2, eval_steps=4, lr_scheduler="cosine"
    )
    full = common.train(toy_config(tmp_path / "full", **overrides), build_toy_task)
    checkpoints = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint_4", "checkpoint_8"]  # named by optimizer step, not by save count

    # a fresh run in another folder, resumed from the step-4 checkpoint of the first one: 64 items / 8 per batch /
    # 2 accumulation = 4 steps per epoch, so this also crosses an epoch boundary with the sampler re-seeded
    resumed_config = toy_config(
        tmp_path / "resumed",
        **overrides,
        resume_from_checkpoint=str(tmp_path / "full" / "checkpoints" / "checkpoint_4"),
    )
    resumed = common.train(resumed_config, build_toy_task)
    assert _losses(resumed.history) == _losses(full.history, first_step=5)
    full_weights = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    resumed_weights = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    for key, value in full_weights.items():
        assert torch.equal(value, resumed_weights[key]), key
    # the resumed run saved its own step-8 checkpoint (the `iteration` counter was restored)
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint_8").is_dir()

    # `latest` picks checkpoint_8 of the finished run: nothing left to do, same weights
    again = common.train(toy_config(tmp_path / "full", **overrides, resume_from_checkpoint="latest"), build_toy_task)
    assert again.global_step == 8 and _losses(again.history) == {}


def test_mid_epoch_resume_skips_the_batches_already_seen(tmp_path):
    overrides = dict(max_steps=6, checkpointing_steps=3, eval_steps=0, logging_steps=1)
    full = common.train(toy_config(tmp_path / "full", **overrides), build_toy_task)  # 8 steps per epoch
    resumed = common.train(
        toy_config(
            tmp_path / "resumed", **overrides, resume_from_checkpoint=str(tmp_path / "full/checkpoints/checkpoint_3")
        ),
        build_toy_task,
    )
    assert _losses(resumed.history) == _losses(full.history, first_step=4)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    dtypes = set()

    def build(config, accelerator):
        task = build_toy_task(config, accelerator)
        task.model.net[0].register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
        return task

    result = common.train(toy_config(tmp_path / "bf16", mixed_precision="bf16"), build)
    assert dtypes == {torch.bfloat16}  # the forward really ran under bf16 autocast
    losses = list(_losses(result.history).values())
    assert all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    weights = load_file(str(tmp_path / "bf16" / "last" / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.float32}  # master weights stay fp32


class _Payload:
    """Unpickling this creates `marker` (what a crafted checkpoint would do with a shell command instead)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_hold_no_pickle_and_a_crafted_pickle_never_runs_on_resume(tmp_path):
    overrides = dict(max_steps=8, checkpointing_steps=4, eval_steps=4)
    common.train(toy_config(tmp_path / "run", **overrides), build_toy_task)
    checkpoints = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["checkpoint_4", "checkpoint_8"]
    for checkpoint in checkpoints:  # nothing a pickle loader reads
        assert {p.suffix for p in checkpoint.iterdir()} == {".json", ".safetensors"}

    from accelerate.checkpointing import load_custom_state

    from hf_iqa.training.checkpoint import CheckpointError

    # the payload is real: accelerate's loader of registered objects runs it
    probe = tmp_path / "probe"
    probe.mkdir()
    torch.save(_Payload(tmp_path / "probe_marker"), probe / "custom_checkpoint_0.pkl")  # as accelerate writes it
    with pytest.raises(TypeError):  # the payload ran; its result is no state dict
        load_custom_state(common.TrainState(), str(probe), 0)
    assert (tmp_path / "probe_marker").exists()

    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        marker = tmp_path / f"marker_{name}"
        crafted = checkpoint / name
        torch.save(_Payload(marker), crafted)
        for resume in (str(checkpoint), "latest"):
            with pytest.raises(CheckpointError, match=f"refusing to resume .*pickle files \\({name}\\)"):
                common.train(toy_config(tmp_path / "run", **overrides, resume_from_checkpoint=resume), build_toy_task)
        assert not marker.exists()
        crafted.unlink()
    # through the command line: one line, exit status 2, no traceback
    torch.save(_Payload(tmp_path / "marker_cli"), checkpoint / "random_states_0.pkl")
    completed = subprocess.run(
        [sys.executable, "-c", RECIPE_SCRIPT.format(tests_dir=str(REPO_ROOT)), "--output_dir",
         str(tmp_path / "run"), "--resume_from_checkpoint", "latest", "--no-progress"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.strip().count("\n") == 0 and "refusing to resume" in completed.stderr
    assert "Traceback" not in completed.stderr and not (tmp_path / "marker_cli").exists()


def test_half_written_and_damaged_checkpoints(tmp_path):
    from hf_iqa.training.checkpoint import CheckpointError

    overrides = dict(max_steps=4, checkpointing_steps=2, eval_steps=0, checkpoints_total_limit=1)
    common.train(toy_config(tmp_path / "run", **overrides), build_toy_task)
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in folder.iterdir()] == ["checkpoint_4"]  # total limit 1: the older one removed
    # a save killed half-way leaves only a hidden staging folder, which `latest` never picks
    (folder / ".checkpoint_9.partial").mkdir()
    again = common.train(toy_config(tmp_path / "run", **overrides, resume_from_checkpoint="latest"), build_toy_task)
    assert again.global_step == 4 and _losses(again.history) == {}
    (folder / "checkpoint_4" / "optimizer.json").unlink()
    with pytest.raises(CheckpointError, match="optimizer.json is missing; the checkpoint is incomplete"):
        common.train(toy_config(tmp_path / "run", **overrides, resume_from_checkpoint="latest"), build_toy_task)
    (folder / "checkpoint_4" / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="trainer_state.json: unreadable"):
        common.train(toy_config(tmp_path / "run", **overrides, resume_from_checkpoint="latest"), build_toy_task)


def _damage(folder: Path, case: str) -> str:
    """Damage one file of a checkpoint the way a hostile or broken folder would; returns what the error names."""
    import json

    state = folder / "trainer_state.json"
    meta = json.loads(state.read_text())
    if case == "step is text":
        meta["trainer"]["loop"]["global_step"] = "4"
    elif case == "step is NaN":
        meta["trainer"]["loop"]["global_step"] = float("nan")
    elif case == "negative epoch":
        meta["trainer"]["loop"]["epoch"] = -1
    elif case == "loop is a list":
        meta["trainer"]["loop"] = [1, 2]
    elif case == "deep nesting":
        state.write_text("[" * 100_000 + "]" * 100_000)
        return "trainer_state.json: nested deeper"
    elif case == "moment of the wrong shape":
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "optimizer.safetensors"))
        name = next(k for k, v in tensors.items() if v.dim() > 0)
        tensors[name] = torch.zeros(7, 5)
        save_file(tensors, str(folder / "optimizer.safetensors"))
        return "optimizer.json: state.* has shape \\(7, 5\\)"
    elif case == "FIFO":
        (folder / "scheduler.json").unlink()
        os.mkfifo(folder / "scheduler.json")
        return "scheduler.json: not a regular file"
    elif case == "link to a device":
        (folder / "rank_0.json").unlink()
        (folder / "rank_0.json").symlink_to("/dev/zero")
        return "rank_0.json: not a regular file"
    state.write_text(json.dumps(meta))
    return {"step is text": "global_step must be a whole number", "step is NaN": "global_step must be a whole number",
            "negative epoch": "epoch must be a whole number", "loop is a list": "trainer.loop must be an object"}[case]


@pytest.mark.parametrize("case", ["step is text", "step is NaN", "negative epoch", "loop is a list", "deep nesting",
                                  "moment of the wrong shape", "FIFO", "link to a device"])  # fmt: skip
def test_damaged_training_state_is_one_line_naming_the_file_and_field(tmp_path, case):
    """Issue 24: every file a resume reads is checked (types, ranges, finite numbers, shapes, regular files,
    nesting) and refused with one CheckpointError line, before the run trains or "finishes" having done nothing."""
    import shutil

    from hf_iqa.training.checkpoint import CheckpointError

    overrides = dict(max_steps=2, checkpointing_steps=2, eval_steps=0)
    common.train(toy_config(tmp_path / "run", **overrides), build_toy_task)
    folder = tmp_path / "run" / "checkpoints" / "checkpoint_2"
    expected = _damage(folder, case)
    resumed = dict(overrides, max_steps=4, resume_from_checkpoint=str(folder))
    shutil.rmtree(tmp_path / "again", ignore_errors=True)
    with pytest.raises(CheckpointError, match=expected) as raised:
        common.train(toy_config(tmp_path / "again", **resumed), build_toy_task)
    assert "\n" not in str(raised.value)


RECIPE_SCRIPT = """
import sys
sys.path.insert(0, {tests_dir!r})
from tests.training.test_training_common import build_toy_task
from hf_iqa.training import common
sys.exit(common.run_recipe(common.TrainingConfig, build_toy_task, sys.argv[1:], prog="toy"))
"""


def test_checkpoint_trees_round_trip_exactly(tmp_path):
    from hf_iqa.training.checkpoint import load_tree, save_tree

    tree = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3, dtype=torch.bfloat16)}},
        "param_groups": [{"betas": (0.9, 0.999), "params": [0, 1], "lr": 1 / 3, "fused": None}],
        "rng": (3, tuple(range(5)), None),
        "numpy": ("MT19937", np.arange(5, dtype=np.uint32) * 4_000_000_000 // 5, 624, 0, 0.0),
        "best": -float("inf"),
        "__odd": True,
    }
    save_tree(tmp_path / "tree", tree)
    back = load_tree(tmp_path / "tree")
    assert back["state"][0]["step"].shape == () and torch.equal(
        back["state"][0]["exp_avg"], tree["state"][0]["exp_avg"]
    )
    assert back["param_groups"] == tree["param_groups"] and back["rng"] == tree["rng"]
    assert back["numpy"][1].dtype == np.uint32 and np.array_equal(back["numpy"][1], tree["numpy"][1])
    assert back["numpy"][0] == "MT19937" and back["best"] == -float("inf") and back["__odd"] is True


def test_resume_in_place_logs_each_step_once_and_shows_progress(tmp_path, capsys):
    overrides = dict(max_steps=6, checkpointing_steps=3, eval_steps=3, logging_steps=1)
    common.train(toy_config(tmp_path / "run", **overrides), build_toy_task, progress=True)
    out, err = capsys.readouterr()
    # validation results, checkpoints and model folders on stdout; the bar (step, loss, lr, ETA) on stderr
    assert "step 3: validation srcc " in out and "plcc " in out and "on 40 images" in out
    assert f"step 3: checkpoint saved to {tmp_path / 'run' / 'checkpoints' / 'checkpoint_3'}" in out
    assert "best model (srcc " in out and str(tmp_path / "run" / "best") in out
    assert f"last model: {tmp_path / 'run' / 'last'}" in out
    assert "training" in err and "6/6" in err and "loss=" in err and "lr=" in err and "<00:00" in err

    full_log = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    # an interrupted run would have logged past its checkpoint: resuming in place drops those records
    common.train(
        toy_config(
            tmp_path / "run", **overrides, resume_from_checkpoint=str(tmp_path / "run/checkpoints/checkpoint_3")
        ),
        build_toy_task,
        progress=False,
    )
    out, err = capsys.readouterr()
    assert "resumed from" in out and "training" not in err  # progress=False: no bar
    resumed_log = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert resumed_log == full_log  # same records, each step once, bit-identical values


def test_no_progress_environment_variable_hides_the_bar(tmp_path, capsys, monkeypatch):
    from transformers.utils import logging as transformers_logging

    library_bars = []

    def build(config, accelerator):  # e.g. a recipe's from_pretrained: its "Loading weights" bar is hidden too
        library_bars.append(transformers_logging.is_progress_bar_enabled())
        return build_toy_task(config, accelerator)

    monkeypatch.setenv("HF_IQA_NO_PROGRESS", "1")
    common.train(toy_config(tmp_path / "run", max_steps=2, eval_steps=0), build)
    out, err = capsys.readouterr()
    assert "last model:" in out and "training" not in err
    assert library_bars == [False] and transformers_logging.is_progress_bar_enabled()  # restored afterwards


def test_recipe_help_lists_every_option_with_a_description(capsys):
    from hf_iqa.cli import main
    from hf_iqa.commands import train as cli

    for name in cli.available_recipes():
        with pytest.raises(SystemExit) as exited:
            main(["train", name, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: hf-iqa train {name} ") and "--no-progress" in text
        config_cls = next(
            value
            for value in vars(cli.load_recipe(name)).values()
            if isinstance(value, type) and issubclass(value, TrainingConfig) and value is not TrainingConfig
        )
        for f in dataclasses.fields(config_cls):
            assert common.option_help(config_cls, f.name), f"{name}: --{f.name} has no description"
            assert f"--{f.name} " in text
        assert "peak learning rate (default: " in text
    with pytest.raises(SystemExit):
        cli.load_recipe("liqe").main(["--help"])
    assert capsys.readouterr().out.startswith("usage: accelerate launch -m hf_iqa.training.liqe ")


def test_bad_task_and_resume_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="larger than the training set"):
        common.train(toy_config(tmp_path / "a", train_batch_size=1000), build_toy_task)
    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        common.train(toy_config(tmp_path / "b", resume_from_checkpoint=str(tmp_path / "nope")), build_toy_task)


TORCHRUN_SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests_dir!r})
from tests.training.test_training_common import build_toy_task, toy_config
from hf_iqa.training import common

output_dir, resume = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
overrides = dict(max_steps=6, checkpointing_steps=3, eval_steps=3)
result = common.train(toy_config(output_dir, resume_from_checkpoint=resume, **overrides), build_toy_task)
report = {{"rank": int(os.environ["RANK"]), "world": int(os.environ["WORLD_SIZE"]), "history": result.history, "best": result.best_metric}}
# one file per rank: two processes printing to one pipe can interleave their lines
with open(os.path.join(output_dir, "report_rank" + os.environ["RANK"] + ".json"), "w") as handle:
    json.dump(report, handle)
"""


def _torchrun(script: Path, *args: str) -> list[dict]:
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    completed = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [json.loads(Path(args[0], f"report_rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_process_cpu_run_with_torchrun(tmp_path):
    script = tmp_path / "run_toy.py"
    output_dir = tmp_path / "ddp"
    script.write_text(TORCHRUN_SCRIPT.format(tests_dir=str(REPO_ROOT)))
    reports = _torchrun(script, str(output_dir))
    assert sorted(r["rank"] for r in reports) == [0, 1] and {r["world"] for r in reports} == {2}
    # logged losses are reduced across processes: identical on both ranks; validation gathered the full set
    losses = [[h["loss"] for h in r["history"] if "loss" in h] for r in reports]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert reports[0]["best"] == reports[1]["best"] > 0.5
    eval_items = [h["eval/num_items"] for h in reports[0]["history"] if "eval/num_items" in h]
    assert eval_items == [40, 40]  # 20 per process, gathered, no padding duplicates
    assert sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["checkpoint_3", "checkpoint_6"]
    checkpoint = output_dir / "checkpoints" / "checkpoint_3"
    assert {p.name for p in checkpoint.glob("rank_*.json")} == {"rank_0.json", "rank_1.json"}  # RNG per process
    lines = (output_dir / "logs" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"loss"' in line]) == 6  # written by the main process only

    # resumed from step 3 by two new processes: the same logged values and the same weights
    resumed = _torchrun(script, str(tmp_path / "ddp_resumed"), str(checkpoint))
    assert resumed[0]["history"] == [h for h in reports[0]["history"] if h["step"] > 3]
    for name in ("last", "best"):
        a = load_file(str(output_dir / name / "model.safetensors"))
        b = load_file(str(tmp_path / "ddp_resumed" / name / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    AutoConfig.register(ToyConfig.model_type, ToyConfig, exist_ok=True)
    AutoModel.register(ToyConfig, ToyModel, exist_ok=True)
    assert isinstance(AutoModel.from_pretrained(output_dir / "best"), ToyModel)


# ---------------------------------------------------------------------------------------------------------------
# `hf-iqa train` dispatch
# ---------------------------------------------------------------------------------------------------------------


def test_hf_iqa_train_dispatches_to_the_recipe_main(tmp_path, monkeypatch, capsys):
    import types

    from hf_iqa.commands import train as cli

    received = []
    fake = types.ModuleType("hf_iqa.training.fake_recipe")
    fake.main = lambda argv, prog: received.append((argv, prog)) or 0
    monkeypatch.setitem(sys.modules, "hf_iqa.training.fake_recipe", fake)

    import argparse

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["fake_recipe", "--config", "x.yaml", "--max_steps", "3"])
    assert cli.run(args) == 0
    assert received == [(["--config", "x.yaml", "--max_steps", "3"], "hf-iqa train fake_recipe")]

    assert cli.run(parser.parse_args(["no_such_recipe"])) == 2
    assert "unknown training recipe 'no_such_recipe'" in capsys.readouterr().err
    assert cli.run(parser.parse_args(["common"])) == 2  # shared modules are not recipes


def test_recipe_runs_under_python_dash_m_style_main(tmp_path):
    """A recipe's `main(argv)` built from `parse_config` + `train` runs end to end from a YAML file."""
    config_path = tmp_path / "toy.yaml"
    config_path.write_text(
        textwrap.dedent(
            f"""
            output_dir: {tmp_path / "out"}
            max_steps: 4
            train_batch_size: 8
            learning_rate: 0.01
            eval_steps: 0
            checkpointing_steps: 2
            """
        )
    )

    def main(argv):
        config = common.parse_config(TrainingConfig, argv)
        return 0 if common.train(config, build_toy_task).global_step == config.max_steps else 1

    assert main(["--config", str(config_path), "--seed", "11"]) == 0
    assert json.loads((tmp_path / "out" / "logs" / "config.json").read_text())["seed"] == 11
    assert (tmp_path / "out" / "checkpoints" / "checkpoint_4").is_dir()
    assert (tmp_path / "out" / "best" / "config.json").is_file()  # validation at the end selects a best model


def test_example_yaml_lists_every_common_option_with_its_default():
    path = REPO_ROOT / "examples" / "training" / "common_options.yaml"
    import yaml

    assert set(yaml.safe_load(path.read_text())) == {f.name for f in dataclasses.fields(TrainingConfig)}
    assert common.load_config(TrainingConfig, path) == TrainingConfig()


def test_grouped_validation_averages_per_group_correlations():
    """`predict` returning group ids: SRCC/PLCC per group, their mean for model selection, the pooled values too."""
    from accelerate import Accelerator

    from hf_iqa.metrics import plcc, srcc

    rng = np.random.default_rng(0)
    targets = rng.normal(size=40)
    scores = targets + rng.normal(scale=[0.2] * 20 + [2.0] * 20)  # group 0 agrees well, group 1 poorly
    groups = np.repeat([0, 1], 20)
    batches = [
        {
            "s": torch.tensor(scores[i : i + 8]),
            "t": torch.tensor(targets[i : i + 8]),
            "g": torch.tensor(groups[i : i + 8]),
        }
        for i in range(0, 40, 8)
    ]
    metrics = common.evaluate(
        Accelerator(cpu=True), torch.nn.Linear(1, 1), batches, lambda m, b: (b["s"], b["t"], b["g"]), ["good", "bad"]
    )
    good, bad = srcc(scores[:20], targets[:20]), srcc(scores[20:], targets[20:])
    assert metrics["srcc_good"] == pytest.approx(good) and metrics["srcc_bad"] == pytest.approx(bad)
    assert metrics["srcc"] == pytest.approx((good + bad) / 2)
    assert metrics["plcc"] == pytest.approx((plcc(scores[:20], targets[:20]) + plcc(scores[20:], targets[20:])) / 2)
    assert metrics["srcc_pooled"] == pytest.approx(srcc(scores, targets)) and metrics["num_items"] == 40
    plain = common.evaluate(Accelerator(cpu=True), torch.nn.Linear(1, 1), batches, lambda m, b: (b["s"], b["t"]))
    assert set(plain) == {"srcc", "plcc", "num_items"} and plain["srcc"] == pytest.approx(srcc(scores, targets))


def test_a_folder_holding_an_earlier_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    """Issue 25: rerunning into the same output_dir used to start over silently and mix two runs' checkpoints
    (`latest` then picked the old run's)."""
    overrides = dict(max_steps=2, checkpointing_steps=2, eval_steps=0)
    common.train(toy_config(tmp_path / "run", **overrides), build_toy_task)
    with pytest.raises(common.ConfigError, match="holds an earlier run .*--resume_from_checkpoint latest"):
        common.train(toy_config(tmp_path / "run", **overrides), build_toy_task)
    resumed = common.train(toy_config(tmp_path / "run", **overrides, resume_from_checkpoint="latest"), build_toy_task)
    assert resumed.global_step == 2
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    fresh = common.train(toy_config(tmp_path / "run", **overrides, overwrite_output_dir=True), build_toy_task)
    assert fresh.global_step == 2 and (tmp_path / "run" / "notes.txt").read_text() == "mine\n"  # only the run's own


def test_ctrl_c_is_one_line_with_the_resume_command(tmp_path, monkeypatch, capsys):
    def interrupted_loss(model, batch):
        raise KeyboardInterrupt

    def build(config, accelerator):
        return dataclasses.replace(build_toy_task(config, accelerator), compute_loss=interrupted_loss)

    argv = ["--output_dir", str(tmp_path / "run"), "--max_steps", "3", "--no-progress", "--resume_from_checkpoint", "null"]
    status = common.run_recipe(common.TrainingConfig, build, argv, prog="hf-iqa train toy")
    err = capsys.readouterr().err
    assert status == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert err.strip().endswith(
        f"hf-iqa train toy --output_dir {tmp_path / 'run'} --max_steps 3 --no-progress --resume_from_checkpoint latest"
    )


def test_a_tiny_validation_set_is_warned_about(tmp_path, capsys):
    def build(config, accelerator):
        task = build_toy_task(config, accelerator)
        return dataclasses.replace(task, eval_dataset=ToyDataset(6, seed=1, data_seed=7))

    common.train(toy_config(tmp_path / "run", max_steps=2, eval_steps=0), build)
    assert "the validation set has only 6 items" in capsys.readouterr().out
