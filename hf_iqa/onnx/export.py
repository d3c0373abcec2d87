"""`hf-iqa export onnx`: an hf_iqa model -> a folder onnxruntime scores without torch, saved only after parity.

The graph is traced with `torch.onnx.export(dynamo=True)` (torch.export + onnxscript, opset `OPSET`, standard
ONNX operators only, no custom ops). It takes the image processor's outputs (`pixel_values`, and LIQE's
`patch_mask`) and returns `scores` plus the fields the pipeline reports (`level_probs`, `scene_probs`,
`distortion_probs`, `pair_probs`, ...); the prompt features are initializers (constants). Dynamic axes:
- LIQE: batch and windows (`(B, W, 3, 224, 224)` + `(B, W)` mask), so one graph serves both protocols' layouts
  (the processor setting in `preprocessor_config.json` decides how many windows an image gets);
- QualiCLIP / QualiCLIP+: batch, height and width (native resolution; one graph for every image size);
- UniQA: batch and crops; the head is the config's `task` at export time (quality or aesthetics).

Like the converters, nothing is written to `output_dir` unless onnxruntime reproduces the PyTorch results (every
score and probability within `PARITY_ATOL`) on the 8 `parity_images()`; the folder is assembled next to it and
renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .checks import ExportError, drift  # noqa: F401 (ExportError: raised here, imported from here)
from .images import parity_images
from .runtime import FORMAT, MARKER, OnnxScorer

OPSET = 18
PARITY_ATOL = 1e-4
FAMILIES = ("liqe", "qualiclip", "uniqa")
# the inputs and the dynamic axes of each family's graph
INPUTS = {
    "liqe": {"pixel_values": {0: "batch", 1: "windows"}, "patch_mask": {0: "batch", 1: "windows"}},
    "qualiclip": {"pixel_values": {0: "batch", 2: "height", 3: "width"}},
    "uniqa": {"pixel_values": {0: "batch", 1: "crops"}},
}


# smallest value of a dynamic axis (QualiCLIP's ResNet needs 32 px: five halvings); torch.export checks the range
DIM_MIN = {"height": 32, "width": 32}


def family_of(model: Any) -> str:
    from hf_iqa.models import registered_models

    for name, classes in registered_models().items():
        if isinstance(model.config, classes["config"]):
            if name not in FAMILIES:
                raise ExportError(f"ONNX export supports {', '.join(FAMILIES)}; {name} is not one of them")
            return name
    raise ExportError(f"{type(model).__name__} is not an hf_iqa model")


@contextlib.contextmanager
def _traceable(model: Any, family: str) -> Iterator[None]:
    """The image tower without the data-dependent paths of eager inference: LIQE encodes every window (padding
    windows get weight 0 from `patch_mask` in the window average, as before, instead of being skipped), QualiCLIP
    runs one (B, 3, H, W) tensor instead of grouping a list by size. The instance attribute is removed after."""
    if family == "liqe":
        original = type(model).get_image_features
        model.get_image_features = lambda pixel_values, patch_mask=None: original(model, pixel_values, None)
    elif family == "qualiclip":  # and plain conv + BatchNorm: the folded-weight cache is keyed on data pointers
        model.get_image_features = lambda pixel_values: model.vision_model(pixel_values).pooler_output
        fold = model.vision_model.config.fold_batch_norm
        model.vision_model.config.fold_batch_norm = False
    try:
        yield
    finally:
        model.__dict__.pop("get_image_features", None)
        if family == "qualiclip":
            model.vision_model.config.fold_batch_norm = fold


class _Graph(torch.nn.Module):
    def __init__(self, model: Any, input_names: list[str], output_names: list[str]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(**dict(zip(self.input_names, inputs)), return_dict=True)
        return tuple(outputs[name].float() for name in self.output_names)


def example_inputs(image_processor: Any, family: str) -> dict[str, torch.Tensor]:
    """The processor's tensors for two images (a batch of 1 would be specialised by torch.export)."""
    images = parity_images()[:1] * 2
    features = image_processor(images=images, return_tensors="pt")
    inputs = {}
    for name in INPUTS[family]:
        value = features[name]
        inputs[name] = torch.stack(list(value)) if isinstance(value, (list, tuple)) else value
    return inputs


def output_names(model: Any, inputs: dict[str, torch.Tensor]) -> list[str]:
    """`scores`, the labelled probability fields and any other one-value-per-image field (what the pipeline
    reports, `hf_iqa.pipelines.describe_output`)."""
    with torch.no_grad():
        outputs = model(**inputs, return_dict=True)
    labelled = getattr(model.config, "output_labels", None) or {}
    names = ["scores"]
    for name, value in outputs.items():
        if name != "scores" and isinstance(value, torch.Tensor) and (name in labelled or value.dim() == 1):
            names.append(name)
    return names


