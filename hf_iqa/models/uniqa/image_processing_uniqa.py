"""UniQA image processor (PIL/numpy backend; no torchvision): a fixed number of square crops per image.

UniQA scores an image as the mean over 10 uniformly random 224x224 crops of the native-resolution picture
(upstream `random_crop_test`). Upstream draws the positions from the global torch RNG without a seed, one position
per batch, so its scores change from run to run and with the batch. Here crops are cut per image and their
positions are a pure function of (`crop_seed`, height, width, crop index):

- "random" (default): a local `torch.Generator` seeded with `crop_seed` draws, for crop k = 0..N-1, the top then
  the left offset with `torch.randint` — the order upstream draws them in. So an image always gets the same crops,
  whatever the batch or the global RNG state, and they equal upstream's after `torch.manual_seed(crop_seed)`.
- "five_crop": the centre then the top-left, top-right, bottom-left and bottom-right corners, in the order of
  upstream's (unused) `random_5crop_test`; always 5 crops, whatever `num_crops`.
- "grid": no randomness: an r x c grid (r * c = `num_crops`, the factorisation whose shape best matches the
  image's aspect ratio) of evenly spaced crops from corner to corner.

Pixels are divided by 255 (as `ToTensor` does) and normalised with the OpenAI CLIP mean/std; cropping before
normalising is equivalent to upstream's order. Images with a side shorter than the crop (upstream crashes) are
upsampled, bicubic, so the short side equals the crop size, with a warning. Output: `pixel_values` of shape
(batch, num_crops, 3, crop, crop), so any images batch together.

Bounded cost, whatever the aspect ratio: the upsampled image is never built. Positions are drawn on the
upsampled size and each crop is resampled (PIL bicubic, `box=`) from the part of the original it covers (equal to
cropping a whole-image resize to within one 8-bit level), so a 40000x2 image costs 10 crops, not the 3 GB of a
224 x 4,480,000 picture. Memory: the input, one uint8 copy of it for Pillow when it must be upsampled, and the
output (num_crops x 602 KB).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs

CROP_MODES = ("random", "grid", "five_crop")


class UniQaImageProcessorKwargs(ImagesKwargs, total=False):
    num_crops: int
    crop_mode: str
    crop_seed: int


def crop_positions(height: int, width: int, size: int, num_crops: int, mode: str, seed: int) -> list[tuple[int, int]]:
    """Top-left (top, left) of each crop: a pure function of its arguments (see the module docstring)."""
    if mode == "random":
        generator = torch.Generator().manual_seed(int(seed))
        positions = []
        for _ in range(num_crops):
            top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
            positions.append((top, left))
        return positions
    if mode == "five_crop":
        bottom, right = height - size, width - size
        return [(bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right)]
    if mode == "grid":
        shapes = [(rows, num_crops // rows) for rows in range(1, num_crops + 1) if num_crops % rows == 0]
        rows, cols = min(shapes, key=lambda rc: (abs(math.log(rc[1] / rc[0] * height / width)), rc[0]))
        tops = np.linspace(0, height - size, rows).round().astype(int)
        lefts = np.linspace(0, width - size, cols).round().astype(int)
        return [(int(top), int(left)) for top in tops for left in lefts]
    raise ValueError(f"UniQaImageProcessor: crop_mode must be one of {CROP_MODES}, got {mode!r}")


class UniQaImageProcessor(PilBackend):
    r"""
    Args:
        crop_size (`dict`, defaults to `{"height": 224, "width": 224}`): crop side (square).
        num_crops (`int`, defaults to 10): crops per image; the model averages their scores.
        crop_mode (`str`, defaults to "random"): "random" (upstream protocol, seeded), "grid" or "five_crop"
            (deterministic; "five_crop" always gives 5 crops).
        crop_seed (`int`, defaults to 0): seed of the "random" positions.
    """

    valid_kwargs = UniQaImageProcessorKwargs
    model_input_names = ["pixel_values"]
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    resample = PILImageResampling.BICUBIC  # only for images smaller than a crop
    do_resize = False  # upstream scores the native resolution
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    crop_size = {"height": 224, "width": 224}
    num_crops = 10
    crop_mode = "random"
    crop_seed = 0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._check(self.crop_size, self.num_crops, self.crop_mode, self.crop_seed)

    @staticmethod
    def _check(crop_size, num_crops, crop_mode, crop_seed) -> int:
        """Validate the crop settings; return the crop side."""
        if crop_size is None or crop_size.height != crop_size.width or not crop_size.height:
            raise ValueError(f"UniQaImageProcessor: crop_size must be square, got {crop_size}")
        if not isinstance(num_crops, int) or num_crops < 1:
            raise ValueError(f"UniQaImageProcessor: num_crops must be a positive integer, got {num_crops!r}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"UniQaImageProcessor: crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
        if not isinstance(crop_seed, int):
            raise ValueError(f"UniQaImageProcessor: crop_seed must be an integer, got {crop_seed!r}")
        return int(crop_size.height)

    @staticmethod
    def upsampled_size(height: int, width: int, size: int) -> tuple[int, int]:
        """(height, width) once the short side is upsampled to `size`; unchanged when it is already >= `size`."""
        if min(height, width) >= size:
            return height, width
        scale = size / min(height, width)
        return max(size, round(height * scale)), max(size, round(width * scale))

    def _upsampled_crops(self, image: np.ndarray, height: int, width: int, size: int, positions, resample):
        """The crops at `positions` of `image` upsampled to `height` x `width`, each resampled from the region it
        covers: the upsampled image is never materialised (a thin image would need gigabytes)."""
        _, source_height, source_width = image.shape
        if image.dtype != np.uint8:
            raise ValueError(
                f"UniQaImageProcessor: an image of {source_width}x{source_height} is smaller than the {size}px crop "
                "and can only be upsampled from uint8 pixels; pass a PIL image or a uint8 array"
            )
        warnings.warn(
            f"UniQA: image of {source_width}x{source_height} is smaller than a {size}px crop; upsampled to "
            f"{width}x{height} (the original implementation rejects such images)",
            stacklevel=4,
        )
        source = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
        resample = resample if resample is not None else self.resample
        scale_y, scale_x = source_height / height, source_width / width
        crops = []
        for top, left in positions:
            box = (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
            crops.append(np.asarray(source.resize((size, size), resample, box=box)).transpose(2, 0, 1))
        return crops

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        resample=None,
        crop_size=None,
        num_crops: int | None = None,
        crop_mode: str | None = None,
        crop_seed: int | None = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        size = self._check(crop_size, num_crops, crop_mode, crop_seed)
        mean = np.asarray(image_mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(image_std, dtype=np.float32).reshape(3, 1, 1)
        count = 5 if crop_mode == "five_crop" else num_crops
        pixel_values = np.zeros((len(images), count, 3, size, size), dtype=np.float32)
        for index, image in enumerate(images):
            if image.shape[0] != 3:
                raise ValueError(f"UniQaImageProcessor expects RGB images, got {image.shape[0]} channels")
            if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
                raise ValueError("UniQaImageProcessor: the image contains NaN or infinite pixel values")
            _, source_height, source_width = image.shape
            height, width = self.upsampled_size(source_height, source_width, size)
            positions = crop_positions(height, width, size, count, crop_mode, crop_seed)
            if (height, width) == (source_height, source_width):
                crops = [image[:, top : top + size, left : left + size] for top, left in positions]
            else:
                crops = self._upsampled_crops(image, height, width, size, positions, resample)
            for slot, crop in enumerate(crops):
                crop = crop.astype(np.float32)
                if do_rescale:  # divide like ToTensor does, so pixels match the original bit for bit
                    crop = crop / np.float32(1.0 / rescale_factor)
                if do_normalize:
                    crop = (crop - mean) / std
                pixel_values[index, slot] = crop
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)


__all__ = ["UniQaImageProcessor", "crop_positions", "CROP_MODES"]
