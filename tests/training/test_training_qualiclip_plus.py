"""QualiCLIP+ prompt-learning recipe (hf_iqa.training.qualiclip_plus) on a tiny QualiCLIP with a text tower and
synthetic images whose MOS is visible: the MSE + PLCC loss goes down, only the learned context changes, the saved
folder stores prompt features recomputed from the context (image-only scoring), loads with AutoModel and scores
through the pipeline exactly as the training-time view does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hf_iqa.models
from hf_iqa.training import common, qualiclip_plus
from hf_iqa.training.common import ConfigError
from hf_iqa.training.iqa_data import RandomCropImages, plcc_loss, read_liqe_split_file
from tests.testing_utils import REPO_ROOT
from tests.training.test_training_uniqa import brightness_split

hf_iqa.models.register_all()

TINY = dict(
    vision_config=dict(layers=[1, 1, 1, 1], width=8, projection_dim=32, num_attention_heads=4, image_size=64),
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407),
    projection_dim=32,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return brightness_split(tmp_path_factory.mktemp("qcp_data"), 32, seed=4)


def plus_config(output_dir, data, **overrides):
    values = dict(
        output_dir=str(output_dir), model_config=TINY, data=data, num_epochs=None, max_steps=30, crop_size=64,
        train_batch_size=6, eval_batch_size=4, learning_rate=2e-2, prompt_logit_scale=10.0, eval_steps=15,
        logging_steps=1, checkpointing_steps=0, seed=1,
    )  # fmt: skip
    values.update(overrides)
    return qualiclip_plus.QualiClipPlusTrainingConfig(**values)


def fixed_batch_loss(view, data):
    records = read_liqe_split_file(data["train_file"])
    dataset = RandomCropImages(records, 64, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    pixels = torch.stack([dataset[i]["pixel_values"] for i in range(len(records))])
    mos = torch.tensor([r.mos for r in records])
    with torch.no_grad():
        scores = view(pixels)
        return float(F.mse_loss(scores, mos) + plcc_loss(scores, mos))


def test_context_tokens_learn_and_the_folder_scores_image_only(tmp_path, split):
    from transformers import AutoModel

    from hf_iqa import pipeline

    config = plus_config(tmp_path / "run", split)
    torch.manual_seed(config.seed)
    initial = qualiclip_plus.build_model(config)
    assert [n for n, p in initial.named_parameters() if p.requires_grad] == ["prompt_learner.ctx"]
    assert initial.config.prompt_token_lengths == [3, 3, 3, 3, 3, 3, 5, 5, 5, 3, 5, 5, 3, 3]  # qualiclip.md §2.1
    before = fixed_batch_loss(qualiclip_plus.PromptLearningView(initial), split)
    start = {k: v.clone() for k, v in initial.state_dict().items()}
    result = common.train(config, qualiclip_plus.build_task)
    assert {"loss_mse", "loss_plcc"} <= set(result.history[0])

    model = AutoModel.from_pretrained(tmp_path / "run" / "last").eval()
    assert model.config.variant == "qualiclip+" and model.config.prompt_logit_scale == 10.0
    after = fixed_batch_loss(qualiclip_plus.PromptLearningView(model), split)
    assert after < 0.7 * before, (before, after)
    trained = model.state_dict()
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    assert changed == {"prompt_learner.ctx", "prompt_text_features"}
    with torch.no_grad():  # the stored features are those of the learned context
        expected = F.normalize(model.get_prompt_learner_features().float(), dim=-1)
    torch.testing.assert_close(model.prompt_text_features, expected, rtol=0, atol=1e-6)

    records = read_liqe_split_file(split["validation_file"])
    images = [Image.open(r.path).convert("RGB") for r in records]
    scorer = pipeline("image-quality", model=str(tmp_path / "run" / "last"))
    scores = np.array([r["score"] for r in scorer(images)])
    inputs = scorer.image_processor(images=images, return_tensors="pt")
    with torch.no_grad():
        view_scores = qualiclip_plus.PromptLearningView(model)(inputs["pixel_values"]).numpy()
        model_scores = model(**inputs).scores.numpy()
    np.testing.assert_allclose(scores, model_scores, atol=1e-6)
    np.testing.assert_allclose(scores, view_scores, atol=1e-5)  # inference = the training-time score
    assert result.best_metric > 0.5


def test_image_only_models_and_bad_options_are_refused(tmp_path, split):
    image_only = {k: v for k, v in TINY.items() if k != "text_config"}
    with pytest.raises(ConfigError, match="needs the text tower"):
        qualiclip_plus.build_model(plus_config(tmp_path, split, model_config=image_only))
    with pytest.raises(ConfigError, match="n_ctx must be an even number"):
        plus_config(tmp_path, split, n_ctx=5)
    with pytest.raises(ConfigError, match="data: give the dataset mapping"):
        plus_config(tmp_path, {})


def test_example_yaml_loads():

    path = REPO_ROOT / "examples" / "training" / "qualiclip_plus_koniq.yaml"
    config = common.load_config(qualiclip_plus.QualiClipPlusTrainingConfig, path)
    assert (config.learning_rate, config.num_epochs, config.crop_size, config.n_ctx) == (2e-3, 50, 384, 16)
