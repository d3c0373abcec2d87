"""Differentiable twin of `UniQaImageProcessor`: the same square crops, cut from a float tensor in torch.

Used by `hf_iqa.QualityMetric` to score (and back-propagate through) image batches that are already tensors, on
their device. Crop positions come from the processor's own `crop_positions` (a pure function of the seed and the
image size: "random" seeded, "grid", "five_crop"), so both paths cut the same crops; for inputs `uint8 / 255` the
crops are bit-identical. Images with a side below the crop, which the PIL processor upsamples with PIL bicubic,
are upsampled with `F.interpolate(mode="bicubic", antialias=True)` (PIL's a = -0.5 kernel) and clipped to [0, 1],
without PIL's rounding to uint8 (see the README, "Quality as a loss or reward", for the measured difference).

This file is a Hub unit: it imports only torch, numpy and same-folder files.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .image_processing_uniqa import UniQaImageProcessor, crop_positions

_TORCH_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resampling filters F.interpolate(antialias=True) reproduces


# Copied from hf_iqa.models.qualiclip.tensor_processing_qualiclip.resize_like_pil
def resize_like_pil(images: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    """`PIL.Image.resize(size, resample)` for (B, C, H, W) floats in [0, 1]: PIL's antialiased bilinear / bicubic
    (a = -0.5) filters, and its clipping to the pixel range (bicubic overshoots), but no rounding to uint8."""
    mode = _TORCH_MODES.get(int(resample))
    if mode is None:
        raise ValueError(f"resampling filter {resample!r} has no differentiable twin; use BILINEAR or BICUBIC")
    resized = F.interpolate(images, size=size, mode=mode, antialias=True, align_corners=False)
    return resized.clamp(0.0, 1.0) if mode == "bicubic" else resized


class UniQaTensorProcessor:
    """`(B, 3, H, W)` float tensor in [0, 1] -> `{"pixel_values": (B, K, 3, S, S)}`, as `UniQaImageProcessor`
    returns for the same pictures, differentiable. Pixels outside every crop get no gradient."""

    def __init__(self, image_processor: UniQaImageProcessor | None = None):
        processor = image_processor if image_processor is not None else UniQaImageProcessor()
        self.crop = processor._check(
            processor.crop_size, processor.num_crops, processor.crop_mode, processor.crop_seed
        )
        resize_like_pil(torch.zeros(1, 3, 2, 2), (2, 2), processor.resample)  # unsupported filter: fail now
        self.image_processor = processor
        self._geometry: dict[tuple[int, int], tuple[int, int, list[tuple[int, int]]]] = {}

    def geometry(self, height: int, width: int) -> tuple[int, int, list[tuple[int, int]]]:
        """(height, width) after the small-image upsampling, and the top-left corner of each crop there.

        The size comes from the PIL processor, asked once per size with a blank picture (and its warning)."""
        if (height, width) not in self._geometry:
            processor = self.image_processor
            new_height, new_width = processor.upsampled_size(height, width, self.crop)
            if (new_height, new_width) != (height, width):
                warnings.warn(
                    f"UniQA: image of {width}x{height} is smaller than a {self.crop}px crop; upsampled to "
                    f"{new_width}x{new_height} (the original implementation rejects such images)",
                    stacklevel=3,
                )
            count = 5 if processor.crop_mode == "five_crop" else processor.num_crops
            corners = crop_positions(new_height, new_width, self.crop, count, processor.crop_mode, processor.crop_seed)
            self._geometry[height, width] = (new_height, new_width, corners)
        return self._geometry[height, width]

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        processor = self.image_processor
        images = images.to(torch.promote_types(images.dtype, torch.float32))  # resampling and normalising in fp32+
        height, width = images.shape[-2:]
        new_height, new_width, corners = self.geometry(int(height), int(width))
        if (new_height, new_width) != (height, width):
            images = resize_like_pil(images, (new_height, new_width), processor.resample)
        size = self.crop
        crops = torch.stack([images[:, :, y : y + size, x : x + size] for y, x in corners], dim=1)
        if not processor.do_rescale:  # the PIL path then feeds raw 0..255 values
            crops = crops * 255
        elif processor.rescale_factor != 1 / 255:
            crops = crops * (255 * processor.rescale_factor)
        if processor.do_normalize:
            mean = torch.tensor(processor.image_mean, dtype=torch.float32).to(crops).view(3, 1, 1)
            std = torch.tensor(processor.image_std, dtype=torch.float32).to(crops).view(3, 1, 1)
            crops = (crops - mean) / std
        return {"pixel_values": crops}


TENSOR_PROCESSOR = UniQaTensorProcessor

__all__ = ["UniQaTensorProcessor", "TENSOR_PROCESSOR", "resize_like_pil"]
