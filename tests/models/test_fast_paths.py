"""Every inference speed-up (the `fast_<model>.py` files) against the plain path it replaces (exactness first).

- the flat CLIP vision loop (LIQE, UniQA ViT): oneDNN linears, quick_gelu as a fused SiLU, the patch embedding as a
  linear, class-token-only last layer, against transformers' `get_image_features`;
- QualiCLIP's cached BatchNorm folding (refolds when anything it depends on changes; gradients still flow) and its
  projection-free single-query attention pool, against nn.MultiheadAttention.
The parity tests of each model (against the OpenAI CLIP code) run through these paths as well.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel

from hf_iqa.models.liqe import fast_liqe
from hf_iqa.models.qualiclip import ClipResNetConfig, ClipResNetVisionModel
from hf_iqa.models.qualiclip.modeling_qualiclip import ClipResNetAttentionPool
from hf_iqa.models.uniqa import fast_uniqa


def tiny_clip(hidden_act: str = "quick_gelu", patch_size: int = 8, image_size: int = 32, seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4)
    vision.update(patch_size=patch_size, image_size=image_size, hidden_act=hidden_act)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).eval()
    with torch.no_grad():  # larger-than-init values, so that a mis-scaled layer norm or bias shows
        for name, param in model.vision_model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.3)
    return model


def plain_features(clip: CLIPModel, pixels: torch.Tensor) -> torch.Tensor:
    features = clip.get_image_features(pixel_values=pixels)
    return getattr(features, "pooler_output", features)


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("module", [fast_liqe, fast_uniqa], ids=["liqe", "uniqa"])
def test_flat_clip_vision_loop_matches_transformers(module, hidden_act):
    clip = tiny_clip(hidden_act)
    pixels = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = plain_features(clip, pixels)
        actual = module.clip_vision_features(clip, pixels)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert (actual - expected).abs().max() > 0  # really another computation, not the same call


def test_flat_loop_without_onednn_matches(monkeypatch):
    """The plain `F.linear` branch (GPU, or a PyTorch without the oneDNN op) computes the same thing."""
    clip = tiny_clip()
    pixels = torch.randn(3, 3, 32, 32)
    monkeypatch.setattr(fast_liqe, "ONEDNN_LINEAR", False)
    with torch.no_grad():
        actual = fast_liqe.clip_vision_features(clip, pixels)
        expected = plain_features(clip, pixels)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_onednn_linear_is_used_on_cpu():
    """Fails when a PyTorch release changes the internal op, so the 2x fp32 speed-up cannot vanish silently."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch build has no oneDNN")
    assert fast_liqe.ONEDNN_LINEAR
    layer = nn.Linear(64, 48)
    x = torch.randn(7, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast_liqe.linear(x, layer.weight, layer.bias), layer(x))
        fused = fast_liqe.linear(x, layer.weight, layer.bias, silu=True)
        torch.testing.assert_close(fused, F.silu(layer(x)))
    assert fast_liqe.ONEDNN_LINEAR, "torch.ops.mkldnn._linear_pointwise failed: the fast path is off"


def test_patch_embedding_as_linear_and_conv_fallback():
    clip = tiny_clip(patch_size=8, image_size=32)
    embeddings = clip.vision_model.embeddings
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            fast_liqe.clip_vision_embeddings(embeddings, pixels), embeddings(pixels), atol=1e-5, rtol=1e-5
        )


def test_flat_loop_in_bf16_stays_close():
    clip = tiny_clip()
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = F.normalize(plain_features(clip, pixels), dim=-1)
        actual = F.normalize(fast_liqe.clip_vision_features(clip.to(torch.bfloat16), pixels), dim=-1)
    assert (actual.float() - expected).abs().max() < 0.03


def test_liqe_uses_the_plain_path_with_gradients():
    """Training (autograd on) goes through transformers' forward; inference through the flat loop."""
    from hf_iqa.models.liqe import LiqeConfig, LiqeModel

    clip = tiny_clip()
    model = LiqeModel(LiqeConfig(clip_config=clip.config)).eval()
    model.clip.load_state_dict(clip.state_dict())
    pixels = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        fast = model.get_image_features(pixels)
    slow = model.get_image_features(pixels)
    slow.sum().backward()
    assert model.clip.vision_model.encoder.layers[0].mlp.fc1.weight.grad is not None
    torch.testing.assert_close(fast, slow.detach(), atol=1e-6, rtol=1e-5)


