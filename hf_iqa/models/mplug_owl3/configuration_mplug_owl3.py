"""Configuration of mPLUG-Owl3 (the `mPLUG/mPLUG-Owl3-7B-240728` architecture) for transformers 5.

The published `config.json` is flat: the Qwen2 decoder fields sit at the top level, next to `hyper_layers` and a
SigLIP `vision_config`. Subclassing `Qwen2Config` keeps that layout, so the published file loads unchanged and the
Qwen2 building blocks (attention, MLP, RMSNorm, rotary embedding) can read their fields from this config directly.
"""

from __future__ import annotations

from transformers import Qwen2Config, SiglipVisionConfig

# SigLIP-so400m/14 at 384 px, as in the published checkpoint (fields the published file leaves out take the
# SiglipVisionConfig defaults: gelu_pytorch_tanh, layer_norm_eps 1e-6).
_PUBLISHED_VISION_CONFIG = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
}


class MplugOwl3Config(Qwen2Config):
    r"""
    Qwen2 decoder fields (see `Qwen2Config`) plus:

    vision_config (`dict` or `SiglipVisionConfig`, *optional*):
        The SigLIP vision tower. Its `hidden_states[-2]` (output of the second-to-last encoder layer) are the image
        features.
    hyper_layers (`list[int]`, *optional*, defaults to `[1, 9, 17, 25]`):
        **1-based** indices of the decoder layers that carry hyper-attention (cross-attention to the image features):
        decoder layer `i` (0-based) has it iff `i + 1` is in this list.
    image_token_id (`int`, *optional*):
        Id of the `<|image|>` token (one token per image tile). The published config does not carry it; it comes from
        the tokenizer (`tokenizer.convert_tokens_to_ids("<|image|>")`), and `MplugOwl3Processor` sets it.
    """

    # The published name, so that `from_pretrained("mPLUG/mPLUG-Owl3-7B-240728")` resolves to these classes once
    # they are registered (transformers 5.23 has no native `mplugowl3` type to clash with).
    model_type = "mplugowl3"
    sub_configs_defaults = {"vision_config": SiglipVisionConfig}

    vision_config: dict | SiglipVisionConfig | None = None
    hyper_layers: list[int] | None = None
    image_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = dict(_PUBLISHED_VISION_CONFIG)
        if self.hyper_layers is None:
            self.hyper_layers = [1, 9, 17, 25]
        self.hyper_layers = [int(index) for index in self.hyper_layers]
        super().__post_init__(**kwargs)
        # The published config's `auto_map` points at the original remote code (files named `*_mplugowl3.py`),
        # which does not run on transformers 5; drop it so a re-saved model never refers to it.
        auto_map = getattr(self, "auto_map", None)
        if auto_map:
            self.auto_map = {key: value for key, value in auto_map.items() if "_mplugowl3." not in value}
        bad = [index for index in self.hyper_layers if not 1 <= index <= self.num_hidden_layers]
        if bad:
            raise ValueError(
                f"hyper_layers {bad} out of range: they are 1-based decoder layer indices in "
                f"[1, {self.num_hidden_layers}] (num_hidden_layers={self.num_hidden_layers})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )


__all__ = ["MplugOwl3Config"]
