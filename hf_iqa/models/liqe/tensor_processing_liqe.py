"""Differentiable twin of `LiqeImageProcessor`: the same windows, cut from a float tensor in torch.

Used by `hf_iqa.QualityMetric` to score (and back-propagate through) image batches that are already tensors, on
their device. The geometry (resize target, stride, window corners) comes from the PIL processor itself, asked once
per image size, so both paths always pick the same windows. Only the pixel maths is redone in torch:

- the official protocol's resize of images with both sides >= 768 and the upsampling of images with a side below
  the window use `F.interpolate(mode="bilinear", antialias=True)`: PIL's bilinear filter (equal to PIL's float
  resampling to < 1e-5/255), without PIL's rounding to uint8 after each of its two 1-D passes. Measured on
  scikit-image photos: pixels differ from the processor's by at most 1/255 (mean 0.3/255); the README section
  "Quality as a loss or reward" gives the score differences;
- images the processor does not resize give bit-identical `pixel_values` for inputs `uint8 / 255`.

This file is a Hub unit: it imports only torch, numpy and same-folder files.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .image_processing_liqe import LiqeImageProcessor, select_windows, upsampled_size

_TORCH_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resampling filters F.interpolate(antialias=True) reproduces
PIL_BILINEAR = 2  # the filter of LIQE's resizes (official protocol and small images)


# Copied from hf_iqa.models.qualiclip.tensor_processing_qualiclip.resize_like_pil
def resize_like_pil(images: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    """`PIL.Image.resize(size, resample)` for (B, C, H, W) floats in [0, 1]: PIL's antialiased bilinear / bicubic
    (a = -0.5) filters, and its clipping to the pixel range (bicubic overshoots), but no rounding to uint8."""
    mode = _TORCH_MODES.get(int(resample))
    if mode is None:
        raise ValueError(f"resampling filter {resample!r} has no differentiable twin; use BILINEAR or BICUBIC")
    resized = F.interpolate(images, size=size, mode=mode, antialias=True, align_corners=False)
    return resized.clamp(0.0, 1.0) if mode == "bicubic" else resized


class LiqeTensorProcessor:
    """`(B, 3, H, W)` float tensor in [0, 1] -> `{"pixel_values": (B, P, 3, S, S), "patch_mask": (B, P)}`, as
    `LiqeImageProcessor` returns for the same pictures, differentiable with respect to the input.

    Pixels outside every selected window get no gradient: they do not change the score.
    """

    def __init__(self, image_processor: LiqeImageProcessor | None = None):
        processor = image_processor if image_processor is not None else LiqeImageProcessor()
        if processor.patch_sampling != "grid":
            raise ValueError(
                "LiqeTensorProcessor: only deterministic windows (patch_sampling='grid') can be reproduced, got "
                f"patch_sampling={processor.patch_sampling!r}"
            )
        self.image_processor = processor
        self._geometry: dict[tuple[int, int], tuple[int, int, list[tuple[int, int]]]] = {}

    def geometry(self, height: int, width: int) -> tuple[int, int, list[tuple[int, int]]]:
        """(height, width) after the protocol's resize, and the top-left corners of the windows scored there.

        Asks the PIL processor with a blank picture of that size (cached per size), so any rule it applies
        (protocol resize, small-image upsampling and its warning, refusals) is applied here too."""
        key = (height, width)
        if key not in self._geometry:
            processor = self.image_processor
            blank = np.broadcast_to(np.zeros((), dtype=np.uint8), (3, height, width))
            prepared, stride = processor.prepare_image(blank, processor.protocol, processor.patch_size)
            new_height, new_width = upsampled_size(*prepared.shape[1:], processor.patch_size)
            if (new_height, new_width) != prepared.shape[1:]:
                warnings.warn(
                    f"LIQE: image of {width}x{height} is smaller than a {processor.patch_size}px window; upsampled "
                    f"to {new_width}x{new_height} (the original implementations reject such images)",
                    stacklevel=3,
                )
            corners = select_windows(new_height, new_width, processor.patch_size, stride, processor.num_patches)
            self._geometry[key] = (new_height, new_width, corners)
        return self._geometry[key]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        processor = self.image_processor
        images = images.to(torch.promote_types(images.dtype, torch.float32))  # resampling and normalising in fp32+
        height, width = images.shape[-2:]
        new_height, new_width, corners = self.geometry(int(height), int(width))
        if (new_height, new_width) != (height, width):
            images = resize_like_pil(images, (new_height, new_width), PIL_BILINEAR)
        size = processor.patch_size
        windows = torch.stack([images[:, :, y : y + size, x : x + size] for y, x in corners], dim=1)
        if not processor.do_rescale:  # the PIL path then feeds raw 0..255 values
            windows = windows * 255
        elif processor.rescale_factor != 1 / 255:
            windows = windows * (255 * processor.rescale_factor)
        if processor.do_normalize:
            mean = torch.tensor(processor.image_mean, dtype=torch.float32).to(windows).view(3, 1, 1)
            std = torch.tensor(processor.image_std, dtype=torch.float32).to(windows).view(3, 1, 1)
            windows = (windows - mean) / std
        batch, used = windows.shape[:2]
        patch_mask = torch.zeros(batch, processor.num_patches, dtype=torch.long, device=images.device)
        patch_mask[:, :used] = 1
        if used < processor.num_patches:  # small images: zero padding windows, as the PIL processor emits
            padding = windows.new_zeros(batch, processor.num_patches - used, *windows.shape[2:])
            windows = torch.cat([windows, padding], dim=1)
        return {"pixel_values": windows, "patch_mask": patch_mask}


TENSOR_PROCESSOR = LiqeTensorProcessor

__all__ = ["LiqeTensorProcessor", "TENSOR_PROCESSOR", "resize_like_pil"]
