"""Dog-IQA (arXiv 2410.02505): training-free image quality from SAM2 regions and a multimodal LLM.

Per image: s_global = MLLM score of the whole image; SAM2 point-grid masks -> regions (area >= 1000 px, plus the
leftover region); s_i = MLLM score of each region's bounding-box crop; aggregate (paper: (s_global + s_aw + 0.1 c)
/ 2 with s_aw the area-weighted mean of the s_i and c the number of regions).

`DogIqaModel` composes two independently hosted models: a transformers `Sam2Model` and any image-text-to-text
MLLM with a backbone adapter. A Dog-IQA repo holds config and code only; `from_pretrained` loads both sub-models
from their own repos and `from_parts` builds the model. Exact speed-ups over the released procedure (one `generate`
per view, batch 1): identical views are scored once, all views of all images go through left-padded batches, the
image-free prompt prefix is encoded once (KV cache), and a caller-owned `DogIqaCache` keeps segmentations,
per-view level probabilities and that prefix across calls, so that another aggregation or reading mode does not
rerun the MLLM. The model itself keeps nothing between calls.
"""

from __future__ import annotations

import copy
import hashlib
import json
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import PreTrainedModel
from transformers.utils import ModelOutput, logging

from .backbones_dog_iqa import BackboneAdapter, adapter_class_for, load_chat_template, to_pil
from .configuration_dog_iqa import DogIqaConfig
from .segmentation_dog_iqa import Regions, Sam2PointGridMaskGenerator, build_regions, crop_region

logger = logging.get_logger(__name__)

# Further backbone adapters register themselves when imported here (and `save_pretrained` then copies their
# files): mPLUG-Owl3, the paper's backbone.
from .backbone_mplug_owl3 import MplugOwl3Adapter  # noqa: E402, F401


@dataclass
class DogIqaOutput(ModelOutput):
    """Dog-IQA scores. Per-region fields are padded to the largest region count of the batch (scores and
    probabilities with NaN, boxes with -1, areas with 0); `num_regions` says how many entries are real.

    scores: (B,) aggregated quality, higher is better.
    global_score: (B,) score of the whole image.
    local_score: (B,) area-weighted mean of the region scores (s_aw).
    level_probs: (B, K) probabilities of the levels 1..K for the whole image (the global view; softmax over the K
        digit tokens; in `generate` mode they come from the same forward pass).
    num_regions: (B,) number of regions c, leftover included.
    region_boxes: (B, R, 4) XYXY boxes in native pixels, ends exclusive.
    region_areas: (B, R) areas used by the aggregation.
    region_scores: (B, R) scores of the region crops.
    region_level_probs: (B, R, K) level probabilities of the region crops.
    region_is_leftover: (B, R) whether the region is the leftover one.
    """

    scores: torch.FloatTensor | None = None
    global_score: torch.FloatTensor | None = None
    local_score: torch.FloatTensor | None = None
    level_probs: torch.FloatTensor | None = None
    num_regions: torch.LongTensor | None = None
    region_boxes: torch.LongTensor | None = None
    region_areas: torch.FloatTensor | None = None
    region_scores: torch.FloatTensor | None = None
    region_level_probs: torch.FloatTensor | None = None
    region_is_leftover: torch.BoolTensor | None = None


def aggregate_scores(
    global_score: torch.Tensor,
    region_scores: torch.Tensor,
    region_areas: torch.Tensor,
    num_regions: torch.Tensor,
    aggregation: str = "paper",
    seg_lambda: float = 0.1,
    global_weight: float = 0.5,
) -> torch.Tensor:
    """Combine per-image global and (padded) region scores. Works on a `DogIqaOutput`'s fields, so any
    aggregation can be recomputed from a stored output without running a model.

    paper: (s_global + s_aw + seg_lambda * c) / 2;  released_code: s_aw + seg_lambda * c + global_weight * s_global;
    global: s_global;  local: s_aw."""
    valid = torch.arange(region_scores.shape[1], device=region_scores.device)[None] < num_regions[:, None]
    areas = torch.where(valid, region_areas.double(), 0.0)
    scores = torch.where(valid, region_scores.double(), 0.0)
    local = (areas * scores).sum(-1) / areas.sum(-1)
    count = num_regions.double()
    s_global = global_score.double()
    if aggregation == "paper":
        result = 0.5 * (s_global + local + seg_lambda * count)
    elif aggregation == "released_code":
        result = local + seg_lambda * count + global_weight * s_global
    elif aggregation == "global":
        result = s_global
    elif aggregation == "local":
        result = local
    else:
        raise ValueError(f"aggregation={aggregation!r} is not one of paper, released_code, global, local")
    return result.float()


