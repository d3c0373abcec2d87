"""Configuration of Dog-IQA (arXiv 2410.02505): every knob of the training-free method, and the Hub ids (or local
paths) of the two models it composes. A Dog-IQA Hub repo holds this config and the code only; the weights stay in
the segmenter's and the MLLM's own repos."""

from __future__ import annotations

from transformers import PreTrainedConfig

# The 7-level "word" standard of the released code (`standard='word'`, `n_word=7`), verbatim: a triple-quoted
# string in the original, hence the blank line after the list and the 20 spaces before the last two lines.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant to help me evaluate the quality of the image. You will be given standards about "
    "each quality level. The quality standard is list as follows:\n"
    "7: Perfect!\n6: Excellent!\n5: Good!\n4: Fair!\n3: Bad!\n2: Poor!\n1: Very Bad!\n"
    "\n"
    "                    The higher the image quality, the higher the score should be.\n"
    "                    Please strictly follow the USER's format, otherwise the result will be invalid."
)
DEFAULT_QUERY_PROMPT = "Please evaluate the quality of the image and score in quality. Only tell me the number. Do not analysis the image."
# The single user turn of the released code: one space, the standards, the image, the query (20-space indents).
DEFAULT_USER_TEMPLATE = " {system}\n                    {image}\n                    {query}"
# The released code builds the region views' message in a more deeply indented block: 24 spaces where the global
# prompt has 20, so two token ids differ in every region prompt (issue 27).
DEFAULT_REGION_USER_TEMPLATE = " {system}\n                        {image}\n                        {query}"
PROTOCOLS = ("paper", "released")
# Level k (1..7) is named LEVEL_NAMES[k - 1]; note that "Bad" (3) ranks above "Poor" (2) in the original.
DEFAULT_LEVEL_NAMES = ["Very Bad", "Poor", "Bad", "Fair", "Good", "Excellent", "Perfect"]

