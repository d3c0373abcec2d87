"""LIQE configuration (Zhang et al., CVPR 2023, arXiv 2303.14968).

LIQE scores an image by matching 224x224 windows against CLIP text prompts that jointly describe quality, scene
and distortion. The multitask checkpoint (`liqe-mix`, `LIQE.pt`) uses 5 x 9 x 11 = 495 prompts; the KonIQ-only
checkpoint (`liqe-koniq`) uses the 5 quality prompts alone.
"""

from __future__ import annotations

from transformers import CLIPConfig, PreTrainedConfig

QUALITY_LEVELS = ["bad", "poor", "fair", "good", "perfect"]
SCENES = ["animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others"]
DISTORTIONS = [
    "jpeg2000 compression", "jpeg compression", "noise", "blur", "color", "contrast", "overexposure",
    "underexposure", "spatial", "quantization", "other",
]  # fmt: skip
MULTITASK_TEMPLATE = "a photo of a {scene} with {distortion} artifacts, which is of {quality} quality"
QUALITY_ONLY_TEMPLATE = "a photo with {quality} quality"


class LiqeConfig(PreTrainedConfig):
    r"""
    Args:
        clip_config (`dict` or `CLIPConfig`): the CLIP backbone (OpenAI ViT-B/32: quick_gelu, eps 1e-5).
        quality_levels (`list[str]`): quality words, worst first; level k (1-based) scores k.
        scenes (`list[str]`, *optional*): scene words of the multitask prompts; empty for quality-only models.
        distortions (`list[str]`, *optional*): distortion words of the multitask prompts; empty for quality-only.
        prompt_template (`str`): template with `{quality}` (and `{scene}`, `{distortion}` when multitask).
            The prompt order is the Cartesian product with quality outermost, then scene, then distortion.
        num_patches (`int`): 224x224 windows averaged per image (15 in the paper).
        patch_size (`int`): window side in pixels.
        protocol (`str`): evaluation protocol the processor should use, recorded for the model card:
            "official" (the paper's: adaptive resize to 768, stride 48/32) or "pyiqa" (no resize, stride 32).
        score_range (`list[float]`): native score range, [1, 5] (expected quality level).
        higher_is_better (`bool`): always True.
    """

    model_type = "hf_iqa_liqe"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None
    quality_levels: list[str] | None = None
    scenes: list[str] | None = None
    distortions: list[str] | None = None
    prompt_template: str | None = None
    num_patches: int = 15
    patch_size: int = 224
    protocol: str = "official"
    score_range: list[float] | None = None
    higher_is_better: bool = True

    def __post_init__(self, **kwargs):
        if self.clip_config is None:
            self.clip_config = CLIPConfig(
                text_config={"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "eos_token_id": 49407},
                vision_config={"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "patch_size": 32},
                logit_scale_init_value=4.605170185988092,  # ln 100, the value OpenAI CLIP checkpoints carry
            )
        elif isinstance(self.clip_config, dict):
            self.clip_config = CLIPConfig(**self.clip_config)
        if self.quality_levels is None:
            self.quality_levels = list(QUALITY_LEVELS)
        if self.scenes is None:
            self.scenes = list(SCENES)
        if self.distortions is None:
            self.distortions = list(DISTORTIONS)
        if self.prompt_template is None:
            self.prompt_template = MULTITASK_TEMPLATE if self.multitask else QUALITY_ONLY_TEMPLATE
        if self.score_range is None:
            self.score_range = [1.0, float(len(self.quality_levels))]
        self.score_range = [float(v) for v in self.score_range]
        super().__post_init__(**kwargs)
        self.validate_liqe()

    def validate_liqe(self) -> None:
        """Raise a ValueError naming the bad field. Called by `__post_init__` and by the model (keyword arguments
        given to `from_pretrained` are set after `__post_init__`). transformers' save-time `validate()` does not
        run it: @strict collects the `validate_*` methods of `PreTrainedConfig` itself, not of subclasses."""
        if self.protocol not in ("official", "pyiqa"):
            raise ValueError(f"LiqeConfig.protocol must be 'official' or 'pyiqa', got {self.protocol!r}")
        if not isinstance(self.num_patches, int) or self.num_patches < 1:
            raise ValueError(f"LiqeConfig.num_patches must be a positive integer, got {self.num_patches!r}")
        if bool(self.scenes) != bool(self.distortions):
            raise ValueError("LiqeConfig: give both `scenes` and `distortions` (multitask) or neither")
        needed = {"quality"} | ({"scene", "distortion"} if self.multitask else set())
        for field in needed:
            if "{" + field + "}" not in self.prompt_template:
                raise ValueError(f"LiqeConfig.prompt_template lacks the {{{field}}} placeholder")
        if len(self.score_range) != 2:
            raise ValueError(f"LiqeConfig.score_range must hold two numbers, got {self.score_range!r}")

    @property
    def multitask(self) -> bool:
        """True for the quality x scene x distortion model, False for quality-only prompts."""
        return bool(self.scenes) and bool(self.distortions)

    @property
    def prompts(self) -> list[str]:
        """All prompts in the order the text embeddings are stored (quality outermost)."""
        if not self.multitask:
            return [self.prompt_template.format(quality=q) for q in self.quality_levels]
        return [
            self.prompt_template.format(quality=q, scene=s, distortion=d)
            for q in self.quality_levels
            for s in self.scenes
            for d in self.distortions
        ]

    @property
    def num_prompts(self) -> int:
        return len(self.quality_levels) * (len(self.scenes) * len(self.distortions) if self.multitask else 1)

    @property
    def output_labels(self) -> dict[str, list[str]]:
        """Label names of the model's probability outputs (the hf_iqa output contract)."""
        labels = {"level_probs": list(self.quality_levels)}
        if self.multitask:
            labels["scene_probs"] = list(self.scenes)
            labels["distortion_probs"] = list(self.distortions)
        return labels


__all__ = ["LiqeConfig"]
