"""Image processor of QualiCLIP / QualiCLIP+: native resolution (no resize, no crop, no padding), RGB, [0, 1],
CLIP mean/std.

With `return_tensors="pt"` images come back as a list of (3, H, W) tensors (sizes may differ); `QualiClipModel`
groups them by shape.
Padding is never used: it would leak into the attention pool's mean token and change the scores.
The `qualiclip+-spaq` checkpoint was trained on images resized to 512 on the short side; its saved processor config
sets `do_resize=True` with `size={"shortest_edge": 512}`.

This file is a Hub unit: it imports only transformers.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.utils import TensorType


class QualiClipImageProcessor(PilBackend):
    """PIL/numpy preprocessing equal to torchvision `ToTensor()` + `Normalize(CLIP mean, std)` at native size."""

    model_input_names = ["pixel_values"]
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

    def _preprocess(self, images: list[np.ndarray], return_tensors: str | TensorType | None = None, **kwargs):
        """As the PIL backend, but with `return_tensors="pt"` the result is always a list of (3, H, W) tensors, one
        per image, whatever their sizes (so single images and mixed batches look the same to the pipeline)."""
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


__all__ = ["QualiClipImageProcessor"]