def _fingerprint(array: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes())
    digest.update(repr(array.shape).encode())
    return digest.hexdigest()


def _as_uint8_rgb(image, name: str) -> np.ndarray:
    """PIL / numpy / torch image -> (H, W, 3) uint8. Channels-first input is recognised by 1 or 3 leading
    channels; float input in [0, 1] is scaled to [0, 255]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3:
        raise ValueError(f"{name}: expected an image of shape (H, W, 3) or (3, H, W), got {tuple(image.shape)}")
    if image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[-1] != 3:
        raise ValueError(f"{name}: expected 3 colour channels, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        image = image.astype(np.float64)
        if image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if min(image.shape[:2]) < 1:
        raise ValueError(f"{name}: empty image of shape {tuple(image.shape)}")
    return np.ascontiguousarray(image)


class _LruCache(OrderedDict):
    """Least-recently-used entries, at most `capacity` of them and, when `max_bytes` is given, at most that many
    bytes by `nbytes(value)` (segmentations hold full-resolution masks: a count alone does not bound memory)."""

    def __init__(self, capacity: int, max_bytes: int | None = None, nbytes=None) -> None:
        super().__init__()
        self.capacity, self.max_bytes, self.nbytes = capacity, max_bytes, nbytes
        self.total_bytes = 0

    def get_item(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value) -> None:
        size = self.nbytes(value) if self.nbytes is not None else 0
        if self.capacity <= 0 or (self.max_bytes is not None and size > self.max_bytes):
            return
        if key in self:
            self.total_bytes -= self.nbytes(self[key]) if self.nbytes is not None else 0
        self[key] = value
        self.total_bytes += size
        self.move_to_end(key)
        while len(self) > self.capacity or (self.max_bytes is not None and self.total_bytes > self.max_bytes):
            _, dropped = self.popitem(last=False)
            self.total_bytes -= self.nbytes(dropped) if self.nbytes is not None else 0


SEGMENTATION_CACHE_BYTES = 512 * 2**20  # masks kept for reuse across calls, whatever the number or size of images


class DogIqaCache:
    """What Dog-IQA may reuse between calls, owned by the caller, never by the model: segmentations (keyed by pixels
    and segmentation settings), the level probabilities and greedy digit of every scored view (keyed by pixels and
    prompt), and the KV cache of the image-free prompt prefix. All are pure functions of one model's config, weights
    and inputs, so a cache serves the model that made it (`model.make_cache()`). Pass it to several calls
    (`model(images=..., cache=cache)`) to read another aggregation or score mode without the MLLM, or to encode the
    prefix once for all batches of a run (the image-quality pipeline keeps one); without it each call makes its own.
    Memory: at most `size` segmentations and `SEGMENTATION_CACHE_BYTES` of their masks, 8 * `size` view records
    (LRU), and one prefix per device and dtype."""

    def __init__(self, model: DogIqaModel, size: int = 1024) -> None:
        self.model = weakref.ref(model)
        self.segmentations = _LruCache(size, SEGMENTATION_CACHE_BYTES, nbytes=lambda regions: regions.masks.nbytes)
        self.views = _LruCache(size * 8)
        self.prefixes: dict[str, object] = {}

    def check(self, model: DogIqaModel) -> DogIqaCache:
        if self.model() is not model:
            raise ValueError("DogIqaCache: this cache was made by another DogIqaModel (its entries depend on weights)")
        return self


# Which `DogIqaModel.from_pretrained` options go to which part; any other option naming a config field updates the
# config, and single-checkpoint options of AutoModel (IGNORED_OPTIONS, `_`-prefixed) are dropped silently.
HUB_OPTIONS = ("cache_dir", "token", "local_files_only", "force_download")  # the Dog-IQA repo and both parts' repos
PART_OPTIONS = ("dtype", "device_map")  # both parts; `segmenter_dtype` overrides `dtype` for the segmenter
MLLM_OPTIONS = ("attn_implementation", "quantization_config", "max_memory", "trust_remote_code")  # + load_in_8bit/4bit
IGNORED_OPTIONS = ("adapter_kwargs", "adapter_name", "code_revision")


def split_loader_options(kwargs: dict) -> dict[str, dict]:
    """Sort `from_pretrained` keyword arguments into those of the Dog-IQA repo ("repo"), the segmenter, the MLLM, the
    MLLM's tokenizer files ("mllm_files") and config updates ("config")."""
    kwargs = dict(kwargs)
    hub = {k: kwargs.pop(k) for k in HUB_OPTIONS if k in kwargs}
    if "torch_dtype" in kwargs:
        kwargs.setdefault("dtype", kwargs.pop("torch_dtype"))
    parts = {k: kwargs.pop(k, None) for k in PART_OPTIONS}  # None (not absent): each loader's own default
    segmenter = {**hub, **parts}
    if "segmenter_dtype" in kwargs:
        segmenter["dtype"] = kwargs.pop("segmenter_dtype")
    mllm = {**hub, **parts, **{k: kwargs.pop(k) for k in MLLM_OPTIONS if k in kwargs}}
    for bits in ("load_in_8bit", "load_in_4bit"):
        if kwargs.pop(bits, False):
            from transformers import BitsAndBytesConfig

            mllm["quantization_config"] = BitsAndBytesConfig(**{bits: True})
    mllm_files = {**hub, **({"trust_remote_code": mllm["trust_remote_code"]} if "trust_remote_code" in mllm else {})}
    repo = {**hub, "revision": kwargs.pop("revision", None)}
    config = {k: v for k, v in kwargs.items() if not k.startswith("_") and k not in IGNORED_OPTIONS}
    return {"repo": repo, "segmenter": segmenter, "mllm": mllm, "mllm_files": mllm_files, "config": config}


