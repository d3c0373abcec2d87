"""`QualityMetric`: an hf_iqa model as a differentiable metric, training loss or reward on image tensors.

The image processors work on PIL images, one at a time, on the CPU, and are not differentiable. A model folder
that can do better ships `tensor_processing_<folder>.py` next to its `image_processing_<folder>.py`: a Hub-unit
file whose `TENSOR_PROCESSOR` class wraps the PIL processor, takes the geometry from it (resize target, windows,
crops) and redoes the pixel maths in torch on the input's device. `QualityMetric` finds that file by this
convention and otherwise relies only on the output contract of `hf_iqa/models/__init__.py` (`scores` first,
higher is better, `config.score_range`), so it serves every model that has such a file: LIQE (both protocols),
QualiCLIP / QualiCLIP+ and UniQA.

Dog-IQA has none, on purpose (see `NOT_DIFFERENTIABLE`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
from torch import nn

#: Model folders that cannot be a differentiable metric, and why (the error message says it).
NOT_DIFFERENTIABLE = {
    "dog_iqa": (
        "Dog-IQA cannot be used as a differentiable metric or loss: its regions come from SAM2 masks that are "
        "thresholded and counted (piecewise constant in the pixels), each view reaches the MLLM as a PIL image "
        "through a non-differentiable processor, and in 'generate' mode the score is a parsed greedy token. Use "
        "LIQE, QualiCLIP or UniQA for gradients; Dog-IQA scores from hf_iqa.pipeline can still serve as a "
        "gradient-free reward (e.g. for policy-gradient RL)"
    ),
}

REDUCTIONS = ("mean", "sum", "none")
#: Values this far outside `input_range` (as a fraction of it) are refused: resampling overshoot passes, 0-255 does not.
INPUT_TOLERANCE = 0.01


def _family_of(model_type: str) -> tuple[str, dict]:
    """Registered model folder name and its AUTO_CLASSES for a config's model_type."""
    from .models import registered_models

    for folder, classes in registered_models().items():
        if classes["config"].model_type == model_type:
            return folder, classes
    raise ValueError(f"QualityMetric: {model_type!r} is not an hf_iqa model type")


def _tensor_processor_class(folder: str, classes: dict):
    if folder in NOT_DIFFERENTIABLE:
        raise ValueError(NOT_DIFFERENTIABLE[folder])
    package = classes["image_processor"].__module__.rpartition(".")[0]
    try:
        module = importlib.import_module(f"{package}.tensor_processing_{folder}")
    except ModuleNotFoundError as error:
        raise ValueError(
            f"QualityMetric: the {folder} model folder has no differentiable preprocessing "
            f"(tensor_processing_{folder}.py)"
        ) from error
    return module.TENSOR_PROCESSOR


