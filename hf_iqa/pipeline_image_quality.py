"""The `image-quality` pipeline: an hf_iqa model (or any model honouring the output contract in `hf_iqa.models`)
-> one `{"score": float, ...}` dict per image.

This file is flat remote code, like a model folder's files: it imports only torch, numpy, PIL and transformers,
because `save_pretrained` copies it next to every saved hf_iqa model and `config.json` names it under
`custom_pipelines`. A user without hf_iqa then gets the same pipeline with
`transformers.pipeline("image-quality", model=folder_or_repo, trust_remote_code=True)`. The package imports this
very module (`hf_iqa.pipelines`), so there is one pipeline, not two. Images are read by `io.py`, the package's one
loading path (`hf_iqa.io`, which imports only numpy and PIL): saved folders carry it beside this file, so the
remote pipeline has the same limits and error messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .io import load_image  # hf_iqa/io.py, itself flat: saved next to this file

TASK = "image-quality"
# What `config.json` carries under `custom_pipelines` (the "pt" names are resolved with getattr(transformers, name)).
CUSTOM_PIPELINES = {
    TASK: {"impl": f"{__name__.rsplit('.', 1)[-1]}.ImageQualityPipeline", "pt": ["AutoModel"], "type": "image"}
}


def _as_list(value: torch.Tensor) -> list[float]:
    return value.detach().float().cpu().reshape(-1).tolist()


def _python(value: torch.Tensor) -> Any:
    value = value.detach().cpu()
    return value.float().tolist() if value.is_floating_point() else value.tolist()


def describe_output(outputs: Any, index: int, config: Any) -> dict[str, Any]:
    """One image's result as a plain dict, following the output contract in `hf_iqa.models`: `score`; for every
    field in `config.output_labels` a `{label: probability}` dict and the most probable label (`scene_probs` ->
    `scene`); every other one-value-per-image field as a number; `region_*` fields as lists of `num_regions`."""
    result: dict[str, Any] = {"score": float(outputs["scores"][index].float())}
    labelled = getattr(config, "output_labels", None) or {}
    for field, labels in labelled.items():
        value = outputs.get(field)
        if value is None:
            continue
        probs = _as_list(value[index])
        if len(probs) != len(labels):
            continue
        result[field] = dict(zip(labels, probs))
        if field.endswith("_probs") and abs(sum(probs) - 1.0) < 1e-3:  # a distribution, not independent pairs
            result[field[: -len("_probs")]] = labels[int(np.argmax(probs))]
    num_regions = outputs.get("num_regions")
    for field, value in outputs.items():
        if field == "scores" or field in labelled or not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        if value.dim() == 1:
            result[field] = _python(value[index])
        elif field.startswith("region_") and num_regions is not None:
            result[field] = _python(value[index][: int(num_regions[index])])
    return result


class ImageQualityPipeline(Pipeline):
    """Score images with an hf_iqa model.

    Inputs: a path, a PIL image, a numpy array (HxWx3 uint8 or float in [0, 1]), or a list / generator of them.
    Output: `{"score": float, ...extras}` per image (a list for list inputs). Scores follow `model.config.score_range`
    and higher is better. `return_visualization=True` adds a PIL picture for models that can draw one (Dog-IQA's
    region map). `exif_transpose=False` (at `pipeline(...)` or per call) scores files and PIL images as stored,
    without turning them by their EXIF orientation tag (the default turns them, as a photo viewer shows them).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False  # otherwise pipeline() probes AutoVideoProcessor -> a remote-code prompt

    load_image = staticmethod(load_image)  # every input -> RGB PIL image, or an error naming the file

    def _sanitize_parameters(
        self, return_visualization: bool | None = None, exif_transpose: bool | None = None, **kwargs
    ):
        forward = {} if return_visualization is None else {"return_visualization": return_visualization}
        preprocess = {} if exif_transpose is None else {"exif_transpose": bool(exif_transpose)}
        return preprocess, forward, {}

    def preprocess(self, image: Any, exif_transpose: bool = True) -> dict[str, Any]:
        image = self.load_image(image, exif_transpose=exif_transpose)
        inputs = self.image_processor(images=image, return_tensors="pt")
        model_inputs = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value = value.to(self.dtype)
            elif isinstance(value, list):  # native-resolution processors: keep ragged lists as lists
                value = [
                    v.to(self.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in value
                ]
            model_inputs[key] = value
        return model_inputs

    def _forward(self, model_inputs: dict[str, Any], return_visualization: bool = False) -> dict[str, Any]:
        flat = {}
        for key, value in model_inputs.items():
            if isinstance(value, list) and value and isinstance(value[0], list):
                value = [item for sub in value for item in sub]  # batched ragged lists -> one flat list
            flat[key] = value
        reuse = self._reuse_kwargs()
        outputs = self.model(**flat, **reuse)
        result = {key: value for key, value in outputs.items() if isinstance(value, torch.Tensor)}
        if return_visualization:
            if not hasattr(self.model, "render_regions"):
                raise ValueError(f"{type(self.model).__name__} has no region visualization (return_visualization)")
            pixels = flat["pixel_values"]
            result["visualization"] = [self.model.render_regions(pixels[i], outputs, index=i, **reuse)
                                       for i in range(len(pixels))]  # fmt: skip
        return result

    def _reuse_kwargs(self) -> dict[str, Any]:
        """`cache=` for models that can reuse work between calls (output contract, point 7): one cache per
        pipeline, so all batches of its runs share it (Dog-IQA: the prompt prefix is encoded once)."""
        if not hasattr(self.model, "make_cache"):
            return {}
        if getattr(self, "_model_cache", None) is None:
            self._model_cache = self.model.make_cache()
        return {"cache": self._model_cache}

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        result = describe_output(model_outputs, 0, self.model.config)
        if "visualization" in model_outputs:
            visualization = model_outputs["visualization"]
            result["visualization"] = visualization[0] if isinstance(visualization, list) else visualization
        return result
