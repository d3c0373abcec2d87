"""mPLUG-Owl3 (`mPLUG/mPLUG-Owl3-7B-240728`) for transformers 5: this project's own implementation.

Architecture, in the order data flows:

1. **Vision.** Every image is cut into 384² tiles plus a global view (see `MplugOwl3ImageProcessor`). A SigLIP-so400m
   tower (transformers' `SiglipVisionModel`, whose parameter names match the checkpoint) encodes each tile; the
   features are its `hidden_states[-2]` (no post-layernorm, no pooling head), then `vision2text_model`, one
   `Linear(vision_hidden -> hidden)`.
2. **Text.** A Qwen2 decoder. Images are *not* spliced into the token sequence: each tile is one `<|image|>` token.
3. **Hyper-attention.** In the decoder layers listed (1-based) in `config.hyper_layers`, the self-attention module also
   cross-attends from the text queries (after their RoPE) to the tile features, normalised by that layer's own
   `input_layernorm` and projected by `v_kv_proj` to per-kv-head `[key | value]`. Image keys get **MI-RoPE**: every
   patch of a tile is rotated with the position of that tile's `<|image|>` token + 1. A text token sees only the tiles
   whose `<|image|>` token precedes it (the original's `media_offset`); tokens that see no tile are left unchanged.
   The rest mix per head, `out = self·(1-g) + cross·g` with `g = sigmoid(gate_proj(self))`, before `o_proj`.

Differences from the original remote code (which supports batch size 1 only): `media_offset` is derived from
`input_ids`/`position_ids` instead of being passed, which makes left-padded batches work; image key positions are the
*position ids* of the `<|image|>` tokens + 1 (equal to their indices + 1 without padding), so a left-padded batch
gives the same result as one-by-one; `generate` uses the attention mask it is given, not the original's
`pad_token_id=0` inference (which masks every token with id 0, i.e. a standalone "!" in the Qwen2 vocabulary).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel, SiglipVisionModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2Attention,
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
    repeat_kv,
    rotate_half,
)

from .configuration_mplug_owl3 import MplugOwl3Config

# Module names kept in bf16/fp16 when loading 8/4-bit: the vision tower, the projector and the output head.
QUANTIZATION_SKIP_MODULES = ["vision_model", "vision2text_model", "lm_head"]

# transformers 5.24 renamed the KV cache from `past_key_values` to `cache`, as an argument (generate passes it under
# the new name; the old one warns until its removal in 5.40) and as an output field (generate reads it from there).
# Inside this file the cache is handed on positionally (same position in both versions); only the names that
# generate sees depend on the version.
CACHE_NAME = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class MediaContext(NamedTuple):
    """Per-forward image inputs of the hyper layers, padded per sample.

    embeds: (batch, max_tiles, patches, hidden) projected tile features; zeros in padded slots.
    cos, sin: (batch, max_tiles, head_dim) float32 MI-RoPE tables of each tile's key position.
    visible: (batch, query_len, max_tiles) bool, whether each query token may attend to each tile.
    """

    embeds: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    visible: torch.Tensor


def visible_tiles(media_positions: torch.LongTensor, position_ids: torch.LongTensor) -> torch.Tensor:
    """(batch, query_len, max_tiles) bool: token i sees tile k iff the tile's `<|image|>` token comes before it.

    A tile's position is its token's position + 1, so "comes before" is `tile position <= token position`; this is
    the original's `media_offset` rule (tile k visible iff k < number of `<|image|>` tokens before i), expressed in
    position ids so that padding anywhere in the row does not change it."""
    tiles = media_positions[:, None, :]
    return (tiles >= 0) & (tiles <= position_ids.expand(media_positions.shape[0], -1)[:, :, None])


class MplugOwl3HyperAttention(Qwen2Attention):
    """Qwen2 self-attention plus the gated cross-attention to image tiles of a hyper layer."""

    def __init__(self, config: MplugOwl3Config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.num_key_value_heads = config.num_key_value_heads
        self.v_kv_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim * 2, bias=True)
        # `gate_proj.0` is the checkpoint's name: one Linear(head_dim, head_dim) shared by all heads.
        self.gate_proj = nn.Sequential(nn.Linear(self.head_dim, self.head_dim), nn.Sigmoid())

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        media: MediaContext | None = None,
        media_states: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            sliding_window=self.sliding_window,
            **kwargs,
        )  # (batch, query_len, heads, head_dim)
        if media is not None and media_states is not None:
            attn_output = self._mix_in_images(query, attn_output, media, media_states)
        attn_output = self.o_proj(attn_output.reshape(*input_shape, -1).contiguous())
        return attn_output, attn_weights

    def _mix_in_images(
        self, query: torch.Tensor, self_output: torch.Tensor, media: MediaContext, media_states: torch.Tensor
    ) -> torch.Tensor:
        batch, tiles, patches, _ = media_states.shape
        key_value = self.v_kv_proj(media_states).view(
            batch, tiles, patches, self.num_key_value_heads, 2, self.head_dim
        )
        key, value = key_value.unbind(dim=4)  # per kv-head [key | value]
        # MI-RoPE in float32: all patches of a tile share the position of the tile's <|image|> token + 1.
        cos, sin = media.cos[:, :, None, None, :], media.sin[:, :, None, None, :]
        key_fp32 = key.float()
        key = (key_fp32 * cos + rotate_half(key_fp32) * sin).to(value.dtype)
        key = repeat_kv(
            key.reshape(batch, tiles * patches, -1, self.head_dim).transpose(1, 2), self.num_key_value_groups
        )
        value = repeat_kv(
            value.reshape(batch, tiles * patches, -1, self.head_dim).transpose(1, 2), self.num_key_value_groups
        )

        sees_any = media.visible.any(dim=-1)  # (batch, query_len)
        # Rows that see no tile would be all -inf; open them up and discard their result below.
        mask = (media.visible | ~sees_any[..., None]).repeat_interleave(patches, dim=-1)[:, None]
        cross_output = F.scaled_dot_product_attention(
            query, key.to(query.dtype), value.to(query.dtype), attn_mask=mask, scale=self.scaling
        ).transpose(1, 2)  # (batch, query_len, heads, head_dim)

        gate = self.gate_proj(self_output)
        mixed = self_output * (1 - gate) + cross_output * gate
        return torch.where(sees_any[:, :, None, None], mixed, self_output)


class MplugOwl3DecoderLayer(GradientCheckpointingLayer):
    """A Qwen2 decoder layer; in hyper layers the tile features share this layer's `input_layernorm`."""

    def __init__(self, config: MplugOwl3Config, layer_idx: int):
        super().__init__()
        self.is_hyper_layer = (layer_idx + 1) in config.hyper_layers
        attention_class = MplugOwl3HyperAttention if self.is_hyper_layer else Qwen2Attention
        self.self_attn = attention_class(config, layer_idx)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: Cache | None = None,
        media: MediaContext | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        media_kwargs = {}
        if self.is_hyper_layer and media is not None:
            device = hidden_states.device  # layers may sit on different devices with device_map
            media = MediaContext(*(tensor.to(device) for tensor in media))
            media_kwargs = {"media": media, "media_states": self.input_layernorm(media.embeds)}
        # positional: Qwen2Attention names its cache argument `past_key_values` before transformers 5.24, `cache` after
        hidden_states, _ = self.self_attn(hidden_states, position_embeddings, attention_mask, cache, **media_kwargs)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


