"""hf_iqa model folders and their registration with the transformers Auto classes.

Each sub-folder is one model and one Hub unit: its `configuration_*.py`, `modeling_*.py` and
`image_processing_*.py` import only torch, numpy, PIL, transformers and files of the same folder, because
`save_pretrained` copies exactly those files into a Hub repo for users who do not have hf_iqa installed.

The output contract (what the pipeline, CLI, benchmark and training rely on; nothing else)
-------------------------------------------------------------------------------------------
1. `model(**image_processor(images, return_tensors="pt"))` returns a `transformers.utils.ModelOutput` whose
   first field is `scores`: a float tensor of shape `(batch,)`, **higher is better**.
2. Every other tensor field has the batch on dim 0 (model-specific extras such as `level_probs`).
3. The config carries `score_range` (two floats, the native range) and `higher_is_better` (always True).
4. The config carries `output_labels`: a dict mapping an output field holding `(batch, K)` probabilities to its K
   label names. The pipeline turns each such field into `{label: probability}` and, when the probabilities form
   one distribution, adds the most probable label under the field name without its `_probs` suffix
   (`scene_probs` -> `scene`).
5. Any other field with one value per image (shape `(batch,)`, e.g. `global_score`) is returned by the pipeline
   as a number. Models that score regions name their per-region fields `region_*` (shape `(batch, R, ...)`,
   padded) and give `num_regions` (batch,); the pipeline cuts each `region_*` list to `num_regions` entries.
6. The image processor returns either a fixed-shape `pixel_values` tensor (batchable as is) or, for
   native-resolution models, a list of per-image tensors; the pipeline keeps lists as lists and the model
   accepts them.
7. Work a model can reuse across calls (Dog-IQA: segmentations, view scores, the prompt prefix's KV cache) lives
   in a cache the caller owns, not on the model: such a model has `make_cache()` and takes `cache=` in `forward`;
   the pipeline makes one per pipeline object and passes it to every call.

Registration
------------
A model folder's `__init__.py` exposes `AUTO_CLASSES = {"config": ..., "model": ..., "image_processor": ...}`
(and optionally "processor"). `register_all()` finds every folder and registers it, so adding a model needs no
change here. A folder that is not an IQA model (the mPLUG-Owl3 MLLM) may instead expose `register_auto_classes()`.
Importing this package registers everything (`hf_iqa._registration` explains when that happens).
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

_REGISTERED: dict[str, dict] = {}


def register_all() -> dict[str, dict]:
    """Register every model folder with AutoConfig/AutoModel/AutoImageProcessor (idempotent)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg or info.name in _REGISTERED:
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as error:  # one broken or incomplete model folder must not disable the others
            warnings.warn(
                f"hf_iqa: model folder {info.name!r} could not be imported and is not registered: "
                f"{type(error).__name__}: {error}",
                stacklevel=2,
            )
            continue
        classes = getattr(module, "AUTO_CLASSES", None)
        if classes is None:
            if hasattr(module, "register_auto_classes"):
                module.register_auto_classes()  # idempotent; not an IQA model, so not in registered_models()
            continue
        config_cls = classes["config"]
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModel.register(config_cls, classes["model"], exist_ok=True)
        config_cls.register_for_auto_class()
        classes["model"].register_for_auto_class("AutoModel")
        if classes.get("image_processor") is not None:
            AutoImageProcessor.register(
                config_cls, image_processor_classes={"pil": classes["image_processor"]}, exist_ok=True
            )
            classes["image_processor"].register_for_auto_class("AutoImageProcessor")
        if classes.get("processor") is not None:
            AutoProcessor.register(config_cls, classes["processor"], exist_ok=True)
            classes["processor"].register_for_auto_class("AutoProcessor")
        _REGISTERED[info.name] = classes
    return dict(_REGISTERED)


def registered_models() -> dict[str, dict]:
    """Folder name -> its AUTO_CLASSES, for every registered model."""
    return dict(_REGISTERED)


register_all()