class QualityMetric(nn.Module):
    """An hf_iqa model as an `nn.Module` on image tensors: scores, or a loss that falls as quality rises.

    `forward(images)` takes a float tensor `(B, 3, H, W)` (or `(B, 1, H, W)`, repeated to RGB) with values in
    [0, 1], on any device and in any float dtype, and returns the model's scores `(B,)` (float32, higher is
    better, on the images' device), differentiable with respect to the pixels. The preprocessing is the model's
    image processor redone in torch: the same LIQE windows, QualiCLIP native resolution, UniQA crops. Where the
    processor resizes with PIL (LIQE official protocol when both sides are >= 768, images smaller than a window or
    crop, `qualiclip+-spaq`), the tensor path uses PIL's antialiased filter through `F.interpolate` but does not
    round to uint8 as PIL does after each 1-D pass: pixels differ by <= 1/255 (bicubic 1.4/255), scores by <= 2e-3
    of the score range (measured; README section "Quality as a loss or reward", `bench/bench_quality_metric.py`).
    Elsewhere the model inputs are bit-identical for inputs `uint8 / 255` and scores equal the pipeline's to 1e-5.
    All images of a batch share one size, hence one set of windows / crops; values are not clipped.

    With `as_loss=True`, `forward` returns `loss_weight * reduce(1 - (score - low) / (high - low))` with
    `(low, high) = score_range`: 0 at the best score, 1 at the worst, whatever the model's native range.

    Args:
        model_or_name: a zoo name (`hf_iqa.list_models()`), a folder, a Hub id or a loaded hf_iqa model.
        as_loss: return the loss instead of the scores.
        loss_weight: factor of the loss.
        reduction: "mean", "sum" or "none" (per image) over the batch, for the loss.
        image_processor: the PIL image processor whose rules to reproduce; default: the one saved with the model
            (or the class default for a model object that was not loaded from a folder).
        dtype: load the model in this dtype (e.g. `torch.bfloat16`); inputs are cast to it after preprocessing.
        device: move the model there; inputs are moved to the model's device and scores come back to theirs.
        freeze: weights frozen (`requires_grad=False`) and the model kept in eval mode even when the metric's
            parent module is put in training mode (BatchNorm statistics must not move). `False` to fine-tune it.
        revision: Hub revision for names and Hub ids.
        model_kwargs: `from_pretrained` overrides of config fields, e.g. `{"task": "aesthetics"}` for UniQA.
        **options: image-processor settings, as for `hf_iqa.pipeline(processor_kwargs=...)`, e.g.
            `protocol="pyiqa"` for LIQE, `crop_mode="grid"` for UniQA.

        input_range: the range of the input values, `(0, 1)` by default; e.g. `(0, 255)` for 0-255 floats, which are
            then scaled to [0, 1]. Inputs beyond it by more than `INPUT_TOLERANCE` of its width are refused with
            one line naming the observed range. The check reads one min and max per call (`aminmax`), which on a GPU
            is one host sync per call; `None` skips it (no sync, inputs taken as [0, 1]).

    Attributes (pyiqa's names): `lower_better` (True when `forward` returns a loss, else False), `score_range`
    (the model's native score range, a tuple of two floats), `as_loss`, `loss_weight`, `loss_reduction`.
    """

    def __init__(
        self,
        model_or_name: Any,
        as_loss: bool = False,
        *,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        image_processor: Any = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        freeze: bool = True,
        revision: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        input_range: tuple[float, float] | None = (0.0, 1.0),
        **options: Any,
    ):
        super().__init__()
        if input_range is not None:
            input_range = (float(input_range[0]), float(input_range[1]))
            if not input_range[1] > input_range[0]:
                raise ValueError(f"QualityMetric: input_range must be (low, high) with high > low, got {input_range}")
        self.input_range = input_range
        if reduction not in REDUCTIONS:
            raise ValueError(f"QualityMetric: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if image_processor is not None and options:
            raise ValueError("QualityMetric: give either image_processor or processor options, not both")
        model, folder, classes, source = self._load(model_or_name, dtype, revision, model_kwargs or {})
        if image_processor is None:
            image_processor = self._load_processor(model, source, classes, options, revision)
        self.tensor_processor = _tensor_processor_class(folder, classes)(image_processor)
        self.image_processor = image_processor
        if device is not None:
            model = model.to(device)
        self.freeze = bool(freeze)
        if self.freeze:
            model.requires_grad_(False)
        self.model = model.eval()
        low, high = (float(v) for v in model.config.score_range)
        if not high > low:
            raise ValueError(f"QualityMetric: the model's score_range {model.config.score_range} is empty")
        self.score_range = (low, high)
        self.higher_is_better = bool(getattr(model.config, "higher_is_better", True))
        self.as_loss = bool(as_loss)
        self.loss_weight = float(loss_weight)
        self.loss_reduction = reduction
        self.lower_better = self.as_loss or not self.higher_is_better

    # -- construction ----------------------------------------------------------------------------------------------
    @staticmethod
    def _load(model_or_name: Any, dtype, revision, model_kwargs: dict) -> tuple[nn.Module, str, dict, str | None]:
        """The model, its folder name and AUTO_CLASSES, and where it was loaded from (None for an object)."""
        if isinstance(model_or_name, nn.Module):
            if model_kwargs:
                raise ValueError("QualityMetric: model_kwargs apply when loading by name or folder, not to a model")
            config = getattr(model_or_name, "config", None)
            if config is None:
                raise ValueError(f"QualityMetric: {type(model_or_name).__name__} is not an hf_iqa model (no config)")
            folder, classes = _family_of(config.model_type)
            _tensor_processor_class(folder, classes)  # fail before anything else for models that cannot
            model = model_or_name if dtype is None else model_or_name.to(dtype=dtype)
            return model, folder, classes, None
        if not isinstance(model_or_name, (str, os.PathLike)):
            raise TypeError(
                f"QualityMetric: expected a model name, folder or hf_iqa model, got {type(model_or_name).__name__}"
            )
        from transformers import AutoConfig, AutoModel

        from .zoo import get_entry, resolve

        name = str(model_or_name)
        entry = get_entry(name)
        if entry is not None and entry.family in NOT_DIFFERENTIABLE:  # before fetching gigabytes of weights
            raise ValueError(NOT_DIFFERENTIABLE[entry.family])
        source = resolve(name, revision)
        config = AutoConfig.from_pretrained(source, revision=revision)
        folder, classes = _family_of(config.model_type)
        _tensor_processor_class(folder, classes)
        kwargs = {**model_kwargs, **({"revision": revision} if revision else {})}
        if dtype is not None:
            kwargs["dtype"] = dtype
        return AutoModel.from_pretrained(source, **kwargs), folder, classes, source

    @staticmethod
    def _load_processor(model: nn.Module, source: str | None, classes: dict, options: dict, revision):
        from transformers import AutoImageProcessor

        source = source or getattr(model, "name_or_path", None)
        if source:
            try:
                kwargs = {"revision": revision} if revision else {}
                return AutoImageProcessor.from_pretrained(source, **kwargs, **options)
            except OSError:  # a model object built in code, or a folder saved without its processor
                pass
        return classes["image_processor"](**options)

    def train(self, mode: bool = True) -> QualityMetric:
        """As `nn.Module.train`, but a frozen model stays in eval mode (BatchNorm, dropout)."""
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    # -- use -------------------------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model inputs for `images`, as the image processor would give them, on the model's device and dtype."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"QualityMetric expects a (B, 3, H, W) float tensor, got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
            raise ValueError(
                "QualityMetric expects a float tensor of shape (B, 3, H, W) (or (B, 1, H, W)) with values in [0, 1], "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
        images = self._to_unit_range(images)
        if images.shape[1] == 1:  # grey: the PIL path converts L to RGB by repeating the channel
            images = images.expand(-1, 3, -1, -1)
        inputs = self.tensor_processor(images.to(self.model.device))
        dtype = self.model.dtype
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}

    def _to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Refuse values outside `input_range` (one min/max, one host sync) and scale it to [0, 1]."""
        if self.input_range is None:
            return images
        low, high = self.input_range
        smallest, largest = (float(v) for v in torch.stack(torch.aminmax(images.detach())).tolist())
        slack = INPUT_TOLERANCE * (high - low)
        if smallest < low - slack or largest > high + slack or smallest != smallest or largest != largest:
            raise ValueError(
                f"QualityMetric: inputs must be in [{low:g}, {high:g}] but range over [{smallest:.4g}, {largest:.4g}]; "
                "declare their range, e.g. QualityMetric(..., input_range=(0, 255)), or input_range=None to skip this check"
            )
        return images if (low, high) == (0.0, 1.0) else (images - low) / (high - low)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """The model's scores `(B,)` in its native range (float32, on the images' device), even when `as_loss`."""
        outputs = self.model(**self.preprocess(images))
        scores = outputs["scores"] if isinstance(outputs, dict) else outputs[0]
        return scores.to(images.device)

    def loss(self, scores: torch.Tensor) -> torch.Tensor:
        """`loss_weight * reduce(distance of each score from the best one, as a fraction of score_range)`."""
        low, high = self.score_range
        quality = (scores - low) / (high - low)
        losses = (1 - quality) if self.higher_is_better else quality
        if self.loss_reduction == "mean":
            losses = losses.mean()
        elif self.loss_reduction == "sum":
            losses = losses.sum()
        return self.loss_weight * losses

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.score(images)
        return self.loss(scores) if self.as_loss else scores

    def extra_repr(self) -> str:
        return (
            f"model={type(self.model).__name__}, as_loss={self.as_loss}, score_range={self.score_range}, "
            f"lower_better={self.lower_better}, loss_weight={self.loss_weight}, reduction={self.loss_reduction!r}, "
            f"input_range={self.input_range}"
        )


__all__ = ["QualityMetric", "NOT_DIFFERENTIABLE"]
