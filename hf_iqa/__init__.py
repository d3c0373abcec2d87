"""hf_iqa: blind image quality assessment models (LIQE, QualiCLIP, UniQA, Dog-IQA) as native transformers models.

`import hf_iqa` is light (no torch, no transformers): the names below are imported on first use, and every model
is registered with transformers' Auto classes and the `image-quality` pipeline task the first time they are used
(`from transformers import AutoModel`, `transformers.pipeline`, `hf_iqa.load`, ...). See `hf_iqa._registration`.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from . import _registration

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "ImageLoadError": "hf_iqa.io",
    "load_image": "hf_iqa.io",
    "ImageQualityPipeline": "hf_iqa.pipelines",
    "register_all": "hf_iqa.models",
    "registered_models": "hf_iqa.models",
    "ModelNotAvailableError": "hf_iqa.zoo",
    "list_models": "hf_iqa.zoo",
    "load": "hf_iqa.zoo",
    "resolve": "hf_iqa.zoo",
    "QualityMetric": "hf_iqa.quality_metric",
}

__all__ = [
    "ImageLoadError", "ImageQualityPipeline", "ModelNotAvailableError", "list_models", "load", "load_image",
    "pipeline", "QualityMetric", "register_all", "registered_models", "resolve",
]  # fmt: skip

if TYPE_CHECKING:
    from .io import ImageLoadError, load_image
    from .models import register_all, registered_models
    from .pipelines import ImageQualityPipeline
    from .quality_metric import QualityMetric
    from .zoo import ModelNotAvailableError, list_models, load, resolve


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'hf_iqa' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def pipeline(task: str = "image-quality", model: Any = None, processor_kwargs: dict | None = None, **kwargs: Any):
    """The image-quality pipeline for `model` (a zoo name, folder, Hub id or model instance): the PyTorch one
    (`hf_iqa.pipelines.pipeline`, see there for the options), or for an `hf-iqa export onnx` folder the onnxruntime
    one (`hf_iqa.onnx`), which needs no torch."""
    from .onnx.runtime import is_onnx_folder

    if isinstance(model, (str, os.PathLike)) and is_onnx_folder(model):
        from .onnx.runtime import pipeline as onnx_pipeline

        return onnx_pipeline(task, model, processor_kwargs, **kwargs)
    try:
        from .pipelines import pipeline as torch_pipeline
    except ImportError as error:  # an onnxruntime-only environment
        raise ImportError(f"{model!r} is not an ONNX export (hf-iqa export onnx): it needs torch ({error})") from None
    return torch_pipeline(task, model, processor_kwargs, **kwargs)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_registration.install()
