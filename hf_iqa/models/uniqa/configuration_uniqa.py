"""UniQA configuration (Zhou et al., "UniQA: Unified Vision-Language Pre-training for Image Quality and Aesthetic
Assessment", arXiv 2406.01069).

UniQA is an OpenAI-format CLIP pre-trained on quality and aesthetics captions. An image is scored by matching its
(optionally adapted) embedding against five level prompts and taking the expected level value. One checkpoint
holds a head per task ("quality", "aesthetics"); `task` picks the one `forward` uses, e.g.
`UniQaModel.from_pretrained(path, task="aesthetics")`.

The released backbone may be a ViT or a ResNet CLIP (sources disagree), so both are supported: "vit" uses
transformers' `CLIPModel`; "resnet" uses the OpenAI "modified ResNet" tower shared with QualiCLIP, whose config
below is a copy of `hf_iqa/models/qualiclip/configuration_qualiclip.py` (model folders must stay flat; the
`# Copied from` markers are checked by `utils/check_copies.py`).
"""

from __future__ import annotations

from transformers import CLIPConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# Copied from hf_iqa.models.qualiclip.configuration_qualiclip.POSITION_EMBEDDING_MODES
POSITION_EMBEDDING_MODES = ("none", "legacy_1d", "fixed")


# Copied from hf_iqa.models.qualiclip.configuration_qualiclip.ClipResNetConfig
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


TASKS = ("quality", "aesthetics")
QUALITY_LEVELS = ["bad", "poor", "fair", "good", "perfect"]
# "{} image" is the upstream prompt (`bad image`, ..., `perfect image`, no trailing period). Upstream's architecture
# scores its aesthetics head (the AVA/AADB adapters) against the same quality prompts: `aesthetics_prompts="released"`,
# the default. "{} aesthetic image" is an hf_iqa alternative (`aesthetics_prompts="aesthetic"`), a different model.
AESTHETICS_PROMPTS = {"released": "{} image", "aesthetic": "{} aesthetic image"}
PROMPT_TEMPLATES = {"quality": "{} image", "aesthetics": AESTHETICS_PROMPTS["released"]}
SCORE_LEVELS_INIT = [0.2, 0.4, 0.6, 0.8, 1.0]  # upstream `score_level` initial value (learnable in adapter mode)
# Upstream's prompt ensembles (`UniQA_Adapter_Patchtest_PromptEs` and `..._PromptEs_AGIQA`): groups of five level
# prompts, worst first; the softmax runs within each group and the group scores are averaged.
PROMPT_ENSEMBLES = {
    "uniqa": [
        ["bad image", "poor image", "fair image", "good image", "perfect image"],
        ["extremely blurry image", "blurry image", "fair image", "sharp image", "extremely sharp image"],
        ["extremely noisy image", "noisy image", "fair image", "noise-free image", "extremely noise-free image"],
        [
            "extremely low-quality image",
            "low-quality image",
            "fair image",
            "high-quality image",
            "extremely high-quality image",
        ],
    ],
    "uniqa_agiqa": [
        ["bad image", "poor image", "fair image", "good image", "perfect image"],
        ["bad content", "poor content", "fair content", "good content", "perfect content"],
    ],
}


