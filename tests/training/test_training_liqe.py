"""LIQE training recipe (hf_iqa.training.liqe) on a tiny CLIP and synthetic images: losses against independent
formulas, DWA, the multi-dataset step sampler, loss going down, the saved folder (fresh text embeddings, AutoModel,
pipeline), bit-identical resume through the DWA state, the quality-only variant through `hf-iqa train`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from scipy.stats import norm

import hf_iqa.models
from hf_iqa.training import common, liqe
from hf_iqa.training.common import ConfigError
from hf_iqa.training.iqa_data import load_records, read_liqe_split_file
from tests.testing_utils import REPO_ROOT

hf_iqa.models.register_all()

TINY_CLIP = dict(
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     hidden_act="quick_gelu", eos_token_id=49407),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       image_size=64, patch_size=32, hidden_act="quick_gelu"),
    projection_dim=16, logit_scale_init_value=2.3026,  # scale 10: a random tiny CLIP is not saturated
)  # fmt: skip
DISTORTIONS = ("white noise", "gaussian blur")  # fine-grained LIQE names -> coarse "noise", "blur"


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def synthetic_split(folder: Path, name: str, count: int, seed: int) -> Path:
    """Images whose quality is visible (noise or blur strength) with LIQE-format rows: path, MOS, distortion,
    scenes. Returns the train split file; a validation file is written next to it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    y, x = np.mgrid[0:96, 0:128] / 96.0
    for index in range(count):
        strength = rng.uniform(0, 1)
        base = np.stack([np.sin(6 * x + index), np.cos(5 * y), np.sin(4 * (x + y))], -1) * 0.35 + 0.5
        kind = index % 2
        if kind == 0:
            image = base + rng.normal(0, 0.3 * strength, base.shape)
        else:
            pil = Image.fromarray((base * 255).astype(np.uint8))
            from PIL import ImageFilter

            image = np.asarray(pil.filter(ImageFilter.GaussianBlur(4 * strength))) / 255.0
        path = folder / f"{name}_{index}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
        scenes = ["animal", "night", "invalid"] if index % 3 == 0 else ["landscape", "invalid", "invalid"]
        lines.append("\t".join([path.name, f"{100 * (1 - strength):.3f}", DISTORTIONS[kind], *scenes]))
    split = len(lines) * 3 // 4
    (folder / f"{name}_train.txt").write_text("\n".join(lines[:split]) + "\n")
    (folder / f"{name}_val.txt").write_text("\n".join(lines[split:]) + "\n")
    return folder / f"{name}_train.txt"


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("liqe_data")
    return [synthetic_split(root / "a", "a", 16, 0), synthetic_split(root / "b", "b", 12, 1)]


def dataset_specs(splits, batch_sizes=(4, 3)):
    return [
        {"name": path.stem, "train_file": str(path), "validation_file": str(path).replace("_train", "_val"),
         "batch_size": size}
        for path, size in zip(splits, batch_sizes)
    ]  # fmt: skip


def liqe_config(output_dir, splits, **overrides):
    values = dict(
        output_dir=str(output_dir), clip_config=TINY_CLIP, datasets=dataset_specs(splits), steps_per_epoch=4,
        max_steps=8, learning_rate=1e-3, eval_steps=4, logging_steps=1, checkpointing_steps=0, seed=5,
    )  # fmt: skip
    values.update(overrides)
    return liqe.LiqeTrainingConfig(**values)


# ---------------------------------------------------------------------------------------------------------------
# losses and DWA against independent formulas
# ---------------------------------------------------------------------------------------------------------------


def test_quality_fidelity_loss_matches_the_normal_cdf_formula():
    scores = torch.tensor([3.0, 2.5, 4.0, 1.0, 2.0])
    mos = torch.tensor([0.9, 0.2, 0.5, 0.3, 0.3])
    groups = torch.tensor([0, 0, 0, 1, 1])
    expected = []
    for members in ([0, 1, 2], [3, 4]):
        terms = []
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                i, j = members[a], members[b]
                p = norm.cdf((scores[i] - scores[j]).item() / math.sqrt(2))
                g = 0.5 * (np.sign((mos[i] - mos[j]).item()) + 1)
                terms.append(1 - math.sqrt(p * g + 1e-8) - math.sqrt((1 - p) * (1 - g) + 1e-8))
        expected.append(np.mean(terms))
    assert float(liqe.quality_fidelity_loss(scores, mos, groups)) == pytest.approx(np.mean(expected), abs=1e-6)
    # a dataset with a single image has no pair and does not count
    single = liqe.quality_fidelity_loss(scores, mos, torch.tensor([0, 0, 0, 1, 2]))
    assert float(single) == pytest.approx(expected[0], abs=1e-6)


