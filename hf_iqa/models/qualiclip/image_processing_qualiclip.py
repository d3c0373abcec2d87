"""Image processor of QualiCLIP / QualiCLIP+: native resolution (no resize, no crop, no padding), RGB, [0, 1],
CLIP mean/std.

With `return_tensors="pt"` images come back as a list of (3, H, W) tensors (sizes may differ); `QualiClipModel`
groups them by shape.
Padding is never used: it would leak into the attention pool's mean token and change the scores.
The `qualiclip+-spaq` checkpoint was trained on images resized to 512 on the short side; its saved processor config
sets `do_resize=True` with `size={"shortest_edge": 512}`.

Bounded cost: the model's activations and this processor's output (float32, with the backend's temporaries ~44
bytes per pixel) grow with the pixels the model sees, so an image whose processed size (after the optional
resize) is over `max_processed_pixels` (default 4096 x 4096 = 16.8 Mpx, so 4000 x 3000 camera pictures pass) is refused
before anything is resized or copied; raise it with `processor_kwargs={"max_processed_pixels": N}` for trusted large images.
A thin image can thus not be blown up by the resize (40000x2 with `shortest_edge=512` would be 5 Gpx).

This file is a Hub unit: it imports only numpy, torch, PIL and transformers.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs
from transformers.utils import TensorType


class QualiClipImageProcessorKwargs(ImagesKwargs, total=False):
    max_processed_pixels: int


def processed_size(height: int, width: int, do_resize: bool, size) -> tuple[int, int]:
    """(height, width) the PIL backend will produce; computed without resizing (approximate by at most a pixel)."""
    if not do_resize or size is None:
        return height, width
    if getattr(size, "shortest_edge", None):
        scale = size.shortest_edge / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    if getattr(size, "height", None) and getattr(size, "width", None):
        return size.height, size.width
    return height, width


class QualiClipImageProcessor(PilBackend):
    """PIL/numpy preprocessing equal to torchvision `ToTensor()` + `Normalize(CLIP mean, std)` at native size."""

    valid_kwargs = QualiClipImageProcessorKwargs
    model_input_names = ["pixel_values"]
    max_processed_pixels = 4096 * 4096
    do_convert_rgb = True
    do_resize = False
    size = {"shortest_edge": 512}  # only used when do_resize=True (the -spaq variant)
    resample = PILImageResampling.BILINEAR  # pyiqa's SPAQ resize: torchvision Resize(512) on PIL images
    default_to_square = False
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    do_pad = False

    def __init__(self, **kwargs) -> None:
        if "max_pixels" in kwargs and "max_processed_pixels" not in kwargs:
            kwargs["max_processed_pixels"] = kwargs.pop("max_pixels")  # its name before it was told apart from the
        super().__init__(**kwargs)  # reader's limit (`--max-pixels`, hf_iqa.io.MAX_PIXELS): old folders keep theirs

    def check_budget(self, height: int, width: int, do_resize: bool, size, max_processed_pixels: int | None = None) -> None:
        """Refuse an image whose processed size is over `max_processed_pixels` (module docstring), before any work."""
        limit = max_processed_pixels or self.max_processed_pixels
        new_height, new_width = processed_size(height, width, do_resize, size)
        if new_height * new_width > limit:
            resized = f" (resized to {new_width}x{new_height})" if (new_height, new_width) != (height, width) else ""
            raise ValueError(
                f"QualiCLIP: an image of {width}x{height}{resized} is over the {limit:,}-pixel budget of this "
                "processor; downscale it or raise max_processed_pixels (processor_kwargs={'max_processed_pixels': N})"
            )

    def process_image(self, image, *args, **kwargs) -> np.ndarray:
        """Check a PIL image's budget before the backend copies it into an array."""
        if isinstance(image, Image.Image):
            self.check_budget(
                image.height, image.width, kwargs.get("do_resize"), kwargs.get("size"), kwargs.get("max_processed_pixels")
            )
        return super().process_image(image, *args, **kwargs)

    def _preprocess(self, images: list[np.ndarray], return_tensors: str | TensorType | None = None, **kwargs):
        """As the PIL backend, but with `return_tensors="pt"` the result is always a list of (3, H, W) tensors, one
        per image, whatever their sizes (so single images and mixed batches look the same to the pipeline).
        Every image's cost is checked before any is processed (module docstring)."""
        limit = kwargs.pop("max_processed_pixels", None)
        for image in images:
            self.check_budget(*image.shape[-2:], kwargs.get("do_resize"), kwargs.get("size"), limit)
            if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
                raise ValueError("QualiCLIP: the image contains NaN or infinite pixel values")
        pixel_values = super()._preprocess(images, return_tensors=None, **kwargs)["pixel_values"]
        if return_tensors is None:
            return BatchFeature({"pixel_values": pixel_values})
        if TensorType(return_tensors) != TensorType.PYTORCH:
            if len({array.shape for array in pixel_values}) > 1:
                raise ValueError(
                    f"images of different sizes can be returned as a list of torch tensors (return_tensors='pt') "
                    f"or of numpy arrays (return_tensors=None), not stacked as return_tensors={return_tensors!r}"
                )
            return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)
        tensors = [torch.from_numpy(np.ascontiguousarray(array)) for array in pixel_values]
        return BatchFeature({"pixel_values": tensors}, skip_tensor_conversion=["pixel_values"])


__all__ = ["QualiClipImageProcessor", "processed_size"]
