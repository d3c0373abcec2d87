"""LIQE's inference speed-ups, kept out of `modeling_liqe.py` so that it reads as the plain model.

- `clip_vision_features`: the CLIP vision tower as one flat loop (oneDNN linears, quick_gelu as a fused SiLU, the
  patch embedding as a linear, the last layer for the class token only), equal to `get_image_features` to ~1e-7;
  `LiqeModel.get_image_features` calls it for inference (no autograd, SDPA attention).
- `own_unconverted_tensors`: after `from_pretrained(dtype=...)`, gives the tensors kept in fp32 memory of their own,
  so the checkpoint's memory map is released.

A Hub remote-code file like the modeling file that imports it (torch and transformers only). UniQA and QualiCLIP
carry copies of these functions (`# Copied from` markers, checked by `utils/check_copies.py`); edit them here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPModel

ONEDNN_LINEAR = hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()
QUICK_GELU_ALPHA = 1.702  # quick_gelu(h) = h * sigmoid(1.702 h) = silu(1.702 h) / 1.702


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool = False) -> torch.Tensor:
    """`F.linear` (then SiLU when `silu`) for inference; on CPU in fp32/bf16, one oneDNN call with the SiLU fused.

    PyTorch sends fp32 CPU matmuls to MKL, which runs its AVX2 code on AMD CPUs: on a 2-core Zen 5 guest that
    reached ~200 GFLOP/s where oneDNN, PyTorch's own CPU kernel library (its convolutions and bf16 matmuls),
    reached 400-490 (bench/bench_liqe.py prints both). Fusing the activation saves a pass over the widest tensor of the layer.
    Same maths, another summation order (~1e-7 relative). The op is internal to PyTorch (its compiler uses it),
    so any failure switches to the plain path for good; `torch.backends.mkldnn.flags(enabled=False)` turns it off.
    """
    global ONEDNN_LINEAR
    usable = ONEDNN_LINEAR and torch.backends.mkldnn.enabled  # the user's switch, read at call time
    if usable and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16):
        try:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "swish" if silu else "none", [], "")
        except (RuntimeError, TypeError):
            ONEDNN_LINEAR = False
    out = F.linear(x, weight, bias)
    return F.silu(out, inplace=True) if silu else out


def clip_mlp_residual(hidden: torch.Tensor, layer: torch.nn.Module) -> torch.Tensor:
    """`hidden + mlp(layer_norm2(hidden))` of a CLIP encoder layer. OpenAI CLIP's quick_gelu runs as a fused SiLU:
    the 1.702 goes into the layer norm's affine and fc1's bias, and comes back out through the residual add."""
    norm, mlp = layer.layer_norm2, layer.mlp
    if type(mlp.activation_fn).__name__ != "QuickGELUActivation":
        inner = mlp.activation_fn(linear(norm(hidden), mlp.fc1.weight, mlp.fc1.bias))
        return hidden + linear(inner, mlp.fc2.weight, mlp.fc2.bias)
    alpha = QUICK_GELU_ALPHA
    weight, bias = norm.weight.float() * alpha, norm.bias.float() * alpha  # fp32: no rounding of the scaled affine
    if hidden.device.type != "cpu":  # only the CPU kernel takes fp32 affine parameters with bf16/fp16 inputs
        weight, bias = weight.to(hidden.dtype), bias.to(hidden.dtype)
    scaled = F.layer_norm(hidden, norm.normalized_shape, weight, bias, norm.eps)
    inner = linear(scaled, mlp.fc1.weight, mlp.fc1.bias * alpha, silu=True)  # = 1.702 * quick_gelu(fc1(x))
    return hidden.add(linear(inner, mlp.fc2.weight, mlp.fc2.bias * alpha), alpha=1 / alpha)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, width) -> (batch, heads, tokens, width // heads)."""
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)


