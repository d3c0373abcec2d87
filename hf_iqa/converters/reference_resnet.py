"""An independent, functional OpenAI-CLIP ModifiedResNet forward (and the QualiCLIP(+) head) over the *original*
checkpoint keys, for converters' pre-save parity checks.

It shares no code with `hf_iqa.models.*`: plain BatchNorm (never folded), full self-attention over all HW + 1
tokens in the attention pool (the model uses the mean token as the only query), and the original key names, so a
mapping mistake, a dropped layer or a wrong scale shows up as a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .reference_clip import _layer_norm, _residual_block

Tensor = torch.Tensor


def _conv_bn(x: Tensor, state: Mapping[str, Tensor], conv: str, bn: str, padding: int = 0, stride: int = 1) -> Tensor:
    x = F.conv2d(x, state[conv + ".weight"].float(), stride=stride, padding=padding)
    return F.batch_norm(
        x,
        state[bn + ".running_mean"].float(),
        state[bn + ".running_var"].float(),
        state[bn + ".weight"].float(),
        state[bn + ".bias"].float(),
        training=False,
        eps=1e-5,
    )


def _bottleneck(x: Tensor, state: Mapping[str, Tensor], prefix: str, stride: int) -> Tensor:
    out = F.relu(_conv_bn(x, state, prefix + "conv1", prefix + "bn1"))
    out = F.relu(_conv_bn(out, state, prefix + "conv2", prefix + "bn2", padding=1))
    if stride > 1:
        out = F.avg_pool2d(out, stride)
    out = _conv_bn(out, state, prefix + "conv3", prefix + "bn3")
    if prefix + "downsample.0.weight" in state:
        shortcut = F.avg_pool2d(x, stride) if stride > 1 else x
        x = _conv_bn(shortcut, state, prefix + "downsample.0", prefix + "downsample.1")
    return F.relu(out + x)


def _attention_pool(x: Tensor, state: Mapping[str, Tensor], heads: int, position_embedding: str) -> Tensor:
    """OpenAI's AttentionPool2d: full multi-head self-attention over [mean] + HW tokens; output of token 0."""
    p = "visual.attnpool."
    batch, channels = x.shape[:2]
    tokens = x.reshape(batch, channels, -1).permute(0, 2, 1)  # (N, HW, C)
    tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
    table = state[p + "positional_embedding"].float()
    if position_embedding == "fixed":
        tokens = tokens + table
    elif position_embedding == "legacy_1d":
        tokens = tokens + F.interpolate(table[None, None], size=(tokens.shape[1], channels), mode="bicubic")[0, 0]
    elif position_embedding != "none":
        raise ValueError(f"unknown position_embedding mode {position_embedding!r}")

    def project(name: str) -> Tensor:
        out = tokens @ state[p + name + ".weight"].float().t() + state[p + name + ".bias"].float()
        return out.reshape(batch, -1, heads, channels // heads).transpose(1, 2)

    q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
    attention = ((q @ k.transpose(-1, -2)) / (channels // heads) ** 0.5).softmax(dim=-1)
    attended = (attention @ v).transpose(1, 2).reshape(batch, -1, channels)
    out = attended @ state[p + "c_proj.weight"].float().t() + state[p + "c_proj.bias"].float()
    return out[:, 0]


def _num_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


@torch.no_grad()
def encode_image_resnet(state: Mapping[str, Tensor], pixel_values: Tensor, position_embedding: str = "none") -> Tensor:
    """OpenAI ModifiedResNet `encode_image`: (N, 3, H, W) normalised pixels -> (N, embed_dim), not normalised.

    `position_embedding`: "none" (QualiCLIP), "legacy_1d" (pyiqa `pos_embedding=True`) or "fixed" (vanilla CLIP).
    """
    x = pixel_values.float()
    x = F.relu(_conv_bn(x, state, "visual.conv1", "visual.bn1", padding=1, stride=2))
    x = F.relu(_conv_bn(x, state, "visual.conv2", "visual.bn2", padding=1))
    x = F.relu(_conv_bn(x, state, "visual.conv3", "visual.bn3", padding=1))
    x = F.avg_pool2d(x, 2)
    for stage, stride in zip(range(1, 5), (1, 2, 2, 2)):
        for index in range(_num_blocks(state, f"visual.layer{stage}.")):
            x = _bottleneck(x, state, f"visual.layer{stage}.{index}.", stride if index == 0 else 1)
    heads = state["visual.layer1.0.conv1.weight"].shape[0] * 32 // 64
    return _attention_pool(x, state, heads, position_embedding)


def quality_scores(image_embeds: Tensor, prompt_features: Tensor, logit_scale: float) -> Tensor:
    """QualiCLIP's score: mean over pairs of softmax(scale * cos(image, [positive, negative]))[positive].

    `prompt_features` are used as stored (the official model does not re-normalise them)."""
    image_embeds = F.normalize(image_embeds.float(), dim=-1)
    logits = logit_scale * image_embeds @ prompt_features.float().t()
    return logits.reshape(logits.shape[0], -1, 2).softmax(dim=-1)[..., 0].mean(dim=1)


@torch.no_grad()
def encode_prompt_learner(
    state: Mapping[str, Tensor],
    ctx: Tensor,
    token_prefix: Tensor,
    token_suffix: Tensor,
    name_lengths: Sequence[int],
) -> Tensor:
    """pyiqa's QualiCLIP+ prompt learner ("class in the middle") through the OpenAI text transformer.

    Sequence of prompt i: SOS, ctx[i, :n/2], its `name_lengths[i]` word embeddings, ctx[i, n/2:], EOS + padding.
    Returns (prompts, embed_dim) projected text features, not normalised.
    """
    n_ctx = ctx.shape[1]
    half = n_ctx // 2
    rows = []
    for i, length in enumerate(name_lengths):
        words, rest = token_suffix[i, :length], token_suffix[i, length:]
        rows.append(torch.cat([token_prefix[i], ctx[i, :half], words, ctx[i, half:], rest]))
    x = torch.stack(rows).float() + state["positional_embedding"].float()
    width = x.shape[-1]
    for i in range(_num_blocks(state, "transformer.resblocks.")):
        x = _residual_block(x, state, f"transformer.resblocks.{i}.", heads=width // 64, causal=True)
    x = _layer_norm(x, state, "ln_final.")
    eos = torch.tensor([1 + n_ctx + length for length in name_lengths])
    return x[torch.arange(x.shape[0]), eos] @ state["text_projection"].float()