def test_liqe_inference_takes_the_fast_loop(monkeypatch):
    """The modeling file's one call into fast_liqe.py is really made (the speed-up cannot vanish silently)."""
    from hf_iqa.models.liqe import LiqeConfig, LiqeModel, modeling_liqe

    model = LiqeModel(LiqeConfig(clip_config=tiny_clip().config)).eval()
    calls = []
    monkeypatch.setattr(
        modeling_liqe, "clip_vision_features", lambda *a: calls.append(1) or fast_liqe.clip_vision_features(*a)
    )
    with torch.no_grad():
        model.get_image_features(torch.randn(1, 2, 3, 32, 32))
    assert calls == [1]


# --- QualiCLIP / UniQA ResNet tower ----------------------------------------------------------------------------------
def random_tower(seed: int = 0) -> ClipResNetVisionModel:
    torch.manual_seed(seed)
    config = ClipResNetConfig(layers=[1, 2, 1, 1], width=8, projection_dim=32, num_attention_heads=4, image_size=64)
    tower = ClipResNetVisionModel(config).eval()
    with torch.no_grad():
        for bn in tower.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0, 0.1)
                bn.running_mean.normal_(0, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
    return tower


def unfolded(tower: ClipResNetVisionModel, x: torch.Tensor) -> torch.Tensor:
    tower.config.fold_batch_norm = False
    try:
        return tower(x).pooler_output
    finally:
        tower.config.fold_batch_norm = True


def test_folded_weights_are_cached_and_refolded_on_change():
    tower = random_tower()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        first = tower(x).pooler_output
        cached = tower.bn1.__dict__["_folded_conv"][1]
        tower(x)
        assert tower.bn1.__dict__["_folded_conv"][1] is cached  # reused, not refolded
        torch.testing.assert_close(first, unfolded(tower, x), atol=1e-5, rtol=1e-5)

        tower.layer2[0].bn2.running_var.mul_(3.0)  # in-place statistics change
        tower.conv2.weight.mul_(-1.0)  # in-place weight change
        torch.testing.assert_close(tower(x).pooler_output, unfolded(tower, x), atol=1e-5, rtol=1e-5)

        other = random_tower(seed=1)
        tower.load_state_dict(other.state_dict())
        torch.testing.assert_close(tower(x).pooler_output, other(x).pooler_output, atol=1e-5, rtol=1e-5)
    assert not any("folded" in key for key in tower.state_dict())


def test_moving_or_casting_drops_the_fold_cache():
    tower = random_tower()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tower(x)
        assert "_folded_conv" in tower.bn1.__dict__
        tower.half().float()  # values rounded; freed memory may be reused, so the pointer alone cannot tell
        assert not any("_folded_conv" in module.__dict__ for module in tower.modules())
        torch.testing.assert_close(tower(x).pooler_output, unfolded(tower, x), atol=1e-5, rtol=1e-5)


def test_folding_with_gradients_reaches_the_parameters():
    tower = random_tower()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    with torch.no_grad():
        tower(x)  # fills the cache
    tower(x).pooler_output.sum().backward()  # eval mode with autograd: folds on the fly
    assert tower.conv1.weight.grad is not None and tower.bn1.weight.grad is not None
    assert x.grad is not None


def test_folding_cache_follows_dtype_changes():
    tower = random_tower()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = tower(x).pooler_output
        tower.to(torch.bfloat16)
        low = tower(x.bfloat16()).pooler_output
        tower.to(torch.float32)  # weights now carry bf16 rounding: the cache must fold them anew
        back = tower(x).pooler_output
        expected = unfolded(tower, x)
    assert low.dtype == torch.bfloat16
    assert F.cosine_similarity(low.float(), reference).min() > 0.99
    torch.testing.assert_close(back, expected, atol=1e-5, rtol=1e-5)
    assert (back - reference).abs().max() > 1e-4  # the rounding really shows, so a stale fp32 cache would fail


@pytest.mark.parametrize("mode", ["none", "legacy_1d"])
def test_single_query_attention_pool_matches_multihead_attention(mode):
    config = ClipResNetConfig(layers=[1, 1, 1, 1], width=8, projection_dim=24, num_attention_heads=4, image_size=64)
    config.position_embedding_mode = mode
    torch.manual_seed(0)
    pool = ClipResNetAttentionPool(config)
    for parameter in pool.parameters():
        nn.init.normal_(parameter, std=0.2)
    features = torch.randn(3, 256, 5, 7)
    tokens = features.flatten(2).transpose(1, 2)
    tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
    if mode != "none":
        tokens = tokens + pool.position_embedding(tokens.shape[1])
    attention = nn.MultiheadAttention(256, 4, batch_first=True)
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.cat([pool.q_proj.weight, pool.k_proj.weight, pool.v_proj.weight]))
        attention.in_proj_bias.copy_(torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]))
        attention.out_proj.weight.copy_(torch.eye(256))
        attention.out_proj.bias.zero_()
        expected = pool.c_proj(attention(tokens, tokens, tokens, need_weights=False)[0][:, 0])
        actual = pool(features)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch.backends.mkldnn.flags
