"""The `image-quality` pipeline: any hf_iqa model (or any model honouring the output contract in
`hf_iqa.models`) -> one `{"score": float, ...}` dict per image.

transformers has no IQA task, so this registers one. Package users call `hf_iqa.pipeline(model=...)` or
`transformers.pipeline("image-quality", model=...)` after `import hf_iqa`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel, Pipeline
from transformers import pipeline as transformers_pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .io import load_image

TASK = "image-quality"


def _as_list(value: Any) -> list[float]:
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
    and higher is better.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def _sanitize_parameters(self, return_visualization: bool | None = None, **kwargs):
        forward = {} if return_visualization is None else {"return_visualization": return_visualization}
        return {}, forward, {}

    def preprocess(self, image: Any) -> dict[str, Any]:
        image = load_image(image)
        inputs = self.image_processor(images=image, return_tensors="pt")
        model_inputs = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                value = value.to(self.dtype)
            elif isinstance(value, list):  # native-resolution processors: keep ragged lists as lists
                value = [v.to(self.dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for v in value]
            model_inputs[key] = value
        return model_inputs

    def _forward(self, model_inputs: dict[str, Any], return_visualization: bool = False) -> dict[str, Any]:
        flat = {}
        for key, value in model_inputs.items():
            if isinstance(value, list) and value and isinstance(value[0], list):
                value = [item for sub in value for item in sub]  # batched ragged lists -> one flat list
            flat[key] = value
        outputs = self.model(**flat)
        result = {key: value for key, value in outputs.items() if isinstance(value, torch.Tensor)}
        if return_visualization:
            if not hasattr(self.model, "render_regions"):
                raise ValueError(f"{type(self.model).__name__} has no region visualization (return_visualization)")
            pixels = flat["pixel_values"]
            result["visualization"] = [self.model.render_regions(pixels[i], outputs, index=i)
                                       for i in range(len(pixels))]  # fmt: skip
        return result

    def postprocess(self, model_outputs: dict[str, Any]) -> dict[str, Any]:
        result = describe_output(model_outputs, 0, self.model.config)
        if "visualization" in model_outputs:
            visualization = model_outputs["visualization"]
            result["visualization"] = visualization[0] if isinstance(visualization, list) else visualization
        return result


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ImageQualityPipeline, pt_model=AutoModel, type="image")


def pipeline(
    task: str = TASK,
    model: Any = None,
    processor_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs,
) -> ImageQualityPipeline:
    """`transformers.pipeline` for the image-quality task with this package's pipeline class.

    `model` may be a zoo name (`hf_iqa.list_models()`), a folder, a Hub id or a model instance.
    `processor_kwargs` override image-processor settings (e.g. `{"protocol": "pyiqa"}` for LIQE); `model_kwargs`
    go to `from_pretrained` and may override config fields (e.g. `{"task": "aesthetics"}` for UniQA,
    `{"prompt_logit_scale": 50.0}` for QualiCLIP); other kwargs go to `transformers.pipeline` (`device`, `dtype`).
    """
    if task != TASK:
        raise ValueError(f"hf_iqa.pipeline only builds the {TASK!r} task, got {task!r}")
    if isinstance(model, os.PathLike):
        model = str(model)
    if isinstance(model, str):
        from .zoo import resolve

        model = resolve(model, kwargs.get("revision"))
    trust = kwargs.get("trust_remote_code")
    if (processor_kwargs or model_kwargs) and not isinstance(model, str):
        raise ValueError("processor_kwargs / model_kwargs need `model` to be a name, folder or Hub id")
    if processor_kwargs or (model_kwargs and "image_processor" not in kwargs):
        kwargs["image_processor"] = AutoImageProcessor.from_pretrained(
            model, trust_remote_code=trust, **(processor_kwargs or {})
        )
    if model_kwargs:  # transformers.pipeline has its own `task` argument, so config overrides are applied here
        dtype = kwargs.pop("dtype", None)
        model = AutoModel.from_pretrained(model, trust_remote_code=trust, dtype=dtype or "auto", **model_kwargs)
    return transformers_pipeline(TASK, model=model, pipeline_class=ImageQualityPipeline, **kwargs)