def load_segmenter(config: DogIqaConfig, **options):
    """The `Sam2Model` named by the config (options: dtype, device_map, hub options)."""
    from transformers import AutoModelForMaskGeneration

    return AutoModelForMaskGeneration.from_pretrained(
        config.segmenter_name_or_path, revision=config.segmenter_revision, **options
    )


def load_mllm(config: DogIqaConfig, **options):
    """The MLLM named by the config, loaded the way its backbone adapter says (options: dtype, device_map,
    quantization_config, attn_implementation, trust_remote_code, hub options)."""
    from transformers import AutoConfig

    files = {k: options[k] for k in (*HUB_OPTIONS, "trust_remote_code") if k in options}
    mllm_config = AutoConfig.from_pretrained(config.mllm_name_or_path, revision=config.mllm_revision, **files)
    adapter_cls = adapter_class_for(mllm_config.model_type, config.backbone)
    return adapter_cls.load_model(config.mllm_name_or_path, revision=config.mllm_revision, **options)


class DogIqaPreTrainedModel(PreTrainedModel):
    config_class = DogIqaConfig
    # The scores are read from the MLLM, so it is the "base model" (`model.base_model`, input embeddings); Dog-IQA has
    # no weights of its own, so no checkpoint key ever carries this prefix.
    base_model_prefix = "mllm"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _supports_sdpa = True

    def _init_weights(self, module):
        """Nothing of its own to initialise: the sub-models are loaded (or built) and initialised by themselves."""


