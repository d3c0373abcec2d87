"""UniQA adapter recipe (hf_iqa.training.uniqa) on tiny CLIPs and synthetic images whose quality is visible: the
head's MSE goes down, only the trained head changes (frozen towers, BatchNorm statistics, the other head), the
folder loads with AutoModel and scores through the pipeline, and a second run adds the other task's head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import hf_iqa.models
from hf_iqa.training import common, uniqa
from hf_iqa.training.common import ConfigError
from hf_iqa.training.iqa_data import RandomCropImages, read_liqe_split_file
from tests.testing_utils import REPO_ROOT

hf_iqa.models.register_all()

TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, hidden_act="quick_gelu",
            eos_token_id=49407)  # fmt: skip
VIT = dict(
    clip_config=dict(
        text_config=TEXT, projection_dim=16, logit_scale_init_value=2.3026,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=32, hidden_act="quick_gelu"),
    ),
)  # fmt: skip
RESNET = dict(
    backbone_type="resnet",
    clip_config=dict(text_config=TEXT, projection_dim=16, logit_scale_init_value=2.3026),
    resnet_config=dict(layers=[1, 1, 1, 1], width=8, projection_dim=16, num_attention_heads=4, image_size=64,
                       position_embedding_mode="legacy_1d"),
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def brightness_split(folder, count: int, seed: int) -> dict:
    """Textured images whose MOS is their brightness: a signal a frozen random tower does carry."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        level = rng.uniform(0.1, 0.9)
        pixels = np.clip(level + rng.normal(0, 0.08, (80, 96, 3)), 0, 1)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{index}.png")
        lines.append(f"{index}.png\t{level * 100:.2f}")
    (folder / "train.txt").write_text("\n".join(lines[: count * 3 // 4]) + "\n")
    (folder / "val.txt").write_text("\n".join(lines[count * 3 // 4 :]) + "\n")
    return {"name": "synthetic", "train_file": str(folder / "train.txt"), "validation_file": str(folder / "val.txt")}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return brightness_split(tmp_path_factory.mktemp("uniqa_data"), 32, seed=3)


def uniqa_config(output_dir, data, **overrides):
    values = dict(
        output_dir=str(output_dir), model_config=VIT, data=data, num_epochs=None, max_steps=40, train_batch_size=6,
        learning_rate=3e-2, eval_steps=20, logging_steps=1, checkpointing_steps=0, seed=0,
    )  # fmt: skip
    values.update(overrides)
    return uniqa.UniQaTrainingConfig(**values)


def fixed_batch_mse(model, data, task="quality"):
    records = read_liqe_split_file(data["train_file"])
    batch = torch.stack([RandomCropImages(records, 64, uniqa.CLIP_MEAN, uniqa.CLIP_STD)[i]["pixel_values"]
                         for i in range(len(records))])  # fmt: skip
    mos = torch.tensor([r.mos for r in records])
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.eval()(pixel_values=batch, task=task).scores, mos))


def test_quality_head_trains_alone_and_the_folder_scores(tmp_path, split):
    from transformers import AutoModel

    from hf_iqa import pipeline

    config = uniqa_config(tmp_path / "run", split)
    torch.manual_seed(config.seed)  # as `train` seeds before building: the same random backbone
    initial = uniqa.build_model(config)
    assert {n for n, p in initial.named_parameters() if p.requires_grad} == {
        "heads.quality.adapter.fc.0.weight", "heads.quality.adapter.fc.2.weight", "heads.quality.score_level"
    }  # fmt: skip
    before = fixed_batch_mse(initial, split)
    result = common.train(config, uniqa.build_task)
    assert result.best_metric > 0.8  # validation SRCC with the held-out MOS

    model = AutoModel.from_pretrained(tmp_path / "run" / "last").eval()
    assert model.config.task == "quality" and model.config.adapter_tasks == ["quality"]
    after = fixed_batch_mse(model, split)
    assert after < 0.6 * before, (before, after)
    trained, start = model.state_dict(), initial.state_dict()
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    assert changed == {"heads.quality.adapter.fc.0.weight", "heads.quality.adapter.fc.2.weight",
                       "heads.quality.score_level"}  # fmt: skip
    assert model.config.task_score_ranges["quality"] == pytest.approx(
        [
            float(model.heads["quality"].score_level.detach().min()),
            float(model.heads["quality"].score_level.detach().max()),
        ],
        abs=1e-6,
    )

    records = read_liqe_split_file(split["validation_file"])
    scorer = pipeline("image-quality", model=str(tmp_path / "run" / "best"))
    results = scorer([r.path for r in records])
    inputs = scorer.image_processor(images=[Image.open(r.path).convert("RGB") for r in records], return_tensors="pt")
    best = AutoModel.from_pretrained(tmp_path / "run" / "best").eval()
    with torch.no_grad():
        np.testing.assert_allclose([r["score"] for r in results], best(**inputs).scores.numpy(), atol=1e-5)
    assert "uniqa" in (tmp_path / "run" / "best" / "README.md").read_text()


def test_resnet_backbone_stays_frozen_and_a_second_run_adds_the_aesthetics_head(tmp_path, split):
    from transformers import AutoModel

    first = uniqa_config(tmp_path / "q", split, model_config=RESNET, max_steps=4, eval_steps=0)
    common.train(first, uniqa.build_task)
    quality = load_file(str(tmp_path / "q" / "last" / "model.safetensors"))
    torch.manual_seed(first.seed)
    initial = uniqa.build_model(first).state_dict()
    bn_stats = [k for k in quality if "running_mean" in k or "running_var" in k]
    assert bn_stats and all(torch.equal(quality[k], initial[k]) for k in bn_stats)  # eval-mode backbone

    second = uniqa_config(
        tmp_path / "a", split, model_config=None, model_name_or_path=str(tmp_path / "q" / "last"), task="aesthetics",
        max_steps=4, eval_steps=0,
    )  # fmt: skip
    common.train(second, uniqa.build_task)
    both = AutoModel.from_pretrained(tmp_path / "a" / "last")
    assert both.config.task == "aesthetics" and sorted(both.config.adapter_tasks) == ["aesthetics", "quality"]
    weights = both.state_dict()
    for key, value in quality.items():
        if not key.startswith("heads.aesthetics."):
            assert torch.equal(weights[key], value), key  # the quality head and the backbone are untouched
    assert not torch.equal(weights["heads.aesthetics.score_level"], quality["heads.aesthetics.score_level"])


def test_data_from_an_hf_iqa_data_benchmark_folder(tmp_path):
    """`benchmark: folder` goes through hf_iqa.data: its split column and the given MOS range (higher = better)."""
    from hf_iqa.training.iqa_data import load_records

    rows = ["image,mos,split"]
    for index in range(10):
        Image.fromarray(np.full((40, 40, 3), 20 * index, np.uint8)).save(tmp_path / f"{index}.png")
        rows.append(f"{index}.png,{10 * index},{'train' if index < 7 else 'validation'}")
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n")
    spec = {"benchmark": "folder", "data_root": str(tmp_path), "options": {"mos_range": [0, 100]}}
    train, validation = load_records(spec, "train"), load_records(spec, "validation")
    assert [Path(r.path).name for r in validation] == ["7.png", "8.png", "9.png"]
    assert [r.mos for r in train] == pytest.approx([0.1 * i for i in range(7)])
    flipped = load_records(spec | {"higher_is_better": False}, "validation")
    assert [r.mos for r in flipped] == pytest.approx([0.3, 0.2, 0.1])


def test_configuration_errors_are_clear(tmp_path, split):
    with pytest.raises(ConfigError, match="task must be"):
        uniqa_config(tmp_path, split, task="beauty")
    with pytest.raises(ConfigError, match="data: give the dataset mapping"):
        uniqa_config(tmp_path, {})
    with pytest.raises(ConfigError, match="model_name_or_path"):
        uniqa.build_model(uniqa_config(tmp_path, split, model_config=None))


def test_example_yamls_load():
    folder = REPO_ROOT / "examples" / "training"
    koniq = common.load_config(uniqa.UniQaTrainingConfig, folder / "uniqa_koniq.yaml")
    livec = common.load_config(uniqa.UniQaTrainingConfig, folder / "uniqa_livec.yaml")
    assert (koniq.num_epochs, livec.num_epochs) == (20, 50)
    assert koniq.optimizer == livec.optimizer == "adam" and koniq.learning_rate == livec.learning_rate == 2e-4