AGGREGATIONS = ("paper", "released_code", "global", "local")
SCORE_MODES = ("expected", "generate")
_CASTS = (
    (("unparsable_score", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset"), float),
    (("mask_threshold", "box_nms_thresh", "seg_lambda", "global_weight"), float),
    (("points_per_side", "points_per_batch", "min_region_area", "view_batch_size"), int),
    (("segmenter_batch_size", "cache_size"), int),
    (("add_leftover", "dedup_views", "reuse_prefix_cache", "higher_is_better"), bool),
)
# Typical native ranges per aggregation (paper: floor (1 + 1 + 0.1) / 2; grows by 0.05 per extra region).
_SCORE_RANGES = {"paper": [1.05, 7.5], "released_code": [1.6, 11.0], "global": [1.0, 7.0], "local": [1.0, 7.0]}


class DogIqaConfig(PreTrainedConfig):
    r"""
    Args:
        segmenter_name_or_path: Hub id or local folder of a transformers `Sam2Model` checkpoint (the paper: SAM 2.0
            Hiera-L).
        mllm_name_or_path: Hub id or local folder of the scoring MLLM (any model with a registered backbone adapter;
            the paper: mPLUG-Owl3-7B-240728).
        segmenter_revision / mllm_revision: pinned revisions of the two sub-models.
        backbone: name of the backbone adapter; `None` picks it from the MLLM's `model_type`.
        mllm_image_processor_kwargs: overrides for the MLLM's image processor (e.g. `max_pixels` for Qwen2-VL;
            changes results, re-validate).
        system_prompt / query_prompt / user_template: the prompt; `user_template` places `{system}`, `{image}` and
            `{query}` in the single user turn. The standards come before the image so the prefix is image-free.
        region_user_template: the user turn of the region views (`None`: `user_template`); the default is the
            released code's (24-space indents). Views are deduplicated only when image and prompt are identical.
        protocol: `"paper"` (default: released prompts, greedy reading, `aggregation="paper"`) or `"released"`
            (everything the released `eval.py` does, including `aggregation="released_code"`).
        level_names: names of the levels 1..K; the digits "1".."K" are the score tokens.
        score_mode: `"expected"` (one forward pass, softmax over the K digit logits, score = sum k p_k; the fast
            default) or `"generate"` (the greedy next token over the full vocabulary parsed as an integer, as the
            paper's `generate(max_new_tokens=1)`; unparsable -> `unparsable_score`).
        points_per_side ... box_nms_thresh: SAM2 automatic-mask-generator settings of the paper (official SAM2
            semantics: `>` for predicted IoU, `>=` for stability, stability offset around `mask_threshold`).
        points_per_batch: points decoded at once (memory only, results do not depend on it).
        segmenter_image_size / segmenter_resize / segmenter_image_mean / segmenter_image_std: SAM2 input (size
            `None`: the segmenter's own, 1024 for the released checkpoints); `"square"`
            resizes to size x size ignoring the aspect ratio like official SAM2, `"longest_side"` keeps it and pads.
        min_region_area: regions smaller than this many pixels (native resolution) are dropped.
        add_leftover / leftover_area: the region "everything not covered by a kept mask"; its area is
            `H*W - sum(kept areas)` (`"subtractive"`, the released code) or its true pixel count (`"exact"`).
        crop_mode: `"bbox"` scores the bounding box of the region cut from the original pixels (the paper);
            `"masked"` zeroes the pixels outside the region first (an ablation).
        aggregation: `"paper"`: (s_global + s_aw + seg_lambda * c) / 2; `"released_code"`: s_aw + seg_lambda * c +
            global_weight * s_global; `"global"`; `"local"` (= s_aw). s_aw is the area-weighted mean of the region
            scores, c the number of regions.
        view_batch_size / segmenter_batch_size: batch sizes of the MLLM views and of the SAM2 image encoder.
        dedup_views / reuse_prefix_cache / cache_size: exact speed-ups (identical views scored once; the KV cache
            of the image-free prompt prefix computed once; the capacity of a `DogIqaCache` of segmentations and view
            scores, which the caller owns).
    """

    model_type = "hf_iqa_dog_iqa"

    segmenter_name_or_path: str = "facebook/sam2-hiera-large"
    segmenter_revision: str | None = None
    mllm_name_or_path: str = "mPLUG/mPLUG-Owl3-7B-240728"
    mllm_revision: str | None = None
    backbone: str | None = None
    mllm_image_processor_kwargs: dict | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    query_prompt: str = DEFAULT_QUERY_PROMPT
    user_template: str = DEFAULT_USER_TEMPLATE
    region_user_template: str | None = DEFAULT_REGION_USER_TEMPLATE
    protocol: str = "paper"
    level_names: list[str] | None = None
    score_mode: str = "generate"
    unparsable_score: float = 1.0
    points_per_side: int = 8
    points_per_batch: int = 128
    pred_iou_thresh: float = 0.9
    stability_score_thresh: float = 0.8
    stability_score_offset: float = 0.7
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.9
    segmenter_image_size: int | None = None
    segmenter_resize: str = "square"
    segmenter_image_mean: list[float] | None = None
    segmenter_image_std: list[float] | None = None
    min_region_area: int = 1000
    add_leftover: bool = True
    leftover_area: str = "subtractive"
    crop_mode: str = "bbox"
    aggregation: str = "paper"
    seg_lambda: float = 0.1
    global_weight: float = 0.5
    view_batch_size: int = 8
    segmenter_batch_size: int = 4
    dedup_views: bool = True
    reuse_prefix_cache: bool = True
    cache_size: int = 1024
    score_range: list[float] | None = None
    higher_is_better: bool = True
    output_labels: dict[str, list[str]] | None = None

    def __post_init__(self, **kwargs):
        if self.protocol == "released":
            self.aggregation, self.score_mode = "released_code", "generate"
            self.region_user_template = DEFAULT_REGION_USER_TEMPLATE
        self.region_user_template = self.region_user_template or self.user_template
        self.mllm_image_processor_kwargs = dict(self.mllm_image_processor_kwargs or {})
        self.level_names = list(DEFAULT_LEVEL_NAMES if self.level_names is None else self.level_names)
        for names, cast in _CASTS:  # JSON and callers may give 8 for 8.0 or 1 for True
            for name in names:
                setattr(self, name, cast(getattr(self, name)))
        self.segmenter_image_size = int(self.segmenter_image_size) if self.segmenter_image_size else None
        self.segmenter_image_mean = list(self.segmenter_image_mean or [0.485, 0.456, 0.406])
        self.segmenter_image_std = list(self.segmenter_image_std or [0.229, 0.224, 0.225])
        default_range = _SCORE_RANGES.get(self.aggregation, [1.0, 7.0])
        self.score_range = [float(v) for v in (self.score_range or default_range)]
        self.output_labels = self.output_labels or {"level_probs": list(self.level_names)}
        if "global_level_probs" in self.output_labels:  # the field's name in configs saved before the rename
            self.output_labels["level_probs"] = self.output_labels.pop("global_level_probs")
        super().__post_init__(**kwargs)
        self.validate_dog_iqa()

    def validate_dog_iqa(self) -> None:
        """Reject values the model cannot run with, naming the argument. Called at the end of `__post_init__` and
        again by `DogIqaModel.from_pretrained` after keyword arguments updated the config."""
        choices = {
            "score_mode": (self.score_mode, SCORE_MODES),
            "protocol": (self.protocol, PROTOCOLS),
            "aggregation": (self.aggregation, AGGREGATIONS),
            "leftover_area": (self.leftover_area, ("subtractive", "exact")),
            "crop_mode": (self.crop_mode, ("bbox", "masked")),
            "segmenter_resize": (self.segmenter_resize, ("square", "longest_side")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"DogIqaConfig: {name}={value!r} is not one of {list(allowed)}")
        if not 2 <= len(self.level_names) <= 9:
            raise ValueError(
                f"DogIqaConfig: level_names needs 2 to 9 levels (digits 1..K), got {len(self.level_names)}"
            )
        for name in ("user_template", "region_user_template"):
            if "{image}" not in getattr(self, name):
                raise ValueError(f"DogIqaConfig: {name} must contain the {{image}} placeholder")
        for name in ("points_per_side", "points_per_batch", "view_batch_size", "segmenter_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DogIqaConfig: {name} must be >= 1, got {getattr(self, name)}")
        if len(self.score_range) != 2:
            raise ValueError(f"DogIqaConfig: score_range must hold two numbers, got {self.score_range}")

    @property
    def num_levels(self) -> int:
        return len(self.level_names)


__all__ = ["DogIqaConfig"]