class UniQaConfig(PreTrainedConfig):
    r"""
    Args:
        backbone_type (`str`): "vit" (image tower = transformers `CLIPVisionModel` inside `clip_config`) or
            "resnet" (OpenAI CLIP modified ResNet described by `resnet_config`). Converters read it from the
            checkpoint.
        clip_config (`dict` or `CLIPConfig`): the CLIP model: text tower, `projection_dim`, `logit_scale` and, for
            "vit", the vision tower (OpenAI ViT: quick_gelu, eps 1e-5).
        resnet_config (`dict` or `ClipResNetConfig`, *optional*): the image tower for "resnet". UniQA adds the
            attention-pool position table (pyiqa `pos_embedding=True`, i.e. "legacy_1d": identity at the native
            size, which 224 crops of RN50 are).
        task (`str`): the head `forward` uses: "quality" or "aesthetics".
        quality_levels (`list[str]`): the five level words, worst first.
        prompt_templates (`dict[str, str]`): per task, the prompt with `{}` for a level word.
        aesthetics_prompts (`str`, *optional*): the aesthetics head's prompts by name (`AESTHETICS_PROMPTS`):
            "released" (default; `bad image` ... `perfect image`, as upstream's architecture scores its aesthetics
            head) or "aesthetic" (`bad aesthetic image` ...; an hf_iqa alternative). Given, it sets
            `prompt_templates["aesthetics"]`; absent, it is read from that template (configs saved before the field
            existed hold "aesthetic"). The stored prompt features follow it, so it is chosen at conversion
            (`--aesthetics-prompts`); on a loaded model `set_prompt_groups("aesthetics", ...)` re-encodes.
        score_levels_init (`list[float]`): initial value of each head's learnable level values.
        adapter_tasks (`list[str]`): tasks whose head has the residual adapter; empty = zero-shot model.
        adapter_hidden_size (`int`, *optional*): adapter bottleneck, `projection_dim // 2` by default (512 -> 256).
        prompt_groups (`dict[str, list[list[str]] | str]`, *optional*): per task, groups of level prompts (worst
            first, one per level) replacing the single templated group; the softmax runs within each group and the
            group scores are averaged. A name from `PROMPT_ENSEMBLES` ("uniqa", "uniqa_agiqa") stands for its groups.
            Changing it needs new prompt features: `UniQaModel.set_prompt_groups`.
        prompt_ensemble (`str`, *optional*): score the quality head against one of upstream's prompt ensembles
            (`PROMPT_ENSEMBLES`: "uniqa", "uniqa_agiqa") instead of its own prompts. Every converted folder stores
            the features of every ensemble (`ensembles.<name>.prompt_text_features`), so it can be chosen at load
            time like any config field: `from_pretrained(path, prompt_ensemble="uniqa")`.
        use_position_embedding (`bool`): ViT backbones only: add the position embedding to the tokens (True, like
            CLIP and upstream's `UniQA_Adapter_Patchtest`) or not (upstream's prompt-ensemble heads run with
            `pos_embedding=False`; heads trained that way need it). ResNet backbones set
            `resnet_config.position_embedding_mode` instead.
        task_score_ranges (`dict[str, list[float]]`): per task, [min, max] of the head's level values, i.e. the
            native score range (kept in sync by `UniQaModel.save_pretrained` and `UniQaModel.load_task_head`).
        higher_is_better (`bool`): always True.
    """

    model_type = "hf_iqa_uniqa"
    sub_configs_defaults = {
        "clip_config": CLIPConfig,
        "resnet_config": SubConfigSpec(ClipResNetConfig, optional=True),
    }

    backbone_type: str = "vit"
    clip_config: dict | CLIPConfig | None = None
    resnet_config: dict | ClipResNetConfig | None = None
    task: str = "quality"
    quality_levels: list[str] | None = None
    prompt_templates: dict[str, str] | None = None
    aesthetics_prompts: str | None = None
    score_levels_init: list[float] | None = None
    adapter_tasks: list[str] | None = None
    adapter_hidden_size: int | None = None
    prompt_groups: dict[str, list[list[str]] | str] | None = None
    prompt_ensemble: str | None = None
    use_position_embedding: bool = True
    task_score_ranges: dict[str, list[float]] | None = None
    higher_is_better: bool = True

    def __post_init__(self, **kwargs):
        if self.clip_config is None:
            self.clip_config = CLIPConfig(
                text_config={"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "eos_token_id": 49407},
                vision_config={"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "patch_size": 16},
                projection_dim=512,
                logit_scale_init_value=4.605170185988092,  # ln 100, as OpenAI CLIP checkpoints carry
            )
        if self.backbone_type == "resnet" and self.resnet_config is None:
            self.resnet_config = {"projection_dim": 1024, "position_embedding_mode": "legacy_1d"}
        super().__post_init__(**kwargs)
        self.quality_levels = list(QUALITY_LEVELS if self.quality_levels is None else self.quality_levels)
        self.prompt_templates = {**PROMPT_TEMPLATES, **(self.prompt_templates or {})}
        if self.aesthetics_prompts in AESTHETICS_PROMPTS:
            self.prompt_templates["aesthetics"] = AESTHETICS_PROMPTS[self.aesthetics_prompts]
        elif self.aesthetics_prompts is None:  # named after the template, None when it is a custom one
            names = [n for n, t in AESTHETICS_PROMPTS.items() if t == self.prompt_templates["aesthetics"]]
            self.aesthetics_prompts = names[0] if names else None
        levels = SCORE_LEVELS_INIT if self.score_levels_init is None else self.score_levels_init
        self.score_levels_init = [float(v) for v in levels]
        self.adapter_tasks = [str(task) for task in (self.adapter_tasks or [])]
        self.prompt_groups = {
            task: [list(g) for g in PROMPT_ENSEMBLES[groups]]
            if isinstance(groups, str) and groups in PROMPT_ENSEMBLES
            else groups
            for task, groups in (self.prompt_groups or {}).items()
        }
        if self.adapter_hidden_size is None:
            self.adapter_hidden_size = self.projection_dim // 2
        default_range = [min(self.score_levels_init), max(self.score_levels_init)]
        ranges = dict(self.task_score_ranges or {})
        self.task_score_ranges = {task: [float(v) for v in ranges.get(task, default_range)] for task in TASKS}
        self.validate_uniqa()

    def validate_uniqa(self) -> None:
        """Raise a ValueError naming the bad field. Called by `__post_init__` and by the model (keyword arguments
        given to `from_pretrained`, e.g. `task=`, are set after `__post_init__`). transformers' save-time
        `validate()` does not run it: @strict collects the `validate_*` methods of `PreTrainedConfig` itself, not
        of subclasses."""
        if self.backbone_type not in ("vit", "resnet"):
            raise ValueError(f"UniQaConfig.backbone_type must be 'vit' or 'resnet', got {self.backbone_type!r}")
        if self.backbone_type == "resnet" and self.resnet_config is None:
            raise ValueError("UniQaConfig: backbone_type 'resnet' needs resnet_config")
        if self.backbone_type == "resnet" and not self.use_position_embedding:
            raise ValueError(
                "UniQaConfig: use_position_embedding applies to ViT backbones; for the ResNet tower set "
                "resnet_config.position_embedding_mode='none'"
            )
        if self.task not in TASKS:
            raise ValueError(f"UniQaConfig.task must be one of {TASKS}, got {self.task!r}")
        unknown = set(self.adapter_tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"UniQaConfig.adapter_tasks has unknown tasks {sorted(unknown)}; valid: {TASKS}")
        if len(self.score_levels_init) != len(self.quality_levels):
            raise ValueError(
                f"UniQaConfig: {len(self.score_levels_init)} score_levels_init for {len(self.quality_levels)} levels"
            )
        for task, groups in self.prompt_groups.items():
            if task not in TASKS:
                raise ValueError(f"UniQaConfig.prompt_groups has unknown task {task!r}; valid: {TASKS}")
            if isinstance(groups, str):
                raise ValueError(
                    f"UniQaConfig.prompt_groups[{task!r}] = {groups!r}: give the groups (names of PROMPT_ENSEMBLES, "
                    f"{sorted(PROMPT_ENSEMBLES)}, are resolved only when a config is built). To change the prompts "
                    "of a saved model: from_pretrained(path, prompt_ensemble=...) or model.set_prompt_groups(...)"
                )
            if not groups or any(len(group) != len(self.quality_levels) for group in groups):
                raise ValueError(
                    f"UniQaConfig.prompt_groups[{task!r}]: every group needs one prompt per level "
                    f"({len(self.quality_levels)}), got group sizes {[len(group) for group in groups]}"
                )
        if self.prompt_ensemble is not None and self.prompt_ensemble not in PROMPT_ENSEMBLES:
            raise ValueError(
                f"UniQaConfig.prompt_ensemble must be one of {sorted(PROMPT_ENSEMBLES)} or None, "
                f"got {self.prompt_ensemble!r}"
            )
        if self.aesthetics_prompts is not None and (
            AESTHETICS_PROMPTS.get(self.aesthetics_prompts) != self.prompt_templates["aesthetics"]
        ):
            raise ValueError(
                f"UniQaConfig.aesthetics_prompts={self.aesthetics_prompts!r} (one of {sorted(AESTHETICS_PROMPTS)}) "
                f"does not match prompt_templates['aesthetics']={self.prompt_templates['aesthetics']!r}, whose "
                "features the model holds; convert with --aesthetics-prompts, or re-encode a loaded model with "
                "model.set_prompt_groups('aesthetics', [[...five prompts...]], tokenizer)"
            )
        for task in TASKS:
            if self.prompt_templates[task].count("{}") != 1:
                raise ValueError(f"UniQaConfig.prompt_templates[{task!r}] needs exactly one '{{}}' placeholder")
        if self.backbone_type == "resnet" and self.resnet_config.projection_dim != self.projection_dim:
            raise ValueError(
                f"UniQaConfig: resnet_config.projection_dim ({self.resnet_config.projection_dim}) must equal "
                f"clip_config.projection_dim ({self.projection_dim})"
            )

    @property
    def projection_dim(self) -> int:
        """Size of the joint image-text embedding."""
        return int(self.clip_config.projection_dim)

    @property
    def image_size(self) -> int:
        """Input side the image tower was built for (the crop size)."""
        if self.backbone_type == "resnet":
            return int(self.resnet_config.image_size)
        return int(self.clip_config.vision_config.image_size)

    @property
    def score_range(self) -> list[float]:
        """Native score range of the active head: scores are convex combinations of its level values."""
        return list(self.task_score_ranges[self.task])

    @property
    def output_labels(self) -> dict[str, list[str]]:
        """Label names of the probability outputs (the hf_iqa output contract)."""
        return {"level_probs": list(self.quality_levels)}

    def prompts(self, task: str | None = None) -> list[str]:
        """The level prompts stored in the head of `task` (default: the active task), worst first, group after group.
        With `prompt_ensemble` set, the quality head scores against `ensemble_prompts(prompt_ensemble)` instead."""
        task = task or self.task
        if task in self.prompt_groups:
            return [prompt for group in self.prompt_groups[task] for prompt in group]
        template = self.prompt_templates[task]
        return [template.format(level) for level in self.quality_levels]

    @staticmethod
    def ensemble_prompts(name: str) -> list[str]:
        """The prompts of the upstream ensemble `name`, worst first, group after group."""
        return [prompt for group in PROMPT_ENSEMBLES[name] for prompt in group]


__all__ = ["ClipResNetConfig", "UniQaConfig"]
