"""The image processor of an exported folder, loaded without torch when torch is absent.

An exported folder's `preprocessor_config.json` names the processor class (`image_processor_type`). The class is
hf_iqa's own, from `hf_iqa/models/<family>/image_processing_<family>.py`; the file is executed on its own (not
through the model folder's `__init__`, which imports the modeling file and so torch). Those files import torch at
module level for two things only: `return_tensors="pt"` (never asked for here) and UniQA's seeded crop positions,
which `_torch_shim` reproduces. With torch installed the real module is imported as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
# transformers modules the processor files import; loaded before the shim is bound (they must see the real state)
_TRANSFORMERS_MODULES = (
    "transformers.feature_extraction_utils",
    "transformers.image_processing_backends",
    "transformers.image_processing_utils",
    "transformers.image_utils",
    "transformers.processing_utils",
    "transformers.utils",
)


def torch_available() -> bool:
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None


def processor_class(family: str, class_name: str) -> type:
    """The image-processor class `class_name` of model folder `family` (e.g. "liqe", "LiqeImageProcessor")."""
    if not family.isidentifier():
        raise ValueError(f"not a model family name: {family!r}")
    module_name = f"hf_iqa.models.{family}.image_processing_{family}"
    if torch_available():
        return getattr(importlib.import_module(module_name), class_name)
    return getattr(_load_without_torch(family, module_name), class_name)


def _load_without_torch(family: str, module_name: str) -> ModuleType:
    private = f"hf_iqa.onnx._processors.{family}"
    if private in sys.modules:
        return sys.modules[private]
    path = MODELS_DIR / family / f"image_processing_{family}.py"
    if not path.is_file():
        raise ValueError(f"hf_iqa has no image processor for model family {family!r}")
    for name in _TRANSFORMERS_MODULES:
        importlib.import_module(name)
    from . import _torch_shim

    spec = importlib.util.spec_from_file_location(private, path)
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("torch", _MISSING)
    sys.modules["torch"] = _torch_shim  # only while the file's own `import torch` line runs
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is _MISSING:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = saved
    sys.modules[private] = module
    return module


_MISSING = object()


def load_image_processor(folder: Path, family: str, **overrides: Any) -> Any:
    """The folder's image processor, with `overrides` (e.g. `protocol="pyiqa"`) applied like `from_pretrained`."""
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    cls = processor_class(family, settings["image_processor_type"])
    return cls.from_pretrained(str(folder), **overrides)
