"""Configuration of QualiCLIP / QualiCLIP+ and of the OpenAI CLIP "modified ResNet" image tower they use.

This file is a Hub unit: it imports only transformers (see hf_iqa/models/__init__.py).
"""

from __future__ import annotations

from transformers import CLIPTextConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

POSITION_EMBEDDING_MODES = ("none", "legacy_1d", "fixed")


class ClipResNetConfig(PreTrainedConfig):
    r"""The OpenAI CLIP "modified ResNet" image tower (RN50 by default; RN101/RN50x4/x16/x64 differ only in
    `layers`, `width`, `num_attention_heads`, `image_size` and `projection_dim`).

    Args:
        layers: Bottleneck blocks per stage.
        width: Stem width; stage widths are `width * (1, 2, 4, 8)`, the feature dimension is `width * 32`.
        projection_dim: Output size of the attention pool (`c_proj`), i.e. the image embedding size.
        num_attention_heads: Heads of the attention pool (OpenAI uses `width * 32 // 64`).
        image_size: Training resolution; it only sizes the `(image_size // 32) ** 2 + 1` position table.
        batch_norm_eps: BatchNorm epsilon.
        position_embedding_mode: What the attention pool adds to its tokens:
            `"none"` nothing (QualiCLIP, CLIP-IQA: any input size, the table is loaded but unused);
            `"legacy_1d"` the table resized with 1-D bicubic interpolation along the token axis (pyiqa
            `pos_embedding=True`; identity at the training size);
            `"fixed"` the table as is (vanilla CLIP; inputs must be `image_size` square).
        fold_batch_norm: In eval mode, run each conv+BatchNorm pair as one convolution with folded weights (same
            result to float rounding, one memory pass fewer). Training mode always uses real BatchNorm.
    """

    model_type = "hf_iqa_clip_resnet"
    base_config_key = "vision_config"

    layers: list[int] | tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    projection_dim: int = 1024
    num_attention_heads: int = 32
    image_size: int = 224
    batch_norm_eps: float = 1e-5
    position_embedding_mode: str = "none"
    fold_batch_norm: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.layers = [int(n) for n in self.layers]
        super().__post_init__(**kwargs)
        self.validate_clip_resnet()

    def validate_clip_resnet(self) -> None:
        """Raise a ValueError naming the bad field (called by `__post_init__`)."""
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ValueError(f"ClipResNetConfig.layers must be 4 positive block counts, got {self.layers}")
        if (self.width * 32) % self.num_attention_heads:
            raise ValueError(
                f"ClipResNetConfig: feature size width*32={self.width * 32} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.position_embedding_mode not in POSITION_EMBEDDING_MODES:
            raise ValueError(
                f"ClipResNetConfig.position_embedding_mode must be one of {POSITION_EMBEDDING_MODES}, "
                f"got {self.position_embedding_mode!r}"
            )


# The 7 antonym pairs, positive first (QualiCLIP paper / pyiqa). Never rebuild them from the official hubconf list:
# a missing comma there merges two prompts.
QUALICLIP_PROMPT_PAIRS = (
    ("Good photo.", "Bad photo."),
    ("Sharp image.", "Blurry image."),
    ("Sharp edges.", "Blurry edges."),
    ("High-resolution image.", "Low-resolution image."),
    ("Noise-free image.", "Noisy image."),
    ("High-quality image.", "Low-quality image."),
    ("Good picture.", "Bad picture."),
)
VARIANTS = ("qualiclip", "qualiclip+")


class QualiClipConfig(PreTrainedConfig):
    r"""QualiCLIP (opinion-unaware) and QualiCLIP+ (pyiqa's learned prompts): a CLIP RN50 image tower scored
    against 14 stored, normalised prompt features.

    Score = mean over the pairs of `softmax(prompt_logit_scale * cos(image, [positive, negative]))[positive]`, in
    [0, 1], higher is better.

    Args:
        vision_config: `ClipResNetConfig` of the image tower.
        text_config: `CLIPTextConfig` of the optional text tower. `None` (the default for converted inference
            checkpoints) means image-only: the prompt features are stored in the weights.
        projection_dim: Size of the joint embedding (1024 for RN50).
        prompt_pairs: `(positive, negative)` prompts; the stored `prompt_text_features` follow this order.
        prompt_logit_scale: Scale applied to the cosine similarities. `100.0` reproduces the official torch.hub
            model; `50.0` (`logit_scale.exp() / temperature 2`) reproduces pyiqa's `qualiclip` and `qualiclip+*`.
        variant: `"qualiclip"` or `"qualiclip+"` (learned prompt context, pyiqa).
        use_prompt_learner: Keep the QualiCLIP+ prompt learner (`ctx`, `token_prefix`, `token_suffix`) so the
            prompt features can be recomputed or retrained; needs `text_config`.
        n_ctx: Learned context tokens per prompt (half before, half after the prompt words).
        prompt_token_lengths: BPE length of each of the `2 * len(prompt_pairs)` prompts (without SOS/EOS); the
            prompt learner needs them to place the context tokens and find the EOS position.
        max_pixels_per_forward: Images of one shape are run in chunks of at most this many pixels (at least one
            image), so memory stays bounded for large batches of big images.
        score_range: Native score range.
        higher_is_better: Always True.
        output_labels: Filled from `prompt_pairs`: `{"pair_probs": ["Good photo./Bad photo.", ...]}`.
    """

    model_type = "hf_iqa_qualiclip"
    sub_configs_defaults = {
        "vision_config": ClipResNetConfig,
        "text_config": SubConfigSpec(CLIPTextConfig, optional=True),
    }

    vision_config: dict | ClipResNetConfig | None = None
    text_config: dict | CLIPTextConfig | None = None
    projection_dim: int = 1024
    prompt_pairs: list | tuple = QUALICLIP_PROMPT_PAIRS
    prompt_logit_scale: float = 100.0
    variant: str = "qualiclip"
    use_prompt_learner: bool = False
    n_ctx: int = 16
    prompt_token_lengths: list[int] | None = None
    max_pixels_per_forward: int = 3840 * 2160
    score_range: list[float] | tuple[float, float] = (0.0, 1.0)
    higher_is_better: bool = True
    output_labels: dict | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.prompt_pairs = [[str(positive), str(negative)] for positive, negative in self.prompt_pairs]
        self.prompt_logit_scale = float(self.prompt_logit_scale)
        self.score_range = [float(v) for v in self.score_range]
        if self.prompt_token_lengths is not None:
            self.prompt_token_lengths = [int(n) for n in self.prompt_token_lengths]
        self.output_labels = {"pair_probs": [f"{positive}/{negative}" for positive, negative in self.prompt_pairs]}
        super().__post_init__(**kwargs)
        self.validate_qualiclip()

    def validate_qualiclip(self) -> None:
        """Raise a ValueError naming the bad field. Called by `__post_init__` and by the model (keyword arguments
        given to `from_pretrained` are set after `__post_init__`). transformers' save-time `validate()` does not
        run it: @strict collects the `validate_*` methods of `PreTrainedConfig` itself, not of subclasses."""
        if not self.prompt_pairs:
            raise ValueError("QualiClipConfig.prompt_pairs must hold at least one (positive, negative) pair")
        if not self.prompt_logit_scale > 0:
            raise ValueError(f"QualiClipConfig.prompt_logit_scale must be > 0, got {self.prompt_logit_scale}")
        if self.variant not in VARIANTS:
            raise ValueError(f"QualiClipConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if len(self.score_range) != 2:
            raise ValueError(f"QualiClipConfig.score_range must be two numbers, got {self.score_range}")
        if self.prompt_token_lengths is not None and len(self.prompt_token_lengths) != 2 * len(self.prompt_pairs):
            raise ValueError(
                f"QualiClipConfig.prompt_token_lengths has {len(self.prompt_token_lengths)} entries, "
                f"expected one per prompt ({2 * len(self.prompt_pairs)})"
            )
        if self.use_prompt_learner and (self.text_config is None or self.prompt_token_lengths is None):
            raise ValueError("QualiClipConfig.use_prompt_learner needs text_config and prompt_token_lengths")

    @property
    def prompts(self) -> list[str]:
        """The prompts flattened in feature order: positive 1, negative 1, positive 2, ..."""
        return [prompt for pair in self.prompt_pairs for prompt in pair]


__all__ = ["ClipResNetConfig", "QualiClipConfig"]