class MplugOwl3TextModel(nn.Module):
    """The Qwen2 decoder stack (`language_model.model.*` in the checkpoint)."""

    def __init__(self, config: MplugOwl3Config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(MplugOwl3DecoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)
        self.gradient_checkpointing = False

    def forward(
        self,
        position_ids: torch.LongTensor,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        media_embeds: torch.Tensor | None = None,
        media_positions: torch.LongTensor | None = None,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPast:
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        # positional: the cache argument is `past_key_values` before transformers 5.24, `cache` after
        mask_args = (self.config, inputs_embeds, attention_mask, cache, position_ids)
        masks = {"full_attention": create_causal_mask(*mask_args)}
        if "sliding_attention" in self.config.layer_types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(*mask_args)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        media = None
        if media_embeds is not None:
            # float32 tables whatever the model dtype (the original rotates image keys in float32)
            cos, sin = self.rotary_emb(media_embeds.new_zeros((), dtype=torch.float32), media_positions.clamp(min=0))
            media = MediaContext(media_embeds, cos, sin, visible_tiles(media_positions, position_ids))

        all_hidden_states = []
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            hidden_states = layer(
                hidden_states,
                attention_mask=masks[self.config.layer_types[index]],
                position_embeddings=position_embeddings,
                cache=cache,
                media=media,
            )
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            **{CACHE_NAME: cache},
        )


class MplugOwl3LanguageModel(nn.Module):
    """Container that reproduces the checkpoint's `language_model.{model,lm_head}` key layout."""

    def __init__(self, config: MplugOwl3Config):
        super().__init__()
        self.model = MplugOwl3TextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class MplugOwl3PreTrainedModel(PreTrainedModel):
    config_class = MplugOwl3Config
    config: MplugOwl3Config
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "MplugOwl3DecoderLayer",
        "SiglipEncoderLayer",
        "SiglipVisionEmbeddings",
        "SiglipMultiheadAttentionPoolingHead",
    ]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True


