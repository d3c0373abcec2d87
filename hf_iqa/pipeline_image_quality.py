"""The `image-quality` pipeline: an hf_iqa model (or any model honouring the output contract in `hf_iqa.models`)
-> one `{"score": float, ...}` dict per image.

This file is flat remote code, like a model folder's files: it imports only torch, numpy, PIL and transformers,
because `save_pretrained` copies it next to every saved hf_iqa model and `config.json` names it under
`custom_pipelines`. A user without hf_iqa then gets the same pipeline with
`transformers.pipeline("image-quality", model=folder_or_repo, trust_remote_code=True)`. The package imports this
very module (`hf_iqa.pipeline`), so there is one pipeline, not two. The image loader below is a marked copy of
`hf_iqa.io` (the package swaps in the original, which raises `hf_iqa.ImageLoadError`); a test keeps them equal.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers import Pipeline

TASK = "image-quality"
# What `config.json` carries under `custom_pipelines` (the "pt" names are resolved with getattr(transformers, name)).
CUSTOM_PIPELINES = {
    TASK: {"impl": f"{__name__.rsplit('.', 1)[-1]}.ImageQualityPipeline", "pt": ["AutoModel"], "type": "image"}
}


# Copied from hf_iqa.io.ImageLoadError
class ImageLoadError(ValueError):
    """An image that cannot be used, with the offending file (or input) named in the message."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


# Copied from hf_iqa.io._to_rgb
def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB the way a user would expect to see the picture."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and array.max(initial=0) > 255):
            array = array / 65535.0 * 255.0  # 16-bit data: scale the full 16-bit range to 8 bits
        elif image.mode == "F" and array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


# Copied from hf_iqa.io._from_array
def _from_array(array: np.ndarray, source: str) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] > 4:
        array = np.moveaxis(array, 0, -1)  # channels-first input
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(source, f"expected an HxW, HxWx3 or HxWx4 array, got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ImageLoadError(source, "empty array")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(source, "array contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise ImageLoadError(source, "float arrays must hold values in [0, 1]")
        array = np.rint(array * 255.0).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise ImageLoadError(source, f"integer array of dtype {array.dtype} has values outside [0, 255]")
        array = array.astype(np.uint8)
    return _to_rgb(Image.fromarray(array))


# Copied from hf_iqa.io.load_image
def load_image(image: str | os.PathLike | Image.Image | np.ndarray, *, source: str | None = None) -> Image.Image:
    """Return `image` (a path, PIL image or array) as an RGB PIL image, or raise `ImageLoadError`."""
    if isinstance(image, Image.Image):
        try:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image) or image)
        except (OSError, ValueError) as error:
            raise ImageLoadError(source or "<PIL image>", f"cannot decode image ({error})") from None
    if isinstance(image, np.ndarray):
        return _from_array(image, source or "<array>")
    if hasattr(image, "numpy") and hasattr(image, "dim"):  # a torch tensor, without importing torch here
        return _from_array(image.detach().cpu().numpy(), source or "<tensor>")
    if not isinstance(image, (str, os.PathLike)):
        raise ImageLoadError(source or repr(type(image)), "expected a file path, a PIL image or a numpy array")

    path = Path(image)
    name = source or str(path)
    if not path.exists():
        raise ImageLoadError(name, "no such file")
    if path.is_dir():
        raise ImageLoadError(name, "is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageLoadError(name, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.seek(0)  # first frame of animated GIF/WebP/APNG/TIFF
                opened.load()
                oriented = ImageOps.exif_transpose(opened) or opened
                return _to_rgb(oriented).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(
            name,
            f"image is too large for Pillow's decompression-bomb limit ({error}); "
            "raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file",
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not an image file Pillow can read (unknown or corrupt format)") from None
    except OSError as error:
        message = str(error)
        if "truncated" in message.lower() or "broken data stream" in message.lower():
            raise ImageLoadError(name, f"truncated or corrupt image data ({message})") from None
        raise ImageLoadError(name, f"cannot read image ({message})") from None
    except (ValueError, SyntaxError, EOFError) as error:
        raise ImageLoadError(name, f"corrupt image ({error})") from None


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
    region map).
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False  # otherwise pipeline() probes AutoVideoProcessor -> a remote-code prompt

    load_image = staticmethod(load_image)  # every input -> RGB PIL image, or an error naming the file

    def _sanitize_parameters(self, return_visualization: bool | None = None, **kwargs):
        forward = {} if return_visualization is None else {"return_visualization": return_visualization}
        return {}, forward, {}

    def preprocess(self, image: Any) -> dict[str, Any]:
        image = self.load_image(image)
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
