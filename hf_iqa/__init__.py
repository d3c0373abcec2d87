"""hf_iqa: blind image quality assessment models (LIQE, QualiCLIP, UniQA, Dog-IQA) as native transformers models.

`import hf_iqa` is light (no torch, no transformers): the names below are imported on first use, and every model
is registered with transformers' Auto classes and the `image-quality` pipeline task the first time they are used
(`from transformers import AutoModel`, `transformers.pipeline`, `hf_iqa.load`, ...). See `hf_iqa._registration`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING

from . import _registration

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access (PEP 562)
_LAZY = {
    "ImageLoadError": "hf_iqa.io",
    "load_image": "hf_iqa.io",
    "ImageQualityPipeline": "hf_iqa.pipelines",
    "pipeline": "hf_iqa.pipelines",
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
    from .pipelines import ImageQualityPipeline, pipeline
    from .quality_metric import QualityMetric
    from .zoo import ModelNotAvailableError, list_models, load, resolve


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'hf_iqa' has no attribute {name!r}")
    if name == "pipeline" and not _torch_installed():  # ONNX exports only (hf_iqa.onnx); not cached
        return importlib.import_module("hf_iqa.onnx").pipeline
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def _torch_installed() -> bool:
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


_registration.install()
