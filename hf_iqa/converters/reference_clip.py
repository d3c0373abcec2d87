"""An independent, functional OpenAI-CLIP forward that reads the *original* checkpoint keys directly.

Converters run it on the same weights and inputs as the converted transformers model and refuse to save when the
two disagree. It shares no code with transformers' CLIP or with this package's key map, so a mapping mistake
(swapped q/k, a missed transpose, a wrong logit scale) shows up as a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from hf_iqa.openai_clip import CONTEXT_LENGTH

Tensor = torch.Tensor


def _layer_norm(x: Tensor, state: Mapping[str, Tensor], prefix: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], state[prefix + "weight"].float(), state[prefix + "bias"].float(), 1e-5)


def _residual_block(x: Tensor, state: Mapping[str, Tensor], prefix: str, heads: int, causal: bool) -> Tensor:
    """One OpenAI `ResidualAttentionBlock` on (batch, tokens, width)."""
    batch, tokens, width = x.shape
    h = _layer_norm(x, state, prefix + "ln_1.")
    qkv = h @ state[prefix + "attn.in_proj_weight"].float().t() + state[prefix + "attn.in_proj_bias"].float()
    q, k, v = qkv.split(width, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) / (width // heads) ** 0.5
    if causal:
        mask = torch.full((tokens, tokens), float("-inf")).triu(1)
        scores = scores + mask
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, width)
    x = (
        x
        + attended @ state[prefix + "attn.out_proj.weight"].float().t()
        + state[prefix + "attn.out_proj.bias"].float()
    )
    h = _layer_norm(x, state, prefix + "ln_2.")
    h = h @ state[prefix + "mlp.c_fc.weight"].float().t() + state[prefix + "mlp.c_fc.bias"].float()
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    h = h @ state[prefix + "mlp.c_proj.weight"].float().t() + state[prefix + "mlp.c_proj.bias"].float()
    return x + h


def _num_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


@torch.no_grad()
def encode_image_vit(state: Mapping[str, Tensor], pixel_values: Tensor) -> Tensor:
    """OpenAI ViT `encode_image`: (N, 3, H, W) normalised pixels -> (N, embed_dim), not normalised."""
    conv = state["visual.conv1.weight"].float()
    width, patch = conv.shape[0], conv.shape[-1]
    x = F.conv2d(pixel_values.float(), conv, stride=patch)
    x = x.flatten(2).transpose(1, 2)
    cls = state["visual.class_embedding"].float().expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + state["visual.positional_embedding"].float()
    x = _layer_norm(x, state, "visual.ln_pre.")
    for i in range(_num_blocks(state, "visual.transformer.resblocks.")):
        x = _residual_block(x, state, f"visual.transformer.resblocks.{i}.", heads=width // 64, causal=False)
    x = _layer_norm(x[:, 0], state, "visual.ln_post.")
    return x @ state["visual.proj"].float()


@torch.no_grad()
def encode_text(state: Mapping[str, Tensor], input_ids: Tensor) -> Tensor:
    """OpenAI `encode_text`: (N, 77) token ids (EOT = the largest id in each row) -> (N, embed_dim)."""
    x = state["token_embedding.weight"].float()[input_ids]
    x = x + state["positional_embedding"].float()[: input_ids.shape[1]]
    width = x.shape[-1]
    for i in range(_num_blocks(state, "transformer.resblocks.")):
        x = _residual_block(x, state, f"transformer.resblocks.{i}.", heads=width // 64, causal=True)
    x = _layer_norm(x, state, "ln_final.")
    x = x[torch.arange(x.shape[0]), input_ids.argmax(dim=-1)]
    return x @ state["text_projection"].float()


def openai_tokenize(tokenizer, texts: list[str], context_length: int = CONTEXT_LENGTH) -> Tensor:
    """Token ids laid out as OpenAI's `clip.tokenize` does: SOT + BPE + EOT, zero-padded to `context_length`."""
    ids = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = tokenizer(text)["input_ids"]
        if len(tokens) > context_length:
            raise ValueError(f"prompt too long for CLIP ({len(tokens)} > {context_length} tokens): {text!r}")
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids
