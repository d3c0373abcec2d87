"""QualiCLIP self-supervised recipe (hf_iqa.training.qualiclip): a tiny QualiCLIP-style model trains on pristine
images only (the image tower alone changes, BatchNorm statistics frozen by default), the folder loads with
AutoModel and scores through the pipeline; and the real learning check: trained on real photos shipped with
scikit-image, a small random-init model orders the degradation levels of held-out photos better than before."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import hf_iqa.models
from hf_iqa.training import common, qualiclip
from hf_iqa.training.common import ConfigError
from tests.testing_utils import REPO_ROOT

hf_iqa.models.register_all()

TINY = dict(
    vision_config=dict(layers=[1, 1, 1, 1], width=8, projection_dim=32, num_attention_heads=4, image_size=64),
    projection_dim=32, prompt_pairs=[["Good photo.", "Bad photo."], ["Sharp image.", "Blurry image."]],
    prompt_logit_scale=1.0,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory):
    from tests.testing_utils import random_image

    root = tmp_path_factory.mktemp("pristine")
    for split, seeds in (("train", range(8)), ("held_out", range(20, 23))):
        (root / split).mkdir()
        for seed in seeds:
            random_image(96, 80, seed=seed).save(root / split / f"{seed}.png")
    return root / "train", root / "held_out"


def qc_config(output_dir, photo_dirs, **overrides):
    values = dict(
        output_dir=str(output_dir), model_config=TINY, image_dir=str(photo_dirs[0]),
        validation_image_dir=str(photo_dirs[1]), crop_size=64, degradation_groups=["blur", "noise"],
        prompt_pairs=[0, 1], train_batch_size=4, max_steps=30, optimizer="adam", learning_rate=3e-3,
        freeze_batch_norm=False,
        eval_steps=15, logging_steps=1, checkpointing_steps=0, seed=2,
    )  # fmt: skip
    values.update(overrides)
    return qualiclip.QualiClipTrainingConfig(**values)


def test_image_tower_trains_on_pristine_images_and_the_folder_scores(tmp_path, photo_dirs):
    from transformers import AutoModel

    from hf_iqa import pipeline
    from hf_iqa.training.qualiclip_data import DegradedCropPairs
    from hf_iqa.training.qualiclip_losses import QualiClipLossConfig, qualiclip_step_loss

    config = qc_config(tmp_path / "run", photo_dirs)
    torch.manual_seed(config.seed)
    initial = qualiclip.build_model(config)
    start = {k: v.clone() for k, v in initial.state_dict().items()}
    batch = torch.stack([DegradedCropPairs(sorted(photo_dirs[0].iterdir()), crop_size=64, seed=7,
                                           groups=["blur", "noise"])[i]["pixel_values"] for i in range(8)])  # fmt: skip

    def fixed_batch_loss(model):
        with torch.no_grad():
            embeds = model.eval()(pixel_values=batch.flatten(0, 2)).image_embeds
            losses = [qualiclip_step_loss(embeds, model.prompt_text_features[2 * p : 2 * p + 2], (8, 2, 5),
                                          QualiClipLossConfig())["loss"] for p in (0, 1)]  # fmt: skip
            return float(torch.stack(losses).mean())

    before = fixed_batch_loss(initial)
    result = common.train(config, qualiclip.build_task)
    assert {"l_pos", "l_neg", "l_cons"} <= set(result.history[0])
    assert [h["step"] for h in result.history if "eval/srcc" in h] == [15, 30]

    model = AutoModel.from_pretrained(tmp_path / "run" / "last").eval()
    after = fixed_batch_loss(model)
    assert after < 0.8 * before, (before, after)
    trained = model.state_dict()
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    assert changed and all(k.startswith("vision_model.") for k in changed)  # prompts stay fixed
    assert any("running_mean" in k for k in changed)  # a random-init tower needs its BatchNorm statistics
    assert "qualiclip" in (tmp_path / "run" / "last" / "README.md").read_text()

    images = sorted(photo_dirs[1].iterdir())
    scorer = pipeline("image-quality", model=str(tmp_path / "run" / "last"))
    scores = [r["score"] for r in scorer([str(p) for p in images])]
    from PIL import Image

    inputs = scorer.image_processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(scores, model(**inputs).scores.numpy(), atol=1e-6)


def test_frozen_batch_norm_keeps_the_statistics(tmp_path, photo_dirs):
    from safetensors.torch import load_file

    config = qc_config(tmp_path / "frozen", photo_dirs, freeze_batch_norm=True, max_steps=2, eval_steps=0)
    assert qualiclip.QualiClipTrainingConfig.freeze_batch_norm  # the default, for fine-tuning CLIP RN50
    torch.manual_seed(config.seed)
    start = qualiclip.build_model(config).state_dict()
    common.train(config, qualiclip.build_task)
    trained = load_file(str(tmp_path / "frozen" / "last" / "model.safetensors"))
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    assert any(k.endswith("conv1.weight") for k in changed)
    assert not any("running_" in k or "num_batches_tracked" in k for k in changed)


def test_configuration_errors_are_clear(tmp_path, photo_dirs):
    with pytest.raises(ConfigError, match="image_dir: give a folder"):
        qc_config(tmp_path, photo_dirs, image_dir="")
    with pytest.raises(ConfigError, match="is not a folder"):
        qualiclip.build_task(qc_config(tmp_path, photo_dirs, image_dir=str(tmp_path / "nope")), None)
    with pytest.raises(ConfigError, match=r"prompt_pairs \[0, 5\]: the model has 2 prompt pairs"):
        qualiclip.build_model(qc_config(tmp_path, photo_dirs, prompt_pairs=[0, 5]))


def test_example_yaml_loads():
    path = REPO_ROOT / "examples" / "training" / "qualiclip.yaml"
    config = common.load_config(qualiclip.QualiClipTrainingConfig, path)
    assert (config.crop_size, config.num_levels, config.prompt_pairs) == (224, 5, [0])


# ---------------------------------------------------------------------------------------------------------------
# the real learning check (bench/bench_training_qualiclip.py runs it longer, over several seeds)
# ---------------------------------------------------------------------------------------------------------------


def test_learns_to_rank_degradation_levels_of_held_out_real_photos(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from bench_training_qualiclip import prepare_photos, run  # scikit-image (test extra) ships the photos

    prepare_photos(tmp_path, short_side=160)
    report = run(tmp_path, steps=LEARNING_STEPS, seed=0, width=8, crop_size=64, learning_rate=3e-3)
    before, after = report["before"]["srcc"], report["after"]["srcc"]
    print(f"level-ranking SRCC on held-out photos: untrained {before:+.3f}, trained {after:+.3f}")
    assert after > before + 0.2 and after > 0.3, report


LEARNING_STEPS = 300