def clip_vision_embeddings(
    embeddings: torch.nn.Module, pixel_values: torch.Tensor, position_embedding: bool = True
) -> torch.Tensor:
    """`embeddings(pixel_values)` of a CLIP vision tower, its stride = kernel patch convolution run as `linear`
    over the flattened patches (twice as fast on CPU: a 3-channel convolution uses oneDNN poorly). Without
    `position_embedding`, the tokens get none (UniQA's ensemble heads)."""
    conv = embeddings.patch_embedding
    batch, channels, height, width = pixel_values.shape
    size = conv.kernel_size[0]
    if conv.stride != conv.kernel_size or height != embeddings.image_size or width != embeddings.image_size:
        if position_embedding:
            return embeddings(pixel_values)  # transformers' path, and its error for a wrong input size
        raise ValueError(f"expected {embeddings.image_size}x{embeddings.image_size} inputs, got {height}x{width}")
    grid_h, grid_w = height // size, width // size
    patches = pixel_values.to(conv.weight.dtype).view(batch, channels, grid_h, size, grid_w, size)
    patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid_h * grid_w, channels * size * size)
    tokens = linear(patches, conv.weight.view(conv.out_channels, -1), conv.bias)
    class_token = embeddings.class_embedding.to(tokens.dtype).expand(batch, 1, -1)
    tokens = torch.cat([class_token, tokens], dim=1)
    return tokens + embeddings.position_embedding(embeddings.position_ids) if position_embedding else tokens


def clip_vision_features(clip: CLIPModel, pixel_values: torch.Tensor, position_embedding: bool = True) -> torch.Tensor:
    """`clip.get_image_features(pixel_values)` for inference (no autograd): the same layers, run as one flat loop.

    Faster than the transformers forward and equal up to summation order: the patch embedding, the linear
    layers and quick_gelu go through `linear` above, and the last layer runs its query, output projection and
    MLP for the class token only, since the embedding reads nothing else (keys and values still cover every
    token).
    """
    vision = clip.vision_model
    hidden = vision.pre_layrnorm(clip_vision_embeddings(vision.embeddings, pixel_values, position_embedding))
    layers = vision.encoder.layers
    for index, layer in enumerate(layers):
        attention = layer.self_attn
        batch, _, width = hidden.shape
        heads = attention.num_heads
        normed = layer.layer_norm1(hidden)
        queries = normed
        if index == len(layers) - 1:
            queries, hidden = normed[:, :1], hidden[:, :1]

        attended = F.scaled_dot_product_attention(
            split_heads(linear(queries, attention.q_proj.weight, attention.q_proj.bias), heads),
            split_heads(linear(normed, attention.k_proj.weight, attention.k_proj.bias), heads),
            split_heads(linear(normed, attention.v_proj.weight, attention.v_proj.bias), heads),
            scale=attention.scale,
        )
        attended = attended.transpose(1, 2).reshape(batch, -1, width)
        hidden = hidden + linear(attended, attention.out_proj.weight, attention.out_proj.bias)
        hidden = clip_mlp_residual(hidden, layer)
    pooled = vision.post_layernorm(hidden[:, 0])
    return linear(pooled, clip.visual_projection.weight, None)


def own_unconverted_tensors(model: torch.nn.Module) -> None:
    """Give the tensors that `from_pretrained(dtype=...)` did not convert (kept in fp32, integer buffers) memory of
    their own. As loaded they are views into the checkpoint's memory map, which then stays resident although every
    other weight was copied (+580 MB for LIQE loaded in bf16)."""
    numel: dict[torch.dtype, int] = {}
    for parameter in model.parameters():
        numel[parameter.dtype] = numel.get(parameter.dtype, 0) + parameter.numel()
    bulk = max(numel, key=numel.get)  # the dtype the weights were loaded in
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.dtype == bulk or tensor.device.type != "cpu":
                continue
            owner, _, attr = name.rpartition(".")
            module = model.get_submodule(owner)
            if isinstance(tensor, torch.nn.Parameter):
                setattr(module, attr, torch.nn.Parameter(tensor.clone(), requires_grad=tensor.requires_grad))
            else:
                module.register_buffer(attr, tensor.clone(), persistent=attr not in module._non_persistent_buffers_set)


__all__ = ["clip_vision_features", "own_unconverted_tensors"]