def test_distortion_and_scene_fidelity_losses_ignore_unlabelled_rows():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    labels = torch.tensor([0, 2, -1])
    expected = np.mean(
        [1 - math.sqrt(0.7 + 1e-8) - 2 * math.sqrt(1e-8), 1 - math.sqrt(0.8 + 1e-8) - 2 * math.sqrt(1e-8)]
    )
    assert float(liqe.distortion_fidelity_loss(probs, labels)) == pytest.approx(expected, abs=1e-6)
    scene_labels = torch.tensor([[1.0, 0.0, 1.0], [-1.0, -1.0, -1.0], [0.0, 1.0, 0.0]])
    terms = []
    for row in (0, 2):
        for k in range(3):
            p, g = probs[row, k].item(), scene_labels[row, k].item()
            terms.append(1 - math.sqrt(p * g + 1e-8) - math.sqrt((1 - p) * (1 - g) + 1e-8))
    assert float(liqe.scene_fidelity_loss(probs, scene_labels)) == pytest.approx(np.mean(terms), abs=1e-6)
    assert float(liqe.distortion_fidelity_loss(probs, torch.tensor([-1, -1, -1]))) == 0


def test_dynamic_weight_average_follows_the_loss_ratios_of_the_last_two_epochs():
    dwa = liqe.DynamicWeightAverage(3, temperature=2.0)
    epoch_losses = {0: [1.0, 2.0, 4.0], 1: [0.5, 2.0, 2.0]}
    for epoch, values in epoch_losses.items():
        assert dwa.weights(epoch) == [1.0, 1.0, 1.0]  # no history yet: lambda = 1 in epochs 0 and 1
        dwa.update([v * 0.9 for v in values])
        dwa.update([v * 1.1 for v in values])  # epoch mean = values
    ratios = np.array([0.5, 1.0, 0.5])
    expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    np.testing.assert_allclose(dwa.weights(2), expected, rtol=1e-12)
    clone = liqe.DynamicWeightAverage(3)
    clone.load_state_dict(dwa.state_dict())
    np.testing.assert_allclose(clone.weights(2), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------


def test_split_files_are_read_with_labels_and_clear_errors(tmp_path, splits):
    records = read_liqe_split_file(splits[0])
    assert len(records) == 12 and all(Path(r.path).is_file() for r in records)
    assert {r.distortion for r in records} == {2, 3}  # noise, blur among the 11 LIQE classes
    assert records[0].scenes == (1, 0, 0, 0, 0, 1, 0, 0, 0) and min(r.mos for r in records) == 0.0
    assert max(r.mos for r in records) == 1.0
    bad = tmp_path / "bad.txt"
    bad.write_text("x.png\t3.0\tsmudge\tanimal\tinvalid\tinvalid\n")
    with pytest.raises(ConfigError, match=r"bad.txt line 1: unknown LIQE distortion 'smudge'"):
        read_liqe_split_file(bad)
    bad.write_text("x.png\tgood\n")
    with pytest.raises(ConfigError, match="is not a number"):
        read_liqe_split_file(bad)
    with pytest.raises(ConfigError, match=r"datasets\[0\]: unknown key\(s\) \['train_fle'\]"):
        load_records({"train_fle": "x"}, "train", "datasets[0]")
    with pytest.raises(ConfigError, match="exactly one dataset"):
        liqe_config(tmp_path, splits, multitask=False)


def test_each_step_draws_every_dataset_and_each_dataset_restarts_on_its_own(splits):
    from hf_iqa.models.liqe import LiqeImageProcessor

    records = [read_liqe_split_file(path) for path in splits]  # 12 and 9 training images
    steps = liqe.MultiDatasetSteps(records, [4, 3], 6, LiqeImageProcessor(patch_size=64), 3, seed=1)
    item = steps[0]
    assert item["pixel_values"].shape == (7, 3, 3, 64, 64) and item["dataset"].tolist() == [0] * 4 + [1] * 3
    # over one permutation cycle of a dataset every image appears exactly once
    seen = [i for step in range(3) for i in steps.indices(0, step)]
    assert sorted(seen) == list(range(12))
    seen = [i for step in range(3) for i in steps.indices(1, step)]
    assert sorted(seen) == list(range(9))
    # deterministic per (seed, epoch, index); the next epoch continues the streams
    torch.testing.assert_close(steps[0]["pixel_values"], item["pixel_values"], rtol=0, atol=0)
    steps.set_epoch(1)
    assert steps.indices(0, 0) != liqe.MultiDatasetSteps(records, [4, 3], 6, None, 3, seed=1).indices(0, 0)


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------


def _fixed_batch_loss(model, config, splits):
    """The multitask loss (unit weights) of a fixed batch, for before/after comparisons."""
    from hf_iqa.models.liqe import LiqeImageProcessor
    from hf_iqa.openai_clip import build_clip_tokenizer

    records = [read_liqe_split_file(path) for path in splits]
    steps = liqe.MultiDatasetSteps(records, [12, 9], 1, LiqeImageProcessor(patch_size=64), 3, seed=0)
    batch = steps[0]
    ids = build_clip_tokenizer()(model.config.prompts, padding="longest", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(pixel_values=batch["pixel_values"], patch_mask=batch["patch_mask"], input_ids=ids)
        return [
            float(liqe.quality_fidelity_loss(out.scores, batch["mos"], batch["dataset"])),
            float(liqe.distortion_fidelity_loss(out.distortion_probs, batch["distortion"])),
            float(liqe.scene_fidelity_loss(out.scene_probs, batch["scenes"])),
        ]


def test_multitask_training_lowers_the_losses_and_saves_fresh_text_embeddings(tmp_path, splits):
    from transformers import AutoModel

    from hf_iqa import pipeline
    from hf_iqa.openai_clip import build_clip_tokenizer

    config = liqe_config(tmp_path / "run", splits, max_steps=16, eval_steps=8)
    torch.manual_seed(config.seed)
    initial = liqe.build_model(config).eval()
    before = _fixed_batch_loss(initial, config, splits)
    result = common.train(config, liqe.build_task)

    logged = [h for h in result.history if "loss" in h]
    assert len(logged) == 16 and {"loss_quality", "loss_distortion", "loss_scene", "weight_scene"} <= set(logged[0])
    assert [h["weight_quality"] for h in logged[:8]] == [1.0] * 8  # DWA starts in epoch 2 (4 steps per epoch)
    assert any(h["weight_quality"] != 1.0 for h in logged[8:])
    assert all(abs(sum(h[f"weight_{t}"] for t in liqe.TASKS) - 3) < 1e-6 for h in logged)

    model = AutoModel.from_pretrained(tmp_path / "run" / "last").eval()
    after = _fixed_batch_loss(model, config, splits)
    assert sum(after) < 0.9 * sum(before), (before, after)
    assert after[1] < before[1] and after[2] < before[2]

    # the stored prompt embeddings are those of the trained text tower (not the initial ones)
    stored = model.prompt_text_features.clone()
    assert not torch.allclose(stored, initial.prompt_text_features, atol=1e-3)
    torch.testing.assert_close(model.compute_prompt_text_features(build_clip_tokenizer()), stored, rtol=0, atol=1e-6)
    assert (tmp_path / "run" / "last" / "tokenizer.json").is_file()
    assert "liqe" in (tmp_path / "run" / "last" / "README.md").read_text()

    # validation: each dataset's SRCC, and their mean (the paper's selection) as eval/srcc
    evals = [h for h in result.history if "eval/srcc" in h]
    assert evals and all({"eval/srcc_a_train", "eval/srcc_b_train", "eval/srcc_pooled"} <= set(h) for h in evals)
    for h in evals:
        assert h["eval/srcc"] == pytest.approx((h["eval/srcc_a_train"] + h["eval/srcc_b_train"]) / 2)

    # the folder scores through the pipeline, with the training-time validation preprocessing
    images = [str(p) for p in sorted((splits[0].parent).glob("*.png"))[:3]]
    scorer = pipeline("image-quality", model=str(tmp_path / "run" / "last"))
    scores = [r["score"] for r in scorer(images)]
    assert all(1.0 <= s <= 5.0 for s in scores) and len(set(scores)) == 3
    inputs = scorer.image_processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(scores, model(**inputs).scores.numpy(), atol=1e-5)


def test_resume_replays_sampling_and_dwa_bit_identically(tmp_path, splits):
    overrides = dict(max_steps=10, steps_per_epoch=2, checkpointing_steps=5, eval_steps=0, lr_scheduler="cosine")
    full = common.train(liqe_config(tmp_path / "full", splits, **overrides), liqe.build_task)
    checkpoint = tmp_path / "full" / "checkpoints" / "checkpoint_5"  # mid-epoch 2, DWA already active
    resumed = common.train(
        liqe_config(tmp_path / "resumed", splits, resume_from_checkpoint=str(checkpoint), **overrides), liqe.build_task
    )
    keys = ("loss", "loss_quality", "weight_quality", "weight_scene")
    full_logs = {h["step"]: [h[k] for k in keys] for h in full.history if "loss" in h and h["step"] > 5}
    resumed_logs = {h["step"]: [h[k] for k in keys] for h in resumed.history if "loss" in h}
    assert resumed_logs == full_logs and len(full_logs) == 5
    assert any(v[2] != 1.0 for v in full_logs.values())
    a = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_quality_only_variant_runs_from_yaml_through_hf_iqa_train(tmp_path, splits):
    from transformers import AutoModel

    from hf_iqa.commands import train as cli

    path = tmp_path / "koniq.yaml"
    spec = dataset_specs(splits[:1], batch_sizes=(6,))[0]
    path.write_text(
        yaml.safe_dump(
            dict(
                output_dir=str(tmp_path / "q"),
                clip_config=TINY_CLIP,
                multitask=False,
                datasets=[spec],
                num_epochs=2,
                steps_per_epoch=3,
                learning_rate=1e-3,
                eval_steps=0,
                checkpointing_steps=0,
                logging_steps=1,
            )  # fmt: skip
        )
    )
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["liqe", "--config", str(path), "--seed", "3"])) == 0
    model = AutoModel.from_pretrained(tmp_path / "q" / "best")
    assert model.config.num_prompts == 5 and model.config.prompts[0] == "a photo with bad quality"
    assert model.prompt_text_features.shape == (5, 16)
    lines = (tmp_path / "q" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert sum('"loss_quality"' in line for line in lines) == 6  # 2 epochs x 3 steps
    assert not any('"loss_scene"' in line for line in lines)


def test_example_yamls_load():
    folder = REPO_ROOT / "examples" / "training"
    for name in ("liqe_multitask.yaml", "liqe_koniq.yaml"):
        config = common.load_config(liqe.LiqeTrainingConfig, folder / name)
        assert config.learning_rate == 5e-6 and config.weight_decay == 1e-3 and config.lr_scheduler == "epoch_cosine"


TORCHRUN_SCRIPT = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {tests_dir!r})
import torch
torch.set_num_threads(1)
from tests.training.test_training_liqe import liqe_config
from hf_iqa.training import common, liqe