def export_graph(model: Any, image_processor: Any, path: Path) -> dict[str, Any]:
    """Trace `model` into `path` (fp32); returns the graph's input and output names."""
    family = family_of(model)
    model = model.float().eval()
    inputs = example_inputs(image_processor, family)
    with _traceable(model, family), torch.no_grad():
        outputs = output_names(model, inputs)
        dims: dict[str, torch.export.Dim] = {}
        shapes = tuple(
            {
                axis: dims.setdefault(name, torch.export.Dim(name, min=DIM_MIN.get(name, 0)))
                for axis, name in axes.items()
            }
            for axes in INPUTS[family].values()
        )
        torch.onnx.export(
            _Graph(model, list(inputs), outputs),
            tuple(inputs.values()),
            str(path),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(inputs),
            output_names=outputs,
            dynamic_shapes=(shapes,),  # one entry: the `*inputs` of `_Graph.forward`
            external_data=False,
            verbose=False,
        )
    return {"family": family, "inputs": list(inputs), "outputs": outputs}


def torch_results(model: Any, image_processor: Any, images: list) -> list[dict[str, Any]]:
    """The PyTorch pipeline's result dicts, one image at a time (the reference of the parity check)."""
    from hf_iqa.pipelines import describe_output

    results = []
    with torch.no_grad():
        for image in images:
            outputs = model(**image_processor(images=[image], return_tensors="pt"), return_dict=True)
            results.append(describe_output(outputs, 0, model.config))
    return results


def numbers(result: dict[str, Any]) -> dict[str, float]:
    """The numeric leaves of a result dict: score and every probability (labels compared separately)."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{label}": float(v) for label, v in value.items()})
        elif isinstance(value, (int, float)):
            flat[key] = float(value)
    return flat


def max_difference(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> float:
    """The largest |difference| over every number of every image; inf when the keys differ."""
    worst = 0.0
    for one, two in zip(expected, actual, strict=True):
        a, b = numbers(one), numbers(two)
        if a.keys() != b.keys():
            return float("inf")
        worst = max([worst] + [abs(a[key] - b[key]) for key in a])
    return worst


def export_onnx(
    model: Any,
    image_processor: Any,
    output_dir: str | Path,
    *,
    quantize: str | None = None,
    fp16: bool = False,
    overwrite: bool = False,
    source: str | None = None,
    images: list | None = None,
    drift_images: list | None = None,
    drift_bounds: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Export, check parity (and the variant's drift), then write `output_dir`. Returns what the card records."""
    from .card import write_card
    from .variants import make_variant

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ExportError(f"{output_dir} exists and is not empty; pass --overwrite to replace it")
    if quantize and fp16:
        raise ExportError("choose one of --quantize dynamic-int8 and --fp16")
    images = parity_images() if images is None else images
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        log("exporting the graph (torch.onnx, dynamo) ...")
        spec = export_graph(model, image_processor, work / "model.onnx")
        model.config.to_json_file(str(work / "config.json"))
        image_processor.save_pretrained(str(work))
        spec.update(format=FORMAT, version=1, opset=OPSET, precision="fp32", model_file="model.onnx", source=source)
        spec.update(output_labels=dict(getattr(model.config, "output_labels", None) or {}),
                    score_range=list(getattr(model.config, "score_range", None) or []))  # fmt: skip
        (work / MARKER).write_text(json.dumps(spec, indent=2) + "\n")
        log(f"checking onnxruntime against PyTorch on {len(images)} images ...")
        expected = torch_results(model, image_processor, images)
        scorer = OnnxScorer(work)
        difference = max_difference(expected, [scorer.predict([scorer.prepare(image)])[0] for image in images])
        log(f"fp32 parity: max |difference| {difference:.2e} over every score and probability (bound {PARITY_ATOL})")
        if not difference <= PARITY_ATOL:
            raise ExportError(f"onnxruntime differs from PyTorch by {difference:.3g} > {PARITY_ATOL}; nothing saved")
        spec["parity"] = {"images": len(images), "max_abs_difference": difference, "atol": PARITY_ATOL}
        if quantize or fp16:
            spec["variant"] = make_variant(work, "int8" if quantize else "fp16", drift_images, drift_bounds, log)
            spec["precision"] = spec["variant"]["precision"]
        (work / MARKER).write_text(json.dumps(spec, indent=2) + "\n")
        write_card(work / "README.md", spec, model.config)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        work.rename(output_dir)
        log(f"saved {output_dir}")
        return spec
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