class MplugOwl3ForConditionalGeneration(MplugOwl3PreTrainedModel, GenerationMixin):
    """mPLUG-Owl3: SigLIP tiles -> projector -> Qwen2 decoder with hyper-attention; a causal LM over text tokens."""

    _tied_weights_keys = {"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"}

    def __init__(self, config: MplugOwl3Config):
        super().__init__(config)
        self.language_model = MplugOwl3LanguageModel(config)
        self.vision_model = SiglipVisionModel._from_config(config.vision_config)
        self.vision2text_model = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.lm_head = value

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(tiles, 3, H, W) -> (tiles, patches, hidden): SigLIP `hidden_states[-2]`, then the projector.

        The last encoder layer, the post-layernorm and the pooling head are skipped (their outputs are unused)."""
        vision = self.vision_model
        dtype = vision.embeddings.patch_embedding.weight.dtype
        hidden_states = vision.embeddings(pixel_values.to(dtype))
        for layer in vision.encoder.layers[:-1]:
            hidden_states = layer(hidden_states, None)
        return self.vision2text_model(hidden_states)

    @staticmethod
    def position_ids_from_mask(
        attention_mask: torch.Tensor | None, query_length: int, past_length: int = 0, device: torch.device = None
    ) -> torch.LongTensor:
        """Positions 0.. over the real tokens of each row (as `generate` builds them), so left padding is neutral."""
        if attention_mask is None:
            return torch.arange(past_length, past_length + query_length, device=device)[None]
        positions = attention_mask.long().cumsum(-1) - 1
        return positions.masked_fill(attention_mask == 0, 0)[:, -query_length:]

    def prepare_media(
        self,
        input_ids: torch.LongTensor,
        position_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.LongTensor | None]:
        """Assign the flat list of tiles to the `<|image|>` tokens of each row.

        Tiles are in prompt order across the batch (row 0's tiles first), one per `<|image|>` token. Returns
        `media_embeds` (batch, max_tiles, patches, hidden) and `media_positions` (batch, max_tiles): the MI-RoPE
        position of each tile (its token's position id + 1), -1 in padded slots."""
        if pixel_values is None and image_embeds is None:
            return None, None
        if input_ids is None:
            raise ValueError("images need `input_ids` (their <|image|> tokens place them in the text)")
        image_token_id = self.config.image_token_id
        if image_token_id is None:
            raise ValueError(
                "config.image_token_id is not set: set it from the tokenizer, e.g. "
                "`model.config.image_token_id = tokenizer.convert_tokens_to_ids('<|image|>')`"
            )
        is_image_token = input_ids == image_token_id
        tiles_per_row = is_image_token.sum(dim=1)
        if image_embeds is None:
            image_embeds = self.get_image_features(pixel_values)
        if image_embeds.ndim != 3:
            raise ValueError(f"image_embeds must be (tiles, patches, hidden), got shape {tuple(image_embeds.shape)}")
        if int(tiles_per_row.sum()) != image_embeds.shape[0]:
            raise ValueError(
                f"input_ids contain {int(tiles_per_row.sum())} <|image|> tokens (id {image_token_id}) but "
                f"{image_embeds.shape[0]} image tiles were given; each tile needs exactly one <|image|> token"
            )
        batch, max_tiles = input_ids.shape[0], int(tiles_per_row.max())
        slot = torch.arange(max_tiles, device=input_ids.device)[None] < tiles_per_row[:, None]  # (batch, max_tiles)
        media_embeds = image_embeds.new_zeros((batch, max_tiles, *image_embeds.shape[1:]))
        media_embeds[slot] = image_embeds
        media_positions = torch.full((batch, max_tiles), -1, dtype=torch.long, device=input_ids.device)
        media_positions[slot] = position_ids.expand_as(input_ids)[is_image_token] + 1
        return media_embeds, media_positions

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        media_embeds: torch.Tensor | None = None,
        media_positions: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_hidden_states: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        pixel_values (`torch.Tensor` of shape `(tiles, 3, H, W)`):
            All tiles of the batch in prompt order, one per `<|image|>` token (as `MplugOwl3ImageProcessor` returns).
        image_embeds (`torch.Tensor` of shape `(tiles, patches, hidden)`, *optional*):
            Precomputed `get_image_features(pixel_values)`, instead of `pixel_values`.
        media_embeds, media_positions (*optional*):
            The per-row layout from `prepare_media`; `generate` passes them to every decoding step.
        logits_to_keep (`int`, *optional*):
            Compute logits for the last `logits_to_keep` positions only (1 for single-forward scoring).
        cache, past_key_values (`Cache`, *optional*):
            The KV cache; `past_key_values` is the name `generate` uses before transformers 5.24. The returned
            output carries it under the installed version's name (`CACHE_NAME`).
        """
        if cache is None:
            cache = past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        query_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if use_cache is None:
            use_cache = self.config.use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_length = cache.get_seq_length() if cache is not None else 0
            position_ids = self.position_ids_from_mask(attention_mask, query_length, past_length, self.device)
        if media_embeds is None:
            media_embeds, media_positions = self.prepare_media(input_ids, position_ids, pixel_values, image_embeds)

        outputs = self.language_model.model(
            position_ids=position_ids,
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            media_embeds=media_embeds,
            media_positions=media_positions,
            output_hidden_states=bool(output_hidden_states or self.config.output_hidden_states),
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.language_model.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_NAME: cache if use_cache else None},
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ):
        """`GenerationMixin.generate` with images: the vision tower runs once, then every step reuses its output.

        Batches may be left-padded (pass `attention_mask`). Returns what `GenerationMixin.generate` returns (prompt
        plus new tokens)."""
        if input_ids is None:
            raise ValueError("generate needs input_ids (the prompt, with one <|image|> token per tile)")
        if attention_mask is None:
            # explicit, so that `generate` does not infer a mask from `pad_token_id` (which would drop real tokens
            # equal to it, as the original's `pad_token_id=0` drops every "!")
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = self.position_ids_from_mask(attention_mask, input_ids.shape[1])
        media_embeds, media_positions = self.prepare_media(input_ids, position_ids, pixel_values, image_embeds)
        return super().generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            media_embeds=media_embeds,
            media_positions=media_positions,
            **kwargs,
        )


def quantization_config(bits: int, compute_dtype: torch.dtype = torch.bfloat16):
    """A bitsandbytes config for 8- or 4-bit (nf4) loading that keeps the vision tower, projector and lm_head
    unquantised. Optional path: needs `pip install bitsandbytes` and a CUDA GPU.

    Usage: `MplugOwl3ForConditionalGeneration.from_pretrained(repo, quantization_config=quantization_config(4))`."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"{bits}-bit loading of mPLUG-Owl3 needs the optional package bitsandbytes (pip install bitsandbytes) and "
            "a CUDA GPU; load in bfloat16 instead (the default on GPU)"
        )
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(QUANTIZATION_SKIP_MODULES))
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=list(QUANTIZATION_SKIP_MODULES),
    )


def default_dtype(device: str | torch.device | None) -> torch.dtype:
    """bfloat16 on GPU (the checkpoint's dtype), float32 on CPU (where bf16 matmuls are slow or unsupported)."""
    return torch.bfloat16 if torch.device(device or "cpu").type == "cuda" else torch.float32


__all__ = [
    "MplugOwl3ForConditionalGeneration",
    "MplugOwl3PreTrainedModel",
    "quantization_config",
    "default_dtype",
]
