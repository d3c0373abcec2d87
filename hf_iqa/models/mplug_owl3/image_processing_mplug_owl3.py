"""mPLUG-Owl3 image processor (PIL/numpy only): the adaptive "cut" into square tiles plus a global view.

For each image (tile size S, 384 for the published model):

1. Pick a grid (rows, cols) from `ANCHOR_GRIDS`: the first maximising `100 * shape_iou + iou`, where `iou` compares
   the anchor box `[0, 0, S*cols, S*rows]` with the image box and `shape_iou` compares it with the box of the image's
   aspect ratio at the anchor's width. Integer areas and float32 arithmetic, as in the original.
2. Resize the whole image (PIL bicubic) to `(S*cols, S*rows)` and cut it into S² tiles, row-major.
3. Append the global view: the image resized (PIL bicubic, aspect ratio not kept) to S².
4. Normalise: `(x / 255 - 0.5) / 0.5` in float32.

Cost is bounded whatever the input: at most 6 tiles plus the global view are resampled (`ANCHOR_GRIDS`), never a
copy larger than the tiles, besides one uint8 copy of the input for Pillow.

With `cut_enable=False` only the global view is returned. `image_grids` holds `(rows, cols)` per image, `(0, 0)` when
not cut, so an image has `rows * cols + 1` tiles either way; `placeholder_text` gives the text that replaces the
image's `<|image|>` in the prompt.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

IMAGE_TOKEN = "<|image|>"
# (rows, cols) candidates in the original's order ("grid_squ_6"); ties go to the earliest.
ANCHOR_GRIDS = ((2, 2), (1, 3), (1, 4), (3, 1), (4, 1), (2, 3), (3, 2))


def _iou(inter: int, area_a: int, area_b: int) -> np.float32:
    union = np.float32(area_a + area_b - inter)
    return np.float32(inter) / (union + np.float32(1e-5))


def select_grid(width: int, height: int, tile_size: int = 384) -> tuple[int, int]:
    """The (rows, cols) grid the original picks for an image of `width` x `height` pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect = np.float32(height / width)
    scores = []
    for rows, cols in ANCHOR_GRIDS:
        anchor_w, anchor_h = tile_size * cols, tile_size * rows
        anchor_area = anchor_w * anchor_h
        iou = _iou(min(anchor_w, width) * min(anchor_h, height), anchor_area, width * height)
        # the image's shape at the anchor's width; float32 product truncated to an integer, as the original does
        shape_h = int(np.float32(aspect * np.float32(anchor_w)))
        shape_iou = _iou(anchor_w * min(anchor_h, shape_h), anchor_area, anchor_w * shape_h)
        scores.append(np.float32(shape_iou * np.float32(100)) + iou)
    return ANCHOR_GRIDS[int(np.argmax(np.asarray(scores, dtype=np.float32)))]


def placeholder_text(rows: int, cols: int) -> str:
    """The text that replaces one image's `<|image|>`: one `<|image|>` per tile, global view last."""
    if rows == 0 and cols == 0:
        return IMAGE_TOKEN
    lines = [" ".join(f"subimg({r},{c}){IMAGE_TOKEN}" for c in range(cols)) for r in range(rows)]
    return f"Cut to {rows} rows {cols} columns with a global view\n" + "\n".join(lines) + f"\nglobal_view{IMAGE_TOKEN}"


class MplugOwl3ImageProcessorKwargs(ImagesKwargs, total=False):
    cut_enable: bool


class MplugOwl3ImageProcessor(PilBackend):
    r"""
    Returns `pixel_values` (total_tiles, 3, S, S), the tiles of all images in order (each image's sub-images
    row-major, then its global view), and `image_grids` (images, 2) with `(rows, cols)`, `(0, 0)` when not cut.

    cut_enable (`bool`, *optional*, defaults to `True`):
        Cut each image into an adaptive grid of tiles plus a global view (the published model's setting); `False`
        gives the global view only.
    """

    valid_kwargs = MplugOwl3ImageProcessorKwargs
    model_input_names = ["pixel_values", "image_grids"]
    size = {"height": 384, "width": 384}
    resample = PILImageResampling.BICUBIC
    do_normalize = True
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    do_convert_rgb = True
    cut_enable = True
    # for callers that build prompts without the processor class (e.g. backbone adapters)
    image_token = IMAGE_TOKEN
    anchor_grids = ANCHOR_GRIDS
    placeholder_text = staticmethod(placeholder_text)

    def _preprocess(
        self,
        images: list[np.ndarray],
        size,
        resample,
        image_mean,
        image_std,
        do_normalize: bool,
        cut_enable: bool,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        if size.height != size.width:
            raise ValueError(f"mPLUG-Owl3 tiles are square; got size {size.height}x{size.width}")
        tile = size.height
        mean = np.asarray(image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(image_std, dtype=np.float32)[:, None, None]
        tiles, grids = [], []
        for array in images:
            if array.dtype != np.uint8:
                raise ValueError(
                    f"MplugOwl3ImageProcessor resizes uint8 images only (PIL images or uint8 arrays), got {array.dtype}"
                )
            image = Image.fromarray(np.ascontiguousarray(np.moveaxis(array, 0, -1)))
            if cut_enable:
                rows, cols = select_grid(image.width, image.height, tile)
                resized = np.asarray(image.resize((tile * cols, tile * rows), resample))
                for r in range(rows):
                    for c in range(cols):
                        tiles.append(resized[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile])
            else:
                rows, cols = 0, 0
            tiles.append(np.asarray(image.resize((tile, tile), resample)))
            grids.append((rows, cols))
        pixels = np.stack(tiles).transpose(0, 3, 1, 2).astype(np.float32)
        # Same float32 operations as the original's ToTensor + Normalize, so the values match bit for bit.
        pixels = pixels / np.float32(255)
        if do_normalize:
            pixels = (pixels - mean) / std
        return BatchFeature(
            {"pixel_values": pixels, "image_grids": np.asarray(grids, dtype=np.int64).reshape(-1, 2)},
            tensor_type=return_tensors,
        )


__all__ = ["MplugOwl3ImageProcessor", "select_grid", "placeholder_text", "ANCHOR_GRIDS", "IMAGE_TOKEN"]
