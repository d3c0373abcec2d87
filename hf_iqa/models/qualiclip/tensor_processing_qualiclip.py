"""Differentiable twin of `QualiClipImageProcessor`: native resolution, CLIP mean/std, in torch.

Used by `hf_iqa.QualityMetric` to score (and back-propagate through) image batches that are already tensors, on
their device. At native resolution (the default) the output equals the PIL processor's bit for bit for inputs
`uint8 / 255`. Checkpoints whose saved processor resizes (`qualiclip+-spaq`: short side 512, PIL bilinear) are
resized with `F.interpolate(antialias=True)`, PIL's filter without its rounding to uint8 (see the README, "Quality
as a loss or reward", for the measured difference). The size rule itself is the PIL processor's, asked once per
image size. The small-image rule is the model's: the /32 ResNet refuses images under 32 pixels with a clear error,
whichever path made the tensor.

This file is a Hub unit: it imports only torch, numpy and same-folder files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .image_processing_qualiclip import QualiClipImageProcessor

_TORCH_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resampling filters F.interpolate(antialias=True) reproduces


def resize_like_pil(images: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    """`PIL.Image.resize(size, resample)` for (B, C, H, W) floats in [0, 1]: PIL's antialiased bilinear / bicubic
    (a = -0.5) filters, and its clipping to the pixel range (bicubic overshoots), but no rounding to uint8."""
    mode = _TORCH_MODES.get(int(resample))
    if mode is None:
        raise ValueError(f"resampling filter {resample!r} has no differentiable twin; use BILINEAR or BICUBIC")
    resized = F.interpolate(images, size=size, mode=mode, antialias=True, align_corners=False)
    return resized.clamp(0.0, 1.0) if mode == "bicubic" else resized


class QualiClipTensorProcessor:
    """`(B, 3, H, W)` float tensor in [0, 1] -> `{"pixel_values": (B, 3, H', W')}` (H', W' = H, W unless the
    processor resizes), as `QualiClipImageProcessor` returns for the same pictures, differentiable."""

    def __init__(self, image_processor: QualiClipImageProcessor | None = None):
        processor = image_processor if image_processor is not None else QualiClipImageProcessor()
        if processor.do_center_crop or processor.do_pad:
            raise ValueError("QualiClipTensorProcessor: center cropping and padding have no tensor twin here")
        if processor.do_resize:
            resize_like_pil(torch.zeros(1, 3, 2, 2), (2, 2), processor.resample)  # unsupported filter: fail now
        self.image_processor = processor
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the PIL processor gives a picture of this size (asked once per size with a blank one)."""
        processor = self.image_processor
        if not processor.do_resize:
            return height, width
        if (height, width) not in self._sizes:
            blank = np.zeros((3, height, width), dtype=np.uint8)
            resized = processor.resize(blank, size=processor.size, resample=processor.resample)
            self._sizes[height, width] = tuple(resized.shape[-2:])
        return self._sizes[height, width]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        processor = self.image_processor
        images = images.to(torch.promote_types(images.dtype, torch.float32))  # resampling and normalising in fp32+
        size = self.output_size(*(int(side) for side in images.shape[-2:]))
        if size != tuple(images.shape[-2:]):
            images = resize_like_pil(images, size, processor.resample)
        if not processor.do_rescale:  # the PIL path then feeds raw 0..255 values
            images = images * 255
        elif processor.rescale_factor != 1 / 255:
            images = images * (255 * processor.rescale_factor)
        if processor.do_normalize:
            mean = torch.tensor(processor.image_mean, dtype=torch.float32).to(images).view(3, 1, 1)
            std = torch.tensor(processor.image_std, dtype=torch.float32).to(images).view(3, 1, 1)
            images = (images - mean) / std
        return {"pixel_values": images}


TENSOR_PROCESSOR = QualiClipTensorProcessor

__all__ = ["QualiClipTensorProcessor", "TENSOR_PROCESSOR", "resize_like_pil"]