def test_onednn_switch_and_failure_fall_back_to_plain_linear(monkeypatch):
    """`torch.backends.mkldnn.flags(enabled=False)` is honoured, and an op that fails (another PyTorch) is given up
    for good, with the plain result returned."""
    from unittest import mock

    layer = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    monkeypatch.setattr(fast_liqe, "ONEDNN_LINEAR", True)
    with torch.no_grad():
        expected = layer(x)
        never = mock.patch.object(torch.ops.mkldnn, "_linear_pointwise", side_effect=AssertionError("called"))
        with never, torch.backends.mkldnn.flags(enabled=False):
            torch.testing.assert_close(fast_liqe.linear(x, layer.weight, layer.bias), expected)
        failing = mock.patch.object(torch.ops.mkldnn, "_linear_pointwise", side_effect=RuntimeError("no such op"))
        with failing as op:
            torch.testing.assert_close(fast_liqe.linear(x, layer.weight, layer.bias), expected)
            torch.testing.assert_close(fast_liqe.linear(x, layer.weight, layer.bias), expected)
        assert op.call_count == 1
    assert fast_liqe.ONEDNN_LINEAR is False


# --- memory ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="reads /proc/self/maps (Linux)")
@pytest.mark.parametrize("family", ["liqe", "qualiclip", "uniqa-resnet"])
def test_loading_in_bf16_releases_the_checkpoint_memory_map(family, tmp_path):
    """The tensors `dtype=bfloat16` does not convert (kept in fp32, BatchNorm's integer counters) would otherwise be
    views into the safetensors memory map and keep the whole file resident (LIQE ViT-B/32: +580 MB)."""
    if family == "liqe":
        from hf_iqa.models.liqe import LiqeConfig as Config
        from hf_iqa.models.liqe import LiqeModel as Model

        config = Config(clip_config=tiny_clip().config)
    elif family == "qualiclip":
        from hf_iqa.models.qualiclip import QualiClipConfig as Config
        from hf_iqa.models.qualiclip import QualiClipModel as Model

        config = Config(vision_config=dict(layers=[1, 1, 1, 1], width=8, image_size=64), projection_dim=32)
    else:
        from hf_iqa.models.uniqa import UniQaConfig as Config
        from hf_iqa.models.uniqa import UniQaModel as Model

        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        resnet = dict(layers=[1, 1, 1, 1], width=8, image_size=64, projection_dim=32)
        clip = CLIPConfig(text_config=text, projection_dim=32)
        config = Config(backbone_type="resnet", clip_config=clip, resnet_config=resnet)
    Model(config).save_pretrained(tmp_path)
    model = Model.from_pretrained(tmp_path, dtype=torch.bfloat16)
    with open("/proc/self/maps") as handle:
        mapped = [line for line in handle if str(tmp_path) in line]
    assert not mapped, f"the checkpoint is still mapped: {mapped}"
    kept = [t for n, t in [*model.named_parameters(), *model.named_buffers()] if t.dtype != torch.bfloat16]
    assert kept, "every tensor was converted: the test no longer tests anything"
    assert all(t.dtype == torch.bfloat16 for n, t in model.named_parameters() if "proj" in n and "prompt" not in n)
