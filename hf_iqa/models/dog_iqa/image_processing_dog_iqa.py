"""Image processor of Dog-IQA: RGB pixels at native resolution, untouched.

Dog-IQA segments and crops the original pixels (region areas and the 1000-pixel threshold are in native pixels),
and each sub-model has its own preprocessing (SAM2's 1024 x 1024 resize, the MLLM's own processor), so this
processor only converts to RGB and returns a list of uint8 (3, H, W) tensors (output contract, point 5).
It allocates one uint8 copy of the input at most (3 bytes per pixel); non-finite float pixels are refused."""

from __future__ import annotations

import numpy as np
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature


class DogIqaImageProcessor(PilBackend):
    model_input_names = ["pixel_values"]
    do_convert_rgb = True
    do_resize = False
    do_rescale = False
    do_normalize = False
    do_center_crop = False

    def _preprocess(self, images: list[np.ndarray], return_tensors=None, **kwargs) -> BatchFeature:
        pixels = []
        for image in images:
            array = np.asarray(image)
            if array.dtype != np.uint8:
                if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                    raise ValueError("DogIqaImageProcessor: the image contains NaN or infinite pixel values")
                array = np.clip(np.rint(array * (255.0 if array.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
            if array.shape[0] == 1:
                array = np.repeat(array, 3, axis=0)
            pixels.append(torch.from_numpy(np.ascontiguousarray(array)))
        return BatchFeature({"pixel_values": pixels})


__all__ = ["DogIqaImageProcessor"]
