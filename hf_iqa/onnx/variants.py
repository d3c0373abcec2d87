"""int8 and fp16 variants of an exported fp32 graph, with their measured score drift and a refusal bound.

- int8: `onnxruntime.quantization.quantize_dynamic` (weights int8 per channel, activations quantised at run time;
  MatMul/Gemm/Conv... as onnxruntime chooses), QUInt8 weights.
- fp16: `onnxconverter_common.float16.convert_float_to_float16`: weights and compute in fp16; `fp32_io` then
  puts Cast nodes at the graph's inputs and outputs, so the folder is used exactly like the fp32 one (the
  converter's own `keep_io_types=True` leaves output casts of the wrong type on graphs from torch.onnx's dynamo).

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


def fp32_io(model: Any) -> Any:
    """Make an fp16 graph's fp16 inputs and outputs fp32, with a Cast after each input and before each output."""
    from onnx import TensorProto, helper

    graph = model.graph
    for node in graph.node:  # the model's own `.float()` casts: kept fp32 by the converter, typed fp16 after it
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16

    def rename(old: str, new: str) -> None:
        for node in graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]

    first, last = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            rename(value.name, value.name + "_fp16")
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            first.append(helper.make_node("Cast", [value.name], [value.name + "_fp16"], to=TensorProto.FLOAT16))
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            rename(value.name, value.name + "_fp16")
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            last.append(helper.make_node("Cast", [value.name + "_fp16"], [value.name], to=TensorProto.FLOAT))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(first + nodes + last)
    return model


def convert(source: Path, target: Path, precision: str) -> None:
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8, per_channel=True)
    elif precision == "fp16":
        import onnx
        from onnxconverter_common.float16 import convert_float_to_float16

        graph = onnx.load(str(source))
        del graph.graph.value_info[:]  # the exporter's fp32 annotations of intermediate values would contradict fp16
        onnx.save(fp32_io(convert_float_to_float16(graph, keep_io_types=False)), str(target))
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
    from .checks import ExportError, drift
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
