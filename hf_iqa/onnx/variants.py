"""int8 and fp16 variants of an exported fp32 graph, with their measured score drift and a refusal bound.

- int8: `onnxruntime.quantization.quantize_dynamic` (weights int8 per channel, activations quantised at run time;
  MatMul/Gemm/Conv... as onnxruntime chooses), QUInt8 weights.
- fp16: `onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)`: weights and compute in fp16,
  inputs and outputs stay fp32, so the folder is used exactly like the fp32 one.

Drift: the variant's and the fp32 graph's scores on `degraded_images()` (3 photos x 5 distortions x 3 levels, plus
the photos), as max |Δ| (in score units) and SRCC between the two. `DRIFT_BOUNDS` are the defaults under which a
variant is saved; above them the export is refused (nothing written).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .runtime import OnnxScorer

# refusal bounds: SRCC against fp32 at least `min_srcc`, max |Δ| at most `max_abs` of the score range
DRIFT_BOUNDS = {"int8": {"min_srcc": 0.99, "max_abs": 0.05}, "fp16": {"min_srcc": 0.999, "max_abs": 0.01}}


def _scores(scorer: OnnxScorer, prepared: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.array([result["score"] for result in scorer.predict(prepared)])


def convert(source: Path, target: Path, precision: str) -> None:
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8, per_channel=True)
    elif precision == "fp16":
        import onnx
        from onnxconverter_common.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))
    else:
        raise ValueError(f"unknown precision {precision!r}")


def make_variant(
    folder: Path,
    precision: str,
    images: list | None = None,
    bounds: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Replace `folder/model.onnx` by its `precision` variant after measuring the drift; raise when out of bounds."""
    from .export import ExportError, drift
    from .images import degraded_images

    images = degraded_images() if images is None else images
    bounds = {**DRIFT_BOUNDS[precision], **(bounds or {})}
    fp32 = OnnxScorer(folder)
    prepared = [fp32.preprocess(image) for image in images]
    reference = _scores(fp32, prepared)
    converted = folder / f"model.{precision}.onnx"
    log(f"making the {precision} variant ...")
    convert(folder / "model.onnx", converted, precision)
    shutil.move(folder / "model.onnx", folder / "model.fp32.onnx")
    shutil.move(converted, folder / "model.onnx")
    variant = _scores(OnnxScorer(folder), prepared)
    (folder / "model.fp32.onnx").unlink()
    low, high = fp32.spec.get("score_range") or (float(reference.min()), float(reference.max()))
    measured = drift(reference, variant)
    measured.update(precision=precision, images=len(images), score_range=[low, high], bounds=bounds)
    log(f"{precision} drift vs fp32 on {len(images)} degraded images: max |Δ| {measured['max_abs_difference']:.4f}, "
        f"SRCC {measured['srcc']:.4f} (bounds: SRCC >= {bounds['min_srcc']}, "
        f"max |Δ| <= {bounds['max_abs']} x range)")  # fmt: skip
    srcc_ok = bool(measured["srcc"] >= bounds["min_srcc"])  # False for NaN (constant scores)
    if not srcc_ok or measured["max_abs_difference"] > bounds["max_abs"] * (high - low):
        raise ExportError(f"the {precision} variant drifts beyond the bound ({measured}); nothing saved")
    return measured
