"""QualiCLIP model, CLIP-ResNet tower and image processor: parity with the OpenAI CLIP code (openai-clip on PyPI,
random weights), native-resolution batching, BatchNorm folding, scales, bf16.

The OpenAI attention pool always adds its positional embedding; QualiCLIP adds none. The oracle for that path is
the OpenAI module with its table replaced by a single zero row (`x + 0` at every size), i.e. the OpenAI layers run
with the position embedding removed.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import hf_iqa
from hf_iqa.converters.qualiclip import convert_resnet_state_dict
from hf_iqa.models.qualiclip import (
    ClipResNetConfig,
    ClipResNetVisionModel,
    QualiClipConfig,
    QualiClipImageProcessor,
    QualiClipModel,
)
from tests.testing_utils import random_image

TINY = dict(layers=[1, 1, 1, 1], width=8, projection_dim=32, num_attention_heads=4, image_size=64)
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
SIZES = [(64, 64), (96, 64), (45, 77), (33, 130)]  # (height, width): native, non-square, odd and < 224


def randomize_batch_norm(module: nn.Module, seed: int = 0, calibrate_size: int | None = None) -> None:
    """Non-trivial BatchNorm statistics, so that a dropped or mis-folded BatchNorm shows.

    With `calibrate_size`, running statistics are first measured on random images (as training would), which keeps
    the random network's embeddings image-dependent; affine weights are then randomised."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        if calibrate_size is not None:
            for bn in norms:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average
            module.train()(torch.randn(4, 3, calibrate_size, calibrate_size, generator=generator))
            module.eval()
        for bn in norms:
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            if calibrate_size is None:
                bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                bn.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)


def make_oracle_resnet(openai_clip_model, layers=(1, 1, 1, 1), width=8, output_dim=32, resolution=64, seed=0):
    """A random OpenAI ModifiedResNet with BatchNorm statistics measured on random images."""
    torch.manual_seed(seed)
    heads = width * 32 // 64
    oracle = openai_clip_model.ModifiedResNet(list(layers), output_dim, heads, resolution, width)
    randomize_batch_norm(oracle, seed, calibrate_size=resolution if width <= 16 else None)
    return oracle.eval()


def without_position_embedding(oracle: nn.Module) -> nn.Module:
    """The OpenAI tower with its attention-pool table replaced by one zero row: adds exactly 0 at any size."""
    clone = copy.deepcopy(oracle)
    channels = clone.attnpool.positional_embedding.shape[1]
    clone.attnpool.positional_embedding = nn.Parameter(torch.zeros(1, channels))
    return clone


def tower_from_oracle(oracle: nn.Module, **config) -> ClipResNetVisionModel:
    tower = ClipResNetVisionModel(ClipResNetConfig(**{**TINY, **config})).eval()
    tower.load_state_dict(convert_resnet_state_dict(oracle.state_dict(), prefix=""), strict=True)
    return tower


def qualiclip_from_oracle(oracle: nn.Module, text_features: torch.Tensor, **config) -> QualiClipModel:
    model = QualiClipModel(QualiClipConfig(vision_config=TINY, projection_dim=32, **config)).eval()
    weights = {f"vision_model.{k}": v for k, v in convert_resnet_state_dict(oracle.state_dict(), prefix="").items()}
    model.load_state_dict({**weights, "prompt_text_features": text_features}, strict=True)
    return model