class DogIqaModel(DogIqaPreTrainedModel):
    """Dog-IQA over a `Sam2Model` (`segmenter`) and an image-text-to-text MLLM (`mllm`).

    Build it with `DogIqaModel.from_pretrained(dog_iqa_repo_or_dir, dtype=..., device_map=...)` (loads both
    sub-models from the ids in the config), from loaded parts with `DogIqaModel.from_parts(config, segmenter, mllm)`,
    or directly with `DogIqaModel(config, segmenter=..., mllm=..., tokenizer=..., mllm_image_processor=...)`. The model
    keeps no state between calls: reusable work lives in a `DogIqaCache` the caller may pass."""

    def __init__(
        self,
        config: DogIqaConfig,
        segmenter=None,
        mllm=None,
        tokenizer=None,
        mllm_image_processor=None,
        chat_template: str | None = None,
    ) -> None:
        super().__init__(config)
        self.segmenter = segmenter
        self.mllm = mllm
        self.backbone: BackboneAdapter | None = None
        self.region_backbone: BackboneAdapter | None = None
        # set by `from_pretrained` when it loaded the MLLM without a dtype: its released GPU precision (see `to`)
        self.released_mllm_dtype: torch.dtype | None = None
        if mllm is not None:
            if tokenizer is None or mllm_image_processor is None:
                raise ValueError("DogIqaModel: `mllm` needs its `tokenizer` and `mllm_image_processor`")
            adapter_cls = adapter_class_for(mllm.config.model_type, config.backbone)
            template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
            self.backbone = adapter_cls(mllm, tokenizer, mllm_image_processor, config, chat_template=template)
            region_config = copy.copy(config)  # the same knobs, the region views' user turn
            region_config.user_template = config.region_user_template
            self.region_backbone = adapter_cls(
                mllm, tokenizer, mllm_image_processor, region_config, chat_template=template
            )
        self.post_init()

    # ---- building, loading and saving ------------------------------------------------------------------------
    @classmethod
    def from_parts(cls, config: DogIqaConfig, segmenter, mllm, **mllm_files) -> DogIqaModel:
        """The model from its config and its two loaded parts; the MLLM's tokenizer, image processor and chat
        template are read from `config.mllm_name_or_path` (`mllm_files`: hub options, `trust_remote_code`)."""
        adapter_cls = adapter_class_for(mllm.config.model_type, config.backbone)
        path, revision = config.mllm_name_or_path, config.mllm_revision
        tokenizer = adapter_cls.load_tokenizer(path, revision=revision, **mllm_files)
        image_processor = adapter_cls.load_image_processor(
            path, revision=revision, **config.mllm_image_processor_kwargs
        )
        chat_template = load_chat_template(path, tokenizer, revision=revision)
        return cls(config, segmenter.eval(), mllm.eval(), tokenizer, image_processor, chat_template).eval()

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, config=None, segmenter=None, mllm=None, **kwargs
    ):
        """Overridden because Dog-IQA composes two separately hosted models: its repo holds config and code only.
        Loads the config from `pretrained_model_name_or_path`, the segmenter and the MLLM from the repos it names
        (unless `segmenter=` / `mllm=` are given), then calls `from_parts`. Options (see `split_loader_options`):
        hub options go to every repo, `revision` to the Dog-IQA repo (the parts use the config's revisions);
        `dtype` and `device_map` to both parts (`segmenter_dtype` overrides for SAM2); `attn_implementation`,
        `quantization_config` (or `load_in_8bit` / `load_in_4bit`), `max_memory`, `trust_remote_code` to the MLLM;
        names of config fields update the config; anything else is ignored with a warning."""
        options = split_loader_options(kwargs)
        if config is None:
            config = DogIqaConfig.from_pretrained(pretrained_model_name_or_path, **options["repo"])
        unknown = sorted(k for k in options["config"] if not hasattr(config, k))
        if unknown:  # loader options of a single checkpoint (variant, ...) do not apply here
            logger.warning(f"DogIqaModel.from_pretrained: ignoring keyword arguments {unknown}")
        for key, value in options["config"].items():
            if key not in unknown:
                setattr(config, key, value)
        config.validate_dog_iqa()
        if segmenter is None:
            segmenter = load_segmenter(config, **options["segmenter"])
        released = mllm is None and options["mllm"].get("dtype") in (None, "auto")
        if mllm is None:
            mllm = load_mllm(config, **options["mllm"])
        model = cls.from_parts(config, segmenter, mllm, **options["mllm_files"])
        if released and options["mllm"].get("quantization_config") is None:
            model.released_mllm_dtype = type(model.backbone).released_gpu_dtype
        return model

    def to(self, *args, **kwargs):
        """`nn.Module.to`, keeping an MLLM that was loaded without a dtype in its released precision for the device
        it goes to: float16 on GPU for mPLUG-Owl3, as the released `eval.py` ran it (cast before the move, so the
        GPU never holds a float32 copy), float32 on CPU. A dtype given here or at loading is left alone."""
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if self.released_mllm_dtype is not None and dtype is None and device is not None and self.mllm is not None:
            wanted = torch.float32 if device.type == "cpu" else self.released_mllm_dtype
            if self.mllm.dtype != wanted:
                self.mllm.to(wanted)
        return super().to(*args, **kwargs)

    def cuda(self, device=None):
        """`to("cuda")`, so that the MLLM takes its released precision there too."""
        return self.to(torch.device("cuda", device) if isinstance(device, int) else device or "cuda")

    def save_pretrained(self, save_directory, is_main_process: bool = True, push_to_hub: bool = False, **kwargs):
        """Write config + code only: the sub-models live in their own repos (`segmenter_name_or_path`,
        `mllm_name_or_path`)."""
        import os

        from transformers.dynamic_module_utils import custom_object_save

        if not is_main_process:
            return
        os.makedirs(save_directory, exist_ok=True)
        if self._auto_class is not None:
            custom_object_save(self, save_directory, config=self.config)
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(save_directory)
        if push_to_hub:
            raise ValueError("DogIqaModel.save_pretrained: use push_to_hub() to upload")

    # ---- segmentation ----------------------------------------------------------------------------------------
    def make_cache(self) -> DogIqaCache:
        """A new, empty cache for this model (of `config.cache_size` segmentations) to pass to several calls."""
        return DogIqaCache(self, self.config.cache_size)

    def _segmentation_key(self, image: np.ndarray) -> str:
        cfg = self.config
        settings = [
            cfg.segmenter_name_or_path, cfg.segmenter_revision, cfg.points_per_side, cfg.pred_iou_thresh,
            cfg.stability_score_thresh, cfg.stability_score_offset, cfg.mask_threshold, cfg.box_nms_thresh,
            cfg.segmenter_image_size, cfg.segmenter_resize, cfg.segmenter_image_mean, cfg.segmenter_image_std,
            cfg.min_region_area, cfg.add_leftover, cfg.leftover_area,
        ]  # fmt: skip
        return _fingerprint(image) + json.dumps(settings)

    def segment(self, images: list[np.ndarray], cache: DogIqaCache | None = None) -> list[Regions]:
        """Regions of each (H, W, 3) uint8 image; taken from / stored in `cache` by pixel content and settings."""
        if self.segmenter is None:
            raise ValueError("DogIqaModel: no segmenter loaded")
        stored = (cache or self.make_cache()).check(self).segmentations
        keys = [self._segmentation_key(img) for img in images]
        results = {i: stored.get_item(key) for i, key in enumerate(keys)}
        missing = [i for i, regions in results.items() if regions is None]
        if missing:
            generator = Sam2PointGridMaskGenerator(self.segmenter, self.config)
            for i, masks in zip(missing, generator([images[i] for i in missing])):
                height, width = images[i].shape[:2]
                results[i] = build_regions(
                    masks["masks"].numpy(), masks["areas"].numpy(), height, width, self.config.min_region_area,
                    self.config.add_leftover, self.config.leftover_area,
                )  # fmt: skip
                stored.put(keys[i], results[i])
        return [results[i] for i in range(len(images))]

    # ---- scoring views ---------------------------------------------------------------------------------------
    def score_views(
        self, views: list[np.ndarray], cache: DogIqaCache | None = None, region: bool = False
    ) -> list[dict]:
        """Level probabilities (K,) and the greedy next-token text of each view. Identical views are scored once
        (`dedup_views`) and their records kept in `cache`; views go through the MLLM in batches of
        `view_batch_size`, smallest first, on top of the prompt prefix's KV cache (computed once per `cache`) when
        `reuse_prefix_cache`. `region`: use the region views' prompt (the key holds the prompt, so a crop equal to
        the whole image is scored again with it, as in the released code)."""
        if self.backbone is None:
            raise ValueError("DogIqaModel: no MLLM loaded")
        cache = (cache or self.make_cache()).check(self)
        cfg = self.config
        backbone = self.region_backbone if region else self.backbone
        prompt_key = _fingerprint(np.array(backbone.prefix_ids + [-1] + backbone.suffix_ids))
        if cfg.dedup_views:
            keys = [_fingerprint(v) + prompt_key for v in views]
        else:
            keys = [str(i) for i in range(len(views))]
        records: dict[str, dict] = {}
        todo: dict[str, np.ndarray] = {}
        for key, view in zip(keys, views):
            cached = cache.views.get_item(key) if cfg.dedup_views else None
            if cached is not None:
                records[key] = cached
            elif key not in todo:
                todo[key] = view
        order = sorted(todo, key=lambda k: todo[k].shape[0] * todo[k].shape[1])
        prefix = None
        if order and cfg.reuse_prefix_cache and backbone.supports_prefix_cache:
            prefix_key = f"{prompt_key} {backbone.device} {self.mllm.dtype}"
            if prefix_key not in cache.prefixes:
                cache.prefixes[prefix_key] = backbone.prefix_cache()
            prefix = cache.prefixes[prefix_key]
        for start in range(0, len(order), cfg.view_batch_size):
            batch_keys = order[start : start + cfg.view_batch_size]
            logits = backbone.next_token_logits([to_pil(todo[k]) for k in batch_keys], prefix_cache=prefix)
            level_probs = logits[:, backbone.score_token_ids].double().softmax(-1).cpu()
            greedy = logits.argmax(-1).cpu()
            for row, key in enumerate(batch_keys):
                record = {"level_probs": level_probs[row], "greedy_text": backbone.decode_token(greedy[row])}
                records[key] = record
                if cfg.dedup_views:
                    cache.views.put(key, record)
        return [records[k] for k in keys]

    def view_score(self, record: dict, score_mode: str) -> float:
        """`expected`: sum_k k p_k over the K digit tokens; `generate`: the greedy token parsed as an integer as the
        released code does (`int(text)`, anything unparsable -> `unparsable_score`)."""
        if score_mode == "expected":
            levels = torch.arange(1, record["level_probs"].numel() + 1, dtype=torch.float64)
            return float((record["level_probs"] * levels).sum())
        try:
            return float(int(record["greedy_text"]))
        except ValueError:
            return self.config.unparsable_score

    # ---- forward ---------------------------------------------------------------------------------------------
    def _images_from_inputs(self, pixel_values, images) -> list[np.ndarray]:
        source = pixel_values if pixel_values is not None else images
        if source is None:
            raise ValueError("DogIqaModel: pass `pixel_values` (from DogIqaImageProcessor) or `images`")
        if isinstance(source, torch.Tensor) and source.ndim == 4:
            source = list(source)
        if isinstance(source, np.ndarray) and source.ndim == 4:
            source = list(source)
        if not isinstance(source, (list, tuple)):
            source = [source]
        return [_as_uint8_rgb(img, f"pixel_values[{i}]") for i, img in enumerate(source)]

    def forward(
        self,
        pixel_values=None,
        images=None,
        aggregation: str | None = None,
        score_mode: str | None = None,
        return_dict: bool = True,
        cache: DogIqaCache | None = None,
        **kwargs,
    ) -> DogIqaOutput | tuple:
        """Score images (a list of uint8 (3, H, W) tensors from `DogIqaImageProcessor`, or PIL / arrays).
        `aggregation` and `score_mode` override the config for this call; `cache` (from `make_cache()`) keeps
        segmentations, view scores and the prompt prefix across calls (views found there are not rescored)."""
        cfg = self.config
        aggregation = aggregation or cfg.aggregation
        score_mode = score_mode or cfg.score_mode
        if score_mode not in ("expected", "generate"):
            raise ValueError(f"score_mode={score_mode!r} is not one of expected, generate")
        cache = (cache or self.make_cache()).check(self)
        images_np = self._images_from_inputs(pixel_values, images)
        all_regions = self.segment(images_np, cache)

        views, owners = [], []
        for index, (image, regions) in enumerate(zip(images_np, all_regions)):
            views.append(image)
            owners.append((index, -1))
            for r in range(len(regions.areas)):
                views.append(crop_region(image, regions, r, cfg.crop_mode))
                owners.append((index, r))
        is_region = [r >= 0 for _, r in owners]
        global_records = iter(self.score_views([v for v, g in zip(views, is_region) if not g], cache))
        region_records = iter(self.score_views([v for v, g in zip(views, is_region) if g], cache, region=True))
        records = [next(region_records) if g else next(global_records) for g in is_region]

        batch = len(images_np)
        max_regions = max(len(r.areas) for r in all_regions)
        levels = cfg.num_levels
        global_score = torch.zeros(batch)
        global_probs = torch.zeros(batch, levels)
        region_scores = torch.full((batch, max_regions), float("nan"))
        region_probs = torch.full((batch, max_regions, levels), float("nan"))
        region_boxes = torch.full((batch, max_regions, 4), -1, dtype=torch.long)
        region_areas = torch.zeros(batch, max_regions)
        region_leftover = torch.zeros(batch, max_regions, dtype=torch.bool)
        num_regions = torch.tensor([len(r.areas) for r in all_regions], dtype=torch.long)
        for (index, r), record in zip(owners, records):
            value = self.view_score(record, score_mode)
            if r < 0:
                global_score[index] = value
                global_probs[index] = record["level_probs"].float()
            else:
                region_scores[index, r] = value
                region_probs[index, r] = record["level_probs"].float()
        for index, regions in enumerate(all_regions):
            count = len(regions.areas)
            region_boxes[index, :count] = torch.from_numpy(regions.boxes)
            region_areas[index, :count] = torch.from_numpy(regions.areas).float()
            region_leftover[index, :count] = torch.from_numpy(regions.is_leftover)
        local = aggregate_scores(global_score, region_scores, region_areas, num_regions, "local")
        scores = aggregate_scores(
            global_score, region_scores, region_areas, num_regions, aggregation, cfg.seg_lambda, cfg.global_weight
        )
        output = DogIqaOutput(
            scores=scores,
            global_score=global_score,
            local_score=local,
            level_probs=global_probs,
            num_regions=num_regions,
            region_boxes=region_boxes,
            region_areas=region_areas,
            region_scores=region_scores,
            region_level_probs=region_probs,
            region_is_leftover=region_leftover,
        )
        return output if return_dict else output.to_tuple()

    # ---- visualisation ---------------------------------------------------------------------------------------
    def render_regions(
        self, image, output: DogIqaOutput | None = None, index: int = 0, cache: DogIqaCache | None = None
    ) -> Image.Image:
        """A picture of the image with its regions coloured by their scores (red = level 1 ... green = level K),
        boxes and scores written on it. Uses `output` (row `index`) when given, else scores the image; the masks
        come from `cache` (pass the one `output` was computed with), else SAM2 runs again (never the MLLM)."""
        array = _as_uint8_rgb(image, "image")
        cache = (cache or self.make_cache()).check(self)
        if output is None:
            output, index = self(images=[array], cache=cache), 0
        regions = self.segment([array], cache)[0]
        count = int(output.num_regions[index])
        if count != len(regions.areas):
            raise ValueError("render_regions: `output` does not belong to this image (region counts differ)")
        return draw_region_scores(
            array,
            regions.masks,
            output.region_boxes[index, :count].tolist(),
            output.region_scores[index, :count].tolist(),
            num_levels=self.config.num_levels,
            global_score=float(output.global_score[index]),
            final_score=float(output.scores[index]),
        )


