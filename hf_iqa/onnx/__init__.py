"""ONNX export (needs torch) and onnxruntime scoring (does not): see `export.py` and `runtime.py`.

    hf-iqa export onnx --model liqe --output-dir liqe-onnx          # with torch, onnx, onnxscript, onnxruntime
    hf_iqa.pipeline(model="liqe-onnx")("photo.jpg")                 # onnxruntime only; an OnnxImageQualityPipeline

Importing this package imports neither torch nor onnxruntime; `export_onnx` imports torch on first use.
"""

from __future__ import annotations

from typing import Any

from .runtime import OnnxImageQualityPipeline, OnnxScorer, describe, is_onnx_folder, pipeline

__all__ = ["OnnxImageQualityPipeline", "OnnxScorer", "describe", "export_onnx", "is_onnx_folder", "pipeline"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from .export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'hf_iqa.onnx' has no attribute {name!r}")