splits = [Path(p) for p in {splits!r}]
config = liqe_config({output_dir!r}, splits, max_steps=6, steps_per_epoch=4, eval_steps=6)
result = common.train(config, liqe.build_task)
logged = [h for h in result.history if "loss" in h]
report = {{"rank": int(os.environ["RANK"]), "losses": [h["loss"] for h in logged],
          "weights": [h["weight_scene"] for h in logged], "best": result.best_metric}}
Path({output_dir!r}, f"rank_{{report['rank']}}.json").write_text(json.dumps(report))
"""


def test_two_process_cpu_run_reduces_dwa_statistics_across_processes(tmp_path, splits):
    """DDP on CPU (torchrun, gloo): 4 steps per epoch = 2 per process, so DWA weights from epoch 2 on need the
    epoch means of both processes (a collective inside the loss); both ranks must agree on them."""
    import json
    import os
    import subprocess
    import sys

    from transformers import AutoModel

    script = tmp_path / "run_liqe.py"
    output_dir = tmp_path / "ddp"
    script.write_text(
        TORCHRUN_SCRIPT.format(tests_dir=str(REPO_ROOT), splits=[str(p) for p in splits], output_dir=str(output_dir))
    )
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    reports = [json.loads((output_dir / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["losses"] == reports[1]["losses"] and len(reports[0]["losses"]) == 6
    assert reports[0]["weights"] == reports[1]["weights"]
    assert reports[0]["weights"][:4] == [1.0] * 4 and reports[0]["weights"][4] != 1.0  # epoch 2 = steps 5, 6
    assert isinstance(reports[0]["best"], float)
    assert AutoModel.from_pretrained(output_dir / "last").prompt_text_features.shape == (495, 16)


def test_epoch_cosine_follows_the_original_loop_with_torch_cosine_annealing():
    """The oracle is torch's CosineAnnealingLR(T_max=5) driven the original way: stepped at each epoch's end, and
    once more when an epoch would start at lr 0."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    expected = []
    optimizer.step()  # (no gradients: changes nothing, keeps torch's step-order check quiet)
    for _ in range(32):
        if optimizer.param_groups[0]["lr"] == 0:
            scheduler.step()
        expected.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    actual = [liqe.epoch_cosine_factor(epoch, 5) for epoch in range(32)]
    np.testing.assert_allclose(actual, expected, atol=1e-12)
    assert min(actual) > 0 and max(actual[1:]) < 1.0 + 1e-12  # no epoch at lr 0; the cycle restarts


def test_epoch_cosine_schedule_in_a_training_run(tmp_path, splits):
    config = liqe_config(tmp_path / "run", splits, max_steps=12, eval_steps=0, lr_scheduler="epoch_cosine",
                         cosine_period_epochs=2)  # fmt: skip
    result = common.train(config, liqe.build_task)
    rates = [h["lr"] for h in result.history if "lr" in h]
    expected = [1e-3 * liqe.epoch_cosine_factor(step // 4, 2) for step in range(1, 13)]  # lr after each step
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