def reference_scores(image_embeds: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """QualiCLIP's score (paper / official hubconf): mean over pairs of softmax(scale * cos)[positive]."""
    logits = scale * F.normalize(image_embeds, dim=-1) @ text_features.t()
    return logits.view(len(logits), -1, 2).softmax(dim=-1)[..., 0].mean(dim=-1)


def random_text_features(num_prompts: int = 14, dim: int = 32, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(num_prompts, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def assert_embeds_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Embedding directions (what the score uses) within 1e-5: scale-free, so fp32 rounding on embeddings of norm
    ~10 does not count, while any mapping mistake does."""
    torch.testing.assert_close(F.normalize(actual, dim=-1), F.normalize(expected, dim=-1), atol=1e-5, rtol=0)


def pixels(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------------------
# Tower parity with the OpenAI ModifiedResNet
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fold", [True, False])
def test_tower_matches_openai_at_native_size_with_fixed_table(openai_clip_model, fold):
    oracle = make_oracle_resnet(openai_clip_model, layers=(2, 1, 2, 1))
    tower = tower_from_oracle(oracle, layers=[2, 1, 2, 1], position_embedding_mode="fixed", fold_batch_norm=fold)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = oracle(x)
        actual = tower(x).pooler_output
    assert_embeds_close(actual, expected)


@pytest.mark.parametrize("height,width", SIZES)
def test_tower_without_position_embedding_matches_openai_at_any_size(openai_clip_model, height, width):
    oracle = make_oracle_resnet(openai_clip_model)
    tower = tower_from_oracle(oracle, position_embedding_mode="none")
    x = pixels(height, width)[None]
    with torch.no_grad():
        expected = without_position_embedding(oracle)(x)
        actual = tower(x).pooler_output
        with_table = oracle(x) if (height, width) == (64, 64) else None
    assert_embeds_close(actual, expected)
    if with_table is not None:  # the table matters: adding it gives another result
        assert (F.normalize(with_table, dim=-1) - F.normalize(actual, dim=-1)).abs().max() > 1e-3


@pytest.mark.parametrize("height,width", [(64, 64), (96, 64), (45, 77)])
def test_legacy_1d_position_embedding_is_a_token_axis_resize(openai_clip_model, height, width):
    """pyiqa's `pos_embedding=True`: the (HW+1, C) table resized bicubically along the token axis only."""
    oracle = make_oracle_resnet(openai_clip_model)
    tower = tower_from_oracle(oracle, position_embedding_mode="legacy_1d")
    x = pixels(height, width)[None]
    tokens = (height // 32) * (width // 32) + 1
    table = oracle.attnpool.positional_embedding.detach()
    resized = F.interpolate(table[None, None], size=(tokens, table.shape[1]), mode="bicubic", align_corners=False)
    reference = copy.deepcopy(oracle)
    reference.attnpool.positional_embedding = nn.Parameter(resized[0, 0])
    with torch.no_grad():
        assert_embeds_close(tower(x).pooler_output, reference(x))
        if (height, width) == (64, 64):  # identity at the training size
            assert_embeds_close(tower(x).pooler_output, oracle(x))


def test_fixed_mode_rejects_other_sizes(openai_clip_model):
    tower = tower_from_oracle(make_oracle_resnet(openai_clip_model), position_embedding_mode="fixed")
    with pytest.raises(ValueError, match="position_embedding_mode='fixed' needs 64x64"):
        tower(torch.randn(1, 3, 96, 64))


def test_parity_check_detects_a_dropped_block(openai_clip_model):
    """The comparison above is sensitive: removing one residual block moves the output far beyond 1e-5."""
    oracle = make_oracle_resnet(openai_clip_model, layers=(2, 1, 1, 1))
    tower = tower_from_oracle(oracle, layers=[2, 1, 1, 1], position_embedding_mode="fixed")
    del tower.layer1[1]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        difference = F.normalize(tower(x).pooler_output, dim=-1) - F.normalize(oracle(x), dim=-1)
    assert difference.abs().max() > 1e-3


def test_full_size_rn50_matches_openai(openai_clip_model):
    """One real-size RN50 (38 M parameters), the default config, vs OpenAI's RN50 definition, non-square input."""
    oracle = make_oracle_resnet(openai_clip_model, layers=(3, 4, 6, 3), width=64, output_dim=1024, resolution=224)
    tower = ClipResNetVisionModel(ClipResNetConfig()).eval()
    tower.load_state_dict(convert_resnet_state_dict(oracle.state_dict(), prefix=""), strict=True)
    assert sum(p.numel() for p in tower.parameters()) == sum(p.numel() for p in oracle.parameters())
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        assert_embeds_close(tower(x).pooler_output, without_position_embedding(oracle)(x))


def test_batch_norm_folding_matches_unfolded_batch_norm(openai_clip_model):
    oracle = make_oracle_resnet(openai_clip_model, layers=(2, 1, 1, 2))
    tower = tower_from_oracle(oracle, layers=[2, 1, 1, 2])
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        folded = tower(x).pooler_output
        tower.config.fold_batch_norm = False
        unfolded = tower(x).pooler_output
        expected = without_position_embedding(oracle)(x)
    assert_embeds_close(folded, unfolded)
    assert_embeds_close(folded, expected)
    assert (folded - unfolded).abs().max() > 0  # the two paths really differ in how they compute
    tower.config.fold_batch_norm = True
    tower.train()  # training uses batch statistics: folding must not apply
    out = tower(x).pooler_output
    out.sum().backward()
    assert tower.conv1.weight.grad is not None and tower.bn1.weight.grad is not None


# --------------------------------------------------------------------------------------------------------------
# QualiClipModel
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [100.0, 50.0])
def test_scores_match_openai_tower_and_score_formula(openai_clip_model, scale):
    oracle = make_oracle_resnet(openai_clip_model)
    text = random_text_features()
    model = qualiclip_from_oracle(oracle, text, prompt_logit_scale=scale)
    images = [pixels(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    reference_tower = without_position_embedding(oracle)
    with torch.no_grad():
        embeds = torch.cat([reference_tower(x[None]) for x in images])
        output = model(pixel_values=images)
    expected = reference_scores(embeds, text, scale)
    torch.testing.assert_close(output.scores, expected, atol=1e-5, rtol=0)
    other = reference_scores(embeds, text, 150.0 - scale)  # the other published scale
    assert (output.scores - other).abs().max() > 1e-4  # a wrong scale would fail the check above
    assert list(output.keys())[0] == "scores"
    assert output.scores.shape == (4,) and output.scores.dtype == torch.float32
    assert output.pair_probs.shape == (4, 7) and output.logits.shape == (4, 7, 2)
    torch.testing.assert_close(output.scores, output.pair_probs.mean(-1))
    torch.testing.assert_close(output.image_embeds, F.normalize(embeds, dim=-1), atol=1e-5, rtol=0)
    assert ((output.scores >= 0) & (output.scores <= 1)).all()


def test_mixed_size_batch_equals_one_by_one(openai_clip_model):
    model = qualiclip_from_oracle(make_oracle_resnet(openai_clip_model), random_text_features())
    images = [pixels(64, 64, 0), pixels(96, 64, 1), pixels(45, 77, 2), pixels(64, 64, 3), pixels(96, 64, 4)]
    with torch.no_grad():
        one_by_one = torch.cat([model(pixel_values=x[None]).scores for x in images])
        batched = model(pixel_values=images).scores
        model.config.max_pixels_per_forward = 64 * 64  # one image per chunk
        chunked = model(pixel_values=images).scores
        stacked = model(pixel_values=torch.stack([images[0], images[3]])).scores
    torch.testing.assert_close(batched, one_by_one, atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked, one_by_one, atol=1e-6, rtol=0)
    torch.testing.assert_close(stacked, one_by_one[[0, 3]], atol=1e-6, rtol=0)
    assert len(set(one_by_one.tolist())) == 5  # distinct images, distinct scores: order is checked


def test_bad_inputs_raise_clear_errors(openai_clip_model):
    model = qualiclip_from_oracle(make_oracle_resnet(openai_clip_model), random_text_features())
    with pytest.raises(ValueError, match=r"shape \(3, H, W\)"):
        model(pixel_values=[torch.randn(4, 64, 64)])
    with pytest.raises(ValueError, match="at least 32x32"):
        model(pixel_values=torch.randn(1, 3, 16, 64))
    with pytest.raises(TypeError, match="tensor or a list"):
        model(pixel_values=np.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match="empty"):
        model(pixel_values=[])
    with pytest.raises(ValueError, match="image-only"):
        model.get_prompt_learner_features()


def test_bf16_runs_and_stays_close(openai_clip_model):
    model = qualiclip_from_oracle(make_oracle_resnet(openai_clip_model), random_text_features())
    images = [pixels(64, 64), pixels(45, 77, 1)]
    with torch.no_grad():
        fp32 = model(pixel_values=images).scores
        model.to(torch.bfloat16)
        bf16 = model(pixel_values=images)  # fp32 inputs are cast to the tower's dtype
    assert bf16.scores.dtype == torch.float32 and torch.isfinite(bf16.scores).all()
    assert (bf16.scores - fp32).abs().max() < 0.05


def test_config_defaults_and_prompt_table():
    config = QualiClipConfig()
    assert config.prompts == [
        "Good photo.",
        "Bad photo.",
        "Sharp image.",
        "Blurry image.",
        "Sharp edges.",
        "Blurry edges.",
        "High-resolution image.",
        "Low-resolution image.",
        "Noise-free image.",
        "Noisy image.",
        "High-quality image.",
        "Low-quality image.",
        "Good picture.",
        "Bad picture.",
    ]  # fmt: skip  (14 prompts: not the 13 of the official hubconf's missing comma)
    assert config.prompt_logit_scale == 100.0 and config.score_range == [0.0, 1.0] and config.higher_is_better
    assert config.output_labels["pair_probs"][0] == "Good photo./Bad photo."
    assert config.vision_config.layers == [3, 4, 6, 3] and config.vision_config.position_embedding_mode == "none"
    assert config.text_config is None
    with pytest.raises(ValueError, match="position_embedding_mode"):
        ClipResNetConfig(position_embedding_mode="2d")
    with pytest.raises(ValueError, match="prompt_logit_scale"):
        QualiClipConfig(prompt_logit_scale=0)
    with pytest.raises(ValueError, match="use_prompt_learner"):
        QualiClipConfig(use_prompt_learner=True)


def test_save_and_load_with_auto_classes_and_scale_override(openai_clip_model, tmp_path):
    hf_iqa.register_all()
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    text = random_text_features()
    model = qualiclip_from_oracle(make_oracle_resnet(openai_clip_model), text)
    model.save_pretrained(tmp_path)
    QualiClipImageProcessor().save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "hf_iqa_qualiclip"
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), QualiClipImageProcessor)
    images = [pixels(64, 64), pixels(45, 77, 1)]
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    rescaled = AutoModel.from_pretrained(tmp_path, prompt_logit_scale=50.0).eval()
    assert isinstance(loaded, QualiClipModel) and rescaled.config.prompt_logit_scale == 50.0
    with torch.no_grad():
        embeds = model.get_image_features(images)
        torch.testing.assert_close(loaded(pixel_values=images).scores, reference_scores(embeds, text, 100.0))
        torch.testing.assert_close(rescaled(pixel_values=images).scores, reference_scores(embeds, text, 50.0))
    torch.testing.assert_close(loaded.prompt_text_features, text)
    half = AutoModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert half.vision_model.conv1.weight.dtype == torch.bfloat16
    assert half.prompt_text_features.dtype == torch.float32  # kept exact: the scale amplifies their rounding
    with torch.no_grad():
        assert half(pixel_values=images).scores.dtype == torch.float32
    torch.testing.assert_close(loaded.vision_model.bn1.running_var, model.vision_model.bn1.running_var)


def test_base_model_prefix_moves_the_tower_between_tower_and_model_folders(openai_clip_model, tmp_path):
    """`base_model_prefix = "vision_model"`: a saved tower initialises a QualiCLIP model and the other way round."""
    oracle = make_oracle_resnet(openai_clip_model)
    model = qualiclip_from_oracle(oracle, random_text_features())
    model.save_pretrained(tmp_path / "model")
    tower = ClipResNetVisionModel.from_pretrained(tmp_path / "model").eval()
    torch.testing.assert_close(tower.conv1.weight, model.vision_model.conv1.weight, atol=0, rtol=0)
    tower.save_pretrained(tmp_path / "tower")
    rebuilt = QualiClipModel.from_pretrained(tmp_path / "tower", config=model.config).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            rebuilt.get_image_features([pixels(64, 64)]), model.get_image_features([pixels(64, 64)])
        )


def test_validation_runs_for_from_pretrained_overrides(openai_clip_model, tmp_path):
    qualiclip_from_oracle(make_oracle_resnet(openai_clip_model), random_text_features()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="QualiClipConfig.prompt_logit_scale"):
        QualiClipModel.from_pretrained(tmp_path, prompt_logit_scale=-1.0)


# --------------------------------------------------------------------------------------------------------------
# Image processor and pipeline
# --------------------------------------------------------------------------------------------------------------
def to_tensor_normalize(image: Image.Image) -> torch.Tensor:
    """torchvision's ToTensor + Normalize(CLIP mean, std), written with numpy."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(((array - MEAN) / STD).transpose(2, 0, 1).copy())


def test_processor_native_resolution_list_output():
    processor = QualiClipImageProcessor()
    images = [random_image(130, 100, 0), random_image(64, 64, 1), random_image(77, 45, 2, mode="L")]
    out = processor(images, return_tensors="pt")["pixel_values"]
    assert isinstance(out, list) and [tuple(t.shape) for t in out] == [(3, 100, 130), (3, 64, 64), (3, 45, 77)]
    for tensor, image in zip(out, images):
        torch.testing.assert_close(tensor, to_tensor_normalize(image), atol=1e-6, rtol=0)
    single = processor(images[0], return_tensors="pt")["pixel_values"]
    assert isinstance(single, list) and single[0].shape == (3, 100, 130)  # same type for one image
    with pytest.raises(ValueError, match="different sizes"):
        processor(images[:2], return_tensors="np")


def test_processor_spaq_resizes_short_side_to_512_bilinear():
    processor = QualiClipImageProcessor(do_resize=True)
    image = random_image(1001, 300, 3)
    out = processor(image, return_tensors="pt")["pixel_values"][0]
    expected = to_tensor_normalize(image.resize((int(512 * 1001 / 300), 512), Image.BILINEAR))  # torchvision rule
    assert out.shape == (3, 512, 1708)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_pipeline_batches_mixed_sizes(openai_clip_model, tmp_path):
    model = qualiclip_from_oracle(make_oracle_resnet(openai_clip_model), random_text_features())
    model.save_pretrained(tmp_path)
    QualiClipImageProcessor().save_pretrained(tmp_path)
    pipe = hf_iqa.pipeline("image-quality", model=str(tmp_path))
    images = [random_image(70, 60, 0), random_image(64, 64, 1), random_image(70, 60, 2), random_image(97, 40, 3)]
    batched = pipe(images, batch_size=3)
    single = pipe(images, batch_size=1)
    with torch.no_grad():
        direct = model(**QualiClipImageProcessor()(images, return_tensors="pt")).scores
    for b, s, d in zip(batched, single, direct.tolist()):
        assert b["score"] == pytest.approx(s["score"], abs=1e-6) and b["score"] == pytest.approx(d, abs=1e-6)
    assert set(batched[0]["pair_probs"]) == set(model.config.output_labels["pair_probs"])