def score_color(score: float, num_levels: int) -> tuple[int, int, int]:
    """Red (level 1) -> yellow -> green (level K)."""
    t = float(np.clip((score - 1) / max(num_levels - 1, 1), 0.0, 1.0))
    return (int(255 * min(1.0, 2 - 2 * t)), int(255 * min(1.0, 2 * t)), 40)


def draw_region_scores(
    image: np.ndarray,
    masks: np.ndarray,
    boxes: list,
    scores: list,
    num_levels: int = 7,
    global_score: float | None = None,
    final_score: float | None = None,
    alpha: float = 0.45,
) -> Image.Image:
    """Overlay each region (largest first, so small ones stay visible) in its score colour, outline its box and
    write its score; the global and final scores go in the top-left corner."""
    canvas = image.astype(np.float32)
    for r in sorted(range(len(scores)), key=lambda i: -int(masks[i].sum())):
        color = np.array(score_color(scores[r], num_levels), dtype=np.float32)
        canvas[masks[r]] = (1 - alpha) * canvas[masks[r]] + alpha * color
    picture = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    for box, score in zip(boxes, scores):
        x0, y0, x1, y1 = (int(v) for v in box)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=score_color(score, num_levels), width=2)
        draw.text((x0 + 3, y0 + 2), f"{score:.2f}", fill=(255, 255, 255))
    if global_score is not None:
        label = f"global {global_score:.2f}" + (f"  score {final_score:.2f}" if final_score is not None else "")
        draw.rectangle([0, 0, 8 + 6 * len(label), 14], fill=(0, 0, 0))
        draw.text((3, 2), label, fill=(255, 255, 255))
    return picture


__all__ = [
    "DogIqaCache",
    "DogIqaModel",
    "DogIqaOutput",
    "DogIqaPreTrainedModel",
    "aggregate_scores",
    "draw_region_scores",
]
