"""Scoring an exported folder with onnxruntime: no torch needed (numpy, Pillow, transformers, onnxruntime).

`OnnxScorer` is what the engine's loop drives (`prepare` in loader threads: decode + preprocess; `predict`: one
onnxruntime call per batch, or per same-size group for native-resolution models). `OnnxImageQualityPipeline` is
the callable users get from `hf_iqa.pipeline(model=EXPORTED_DIR)`: same inputs and result dicts as the PyTorch
`ImageQualityPipeline`, built by the same `describe` rules (`hf_iqa.pipelines.describe_output`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .processors import load_image_processor

MARKER = "onnx_config.json"  # written by the exporter next to model.onnx; its presence makes a folder an export
FORMAT = "hf_iqa-onnx"


def is_onnx_folder(path: str | os.PathLike | Any) -> bool:
    """True for a local folder written by `hf-iqa export onnx` (model.onnx + onnx_config.json)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    folder = Path(path)
    try:
        return (folder / "model.onnx").is_file() and json.loads((folder / MARKER).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def describe(outputs: dict[str, np.ndarray], index: int, output_labels: dict[str, list[str]]) -> dict[str, Any]:
    """One image's result dict, by the rules of `hf_iqa.pipelines.describe_output` (numpy instead of torch)."""
    result: dict[str, Any] = {"score": float(outputs["scores"][index])}
    for field, labels in output_labels.items():
        value = outputs.get(field)
        if value is None:
            continue
        probs = [float(p) for p in np.asarray(value[index], dtype=np.float32).reshape(-1)]
        if len(probs) != len(labels):
            continue
        result[field] = dict(zip(labels, probs))
        if field.endswith("_probs") and abs(sum(probs) - 1.0) < 1e-3:
            result[field[: -len("_probs")]] = labels[int(np.argmax(probs))]
    for field, value in outputs.items():
        if field != "scores" and field not in output_labels and value.ndim == 1:
            result[field] = float(value[index])
    return result


class OnnxScorer:
    """`prepare(item_or_image)` -> model inputs of one image (numpy); `predict(prepared)` -> one dict per image."""

    def __init__(self, folder: str | os.PathLike, *, processor_kwargs: dict | None = None, providers=None,
                 threads: int | None = None, max_pixels: int | None = None):  # fmt: skip
        import onnxruntime

        self.folder = Path(folder)
        self.max_pixels = max_pixels
        self.spec = json.loads((self.folder / MARKER).read_text())
        self.config = json.loads((self.folder / "config.json").read_text())
        self.output_labels = self.spec.get("output_labels") or {}  # a class attribute of the config: not saved
        self.image_processor = load_image_processor(self.folder, self.spec["family"], **(processor_kwargs or {}))
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(self.folder / self.spec.get("model_file", "model.onnx")),
            options,
            providers=providers or ["CPUExecutionProvider"],
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def preprocess(self, image: Any) -> dict[str, np.ndarray]:
        """One RGB PIL image -> its model inputs, each with a leading batch axis of 1."""
        features = self.image_processor(images=[image], return_tensors=None)
        prepared = {}
        for name in self.inputs:
            value = features[name]
            if isinstance(value, (list, tuple)):
                value = np.stack([np.asarray(v) for v in value])
            value = np.asarray(value)
            prepared[name] = value.astype(np.float32 if name == "pixel_values" else np.int64, copy=False)
        return prepared

    def prepare(self, image: Any, exif_transpose: bool = True) -> dict[str, np.ndarray]:
        """Anything `hf_iqa.io.load_image` takes (a path, PIL image or array) -> model inputs. The scoring engine
        decodes its inputs itself (`hf_iqa.scoring.ImageScorer`) and calls `preprocess`."""
        from hf_iqa.io import load_image

        return self.preprocess(load_image(image, max_pixels=self.max_pixels, exif_transpose=exif_transpose))

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, batch)))

    def predict(self, prepared: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Images whose inputs have the same shapes run together (native-resolution models: per size)."""
        results: list[dict[str, Any] | None] = [None] * len(prepared)
        groups: dict[tuple, list[int]] = {}
        for index, inputs in enumerate(prepared):
            groups.setdefault(tuple(inputs[name].shape for name in self.inputs), []).append(index)
        for indices in groups.values():
            batch = {name: np.concatenate([prepared[i][name] for i in indices]) for name in self.inputs}
            outputs = self.run(batch)
            for position, index in enumerate(indices):
                results[index] = describe(outputs, position, self.output_labels)
        return results


class OnnxImageQualityPipeline:
    """`pipe(image)` -> `{"score": ..., extras}`; `pipe([images])` -> a list. Images: paths, PIL images, arrays.
    `exif_transpose=False` (here or per call) scores files as stored, not turned by their EXIF orientation."""

    def __init__(self, folder: str | os.PathLike, *, batch_size: int = 8, processor_kwargs: dict | None = None,
                 providers=None, threads: int | None = None, exif_transpose: bool = True):  # fmt: skip
        self.scorer = OnnxScorer(folder, processor_kwargs=processor_kwargs, providers=providers, threads=threads)
        self.batch_size = batch_size
        self.exif_transpose = exif_transpose
        self.config = self.scorer.config

    def __call__(
        self, images: Any, batch_size: int | None = None, exif_transpose: bool | None = None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        turn = self.exif_transpose if exif_transpose is None else exif_transpose
        single = not isinstance(images, Iterable) or isinstance(images, (str, bytes, os.PathLike, np.ndarray))
        if single or hasattr(images, "size") and hasattr(images, "mode"):  # one path / array / PIL image
            return self.scorer.predict([self.scorer.prepare(images, turn)])[0]
        size = batch_size or self.batch_size
        results, chunk = [], []
        for image in images:
            chunk.append(self.scorer.prepare(image, turn))
            if len(chunk) == size:
                results.extend(self.scorer.predict(chunk))
                chunk = []
        if chunk:
            results.extend(self.scorer.predict(chunk))
        return results


def pipeline(task: str = "image-quality", model: Any = None, processor_kwargs: dict | None = None,
             **kwargs: Any) -> OnnxImageQualityPipeline:  # fmt: skip
    """`hf_iqa.pipeline` for an exported folder (what it resolves to when torch is not installed)."""
    if task != "image-quality":
        raise ValueError(f"hf_iqa.pipeline only builds the 'image-quality' task, got {task!r}")
    if not is_onnx_folder(model):
        raise ValueError(f"{model!r} is not an ONNX export (hf-iqa export onnx); other models need torch installed")
    unknown = set(kwargs) - {"batch_size", "providers", "threads", "exif_transpose"}
    if unknown:
        raise ValueError(f"not an option of the ONNX pipeline: {', '.join(sorted(unknown))}")
    return OnnxImageQualityPipeline(model, processor_kwargs=processor_kwargs, **kwargs)
