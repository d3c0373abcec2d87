"""The one image-loading path shared by the pipeline, the CLI, the benchmark runner and training.

Every input becomes an RGB `PIL.Image.Image`: EXIF orientation applied (`exif_transpose=False`: the stored pixel
layout, as the benchmarks' official evaluations read them); grayscale, palette, RGBA/LA (composited
on white), CMYK, 16-bit and I;16/I/F converted; the first frame of animated images. Anything that cannot be
used raises `ImageLoadError`, one line naming the file and the problem.

Bounded cost: a file's declared size (its header, read before any pixel is decoded) must not exceed
`max_pixels` (default `MAX_PIXELS`, 89,478,485 pixels, Pillow's own warning threshold). This is hf_iqa's own
comparison, so it holds in any thread (Pillow's bomb check is a process-wide warning) and applies to every input
(files, PIL images before `load()`, arrays, tensors). Loading peaks at ~10 bytes per pixel (RGBA composited on
white) and keeps 4 (Pillow's RGB); with any hf_iqa processor's preprocessing ~14 bytes per pixel: under 1.3 GB
for any input at the default limit (tests/test_hostile_inputs.py measures it). Raise the limit for trusted files
with `hf_iqa.io.MAX_PIXELS = N` (every later load) or `load_image(..., max_pixels=N)` (0: no limit); a limit
above Pillow's `Image.MAX_IMAGE_PIXELS` raises that too, so Pillow's own check does not override it.

Only raster formats are opened (`FORMATS`): a PostScript, PDF, SVG or HEIC file named `.jpg` is refused, never
handed to an external interpreter. Encoded bytes (tar members, dataset cells, uploads) pass the same gate:
`load_image(data)` with at most `MAX_BYTES` held, and `read_bounded` reads an archive member with that bound. Pixels must be finite: NaN or infinite values (float TIFFs, arrays, tensors,
PIL images in mode F) are refused. Any decoder failure becomes one `ImageLoadError` line.
"""

from __future__ import annotations

import io
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".jp2", ".j2k",
)  # fmt: skip

# Pillow plug-ins allowed to open a file, whatever its name: the formats of IMAGE_EXTENSIONS ("JPEG" opens MPO too).
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "TIFF", "WEBP", "GIF", "PPM", "JPEG2000")

MAX_PIXELS = 89_478_485
"""Largest image (width x height, as declared by the file) any input may have; see the module docstring."""

MAX_BYTES = 256 * 1024 * 1024
"""Largest encoded image read into memory (tar members, dataset cells, uploads, bytes): a member or cell that
declares more is refused unread, and no more than this is ever read from one (a sparse or lying member included).
Files on disk are not read whole (Pillow reads them as it decodes): the pixel limit bounds them."""


class ImageLoadError(ValueError):
    """An image that cannot be used, with the offending file (or input) named in the message."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


def _limit(max_pixels: int | None) -> float:
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    return math.inf if limit is None or limit <= 0 else limit


def _check_size(width: int, height: int, limit: float, source: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageLoadError(source, f"image has no pixels ({width}x{height})")
    if width * height > limit:
        raise ImageLoadError(
            source,
            f"image of {width}x{height} ({width * height:,} pixels) is over the {int(limit):,}-pixel limit "
            "(a decompression bomb, or a trusted file: raise it with --max-pixels, hf_iqa.io.MAX_PIXELS or max_pixels)",
        )


def _check_finite(array: np.ndarray, source: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ImageLoadError(source, "image contains NaN or infinite pixel values")


def _to_rgb(image: Image.Image, source: str) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB the way a user would expect to see the picture, with as few full-size
    copies as possible (peak ~9 bytes per pixel besides the decoded image)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if image.mode not in ("RGBA", "LA"):
            image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))  # composite on white
        return background
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return _deep_to_rgb(image, source)
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _deep_to_rgb(image: Image.Image, source: str) -> Image.Image:
    """16-bit, 32-bit integer and float images to 8 bits, in blocks of rows so no full-size float copy exists."""
    high = image.getextrema()[1]
    if image.mode.startswith("I;16") or (image.mode == "I" and high > 255):
        factor = np.float32(255.0 / 65535.0)  # 16-bit data: scale the full 16-bit range to 8 bits
    elif image.mode == "F" and high <= 1.0:
        factor = np.float32(255.0)
    else:
        factor = np.float32(1.0)
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    step = max(1, (1 << 22) // width)
    for top in range(0, height, step):
        block = np.asarray(image.crop((0, top, width, min(height, top + step))))
        _check_finite(block, source)
        block = block.astype(np.float32) * factor
        out[top : top + step] = np.clip(np.rint(block, out=block), 0, 255, out=block)
    return Image.fromarray(out, mode="L").convert("RGB")


def _from_array(array: np.ndarray, source: str, limit: float) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] > 4:
        array = np.moveaxis(array, 0, -1)  # channels-first input
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(source, f"expected an HxW, HxWx3 or HxWx4 array, got shape {tuple(array.shape)}")
    if array.size == 0:
        raise ImageLoadError(source, "empty array")
    _check_size(array.shape[1], array.shape[0], limit, source)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        _check_finite(array, source)
        if array.min() < 0 or array.max() > 1:
            raise ImageLoadError(source, "float arrays must hold values in [0, 1]")
        array = np.rint(array.astype(np.float32) * np.float32(255.0)).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = np.rint(array / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ImageLoadError(source, f"integer array of dtype {array.dtype} has values outside [0, 255]")
        array = array.astype(np.uint8)
    else:
        raise ImageLoadError(source, f"unsupported array dtype {array.dtype}")
    return _to_rgb(Image.fromarray(array), source)


def load_image(
    image: str | os.PathLike | bytes | Image.Image | np.ndarray,
    *,
    source: str | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    exif_transpose: bool = True,
) -> Image.Image:
    """Return `image` (a path, encoded bytes, PIL image, numpy array or torch tensor) as an RGB PIL image, or raise
    `ImageLoadError`: the one gate every image byte passes. `max_pixels` (default `MAX_PIXELS`; 0 or negative: no
    limit) caps width x height; `max_bytes` (default `MAX_BYTES`) the size of encoded bytes held in memory.
    `exif_transpose` (files, bytes and PIL images): turn the picture as its EXIF orientation tag says, as a photo
    viewer shows it; False keeps the stored pixel layout, as the benchmarks' official evaluations read them (PIL
    open + `.convert("RGB")`)."""
    limit = _limit(max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        name = source or "<bytes>"
        size = len(image)
        if size == 0:
            raise ImageLoadError(name, "file is empty (0 bytes)")
        byte_limit = MAX_BYTES if max_bytes is None else max_bytes
        if size > byte_limit:
            raise ImageLoadError(name, f"encoded image of {size:,} bytes is over the {byte_limit:,}-byte limit")
        return _decode(io.BytesIO(image), name, limit, exif_transpose)
    if isinstance(image, Image.Image):
        name = source or "<PIL image>"
        _check_size(image.width, image.height, limit, name)  # before `load()`: a lazily opened file is not decoded
        try:
            image.load()
            turned = ImageOps.exif_transpose(image) if exif_transpose else image.copy()
            return _to_rgb(turned, name)  # a copy: the caller's image is left as it is
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            if isinstance(error, ImageLoadError):
                raise
            raise ImageLoadError(name, f"cannot decode image ({error})") from None
    if isinstance(image, np.ndarray):
        return _from_array(image, source or "<array>", limit)
    if hasattr(image, "numpy") and hasattr(image, "dim"):  # a torch tensor, without importing torch here
        try:
            tensor = image.detach().cpu()
            if tensor.is_floating_point() and str(tensor.dtype) not in ("torch.float32", "torch.float64"):
                tensor = tensor.float()  # bfloat16 has no numpy dtype; float16 would round differently
            array = tensor.numpy()
        except Exception as error:  # sparse, meta, quantised, ... tensors
            raise ImageLoadError(
                source or "<tensor>", f"cannot read tensor ({type(error).__name__}: {error})"
            ) from None
        return _from_array(array, source or "<tensor>", limit)
    if not isinstance(image, (str, os.PathLike)):
        raise ImageLoadError(source or repr(type(image)), "expected a file path, a PIL image or a numpy array")
    return _load_file(Path(image), source or str(image), limit, exif_transpose)


def _load_file(path: Path, name: str, limit: float, exif_transpose: bool = True) -> Image.Image:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageLoadError(name, "no such file" if not path.is_symlink() else "broken symbolic link") from None
    except OSError as error:
        raise ImageLoadError(name, f"cannot read file ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(name, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageLoadError(name, "not a regular file (a device, FIFO or socket)")
    if info.st_size == 0:
        raise ImageLoadError(name, "file is empty (0 bytes)")
    return _decode(path, name, limit, exif_transpose)


def read_bounded(stream: Any, declared: int, source: str, max_bytes: int | None = None) -> bytes:
    """The bytes of an archive member or similar stream that declares `declared` bytes, read with a bound: a
    declaration over `max_bytes` (default `MAX_BYTES`) is refused unread, and no more than the bound is read."""
    limit = MAX_BYTES if max_bytes is None else max_bytes
    if declared > limit:
        raise ImageLoadError(source, f"declares {declared:,} bytes, over the {limit:,}-byte limit for one image")
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImageLoadError(source, f"holds more than the {limit:,}-byte limit for one image")
    return data


def _decode(file: Path | io.BytesIO, name: str, limit: float, exif_transpose: bool = True) -> Image.Image:
    """Decode a file or in-memory bytes through the raster-only formats, checking the declared size first, and turn
    it by its EXIF orientation unless `exif_transpose=False`."""
    if limit > (Image.MAX_IMAGE_PIXELS or math.inf):
        Image.MAX_IMAGE_PIXELS = int(limit) if limit != math.inf else None  # a raised hf_iqa limit governs
    try:
        with Image.open(file, formats=FORMATS) as opened:
            _check_size(opened.width, opened.height, limit, name)  # the declared size, nothing decoded yet
            opened.seek(0)  # first frame of animated GIF/WebP/APNG/TIFF
            _check_size(opened.width, opened.height, limit, name)
            opened.load()
            if exif_transpose:
                ImageOps.exif_transpose(opened, in_place=True)
            return _to_rgb(opened, name)  # the pixels stay valid once the file is closed
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own check, before ours could run
        raise ImageLoadError(name, f"image is over Pillow's decompression-bomb pixel limit ({error})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(
            name, f"not an image hf_iqa can read (unknown, unsupported or corrupt; it reads {', '.join(FORMATS)})"
        ) from None
    except MemoryError:
        raise ImageLoadError(name, "out of memory while decoding") from None
    except OSError as error:
        message = error.strerror if error.filename else str(error)  # the file is already named once
        if "truncated" in message.lower() or "broken data stream" in message.lower():
            raise ImageLoadError(name, f"truncated or corrupt image data ({message})") from None
        raise ImageLoadError(name, f"cannot read image ({message})") from None
    except Exception as error:  # a corrupt file can make a decoder fail in any way: still one line, no traceback
        raise ImageLoadError(name, f"corrupt image ({type(error).__name__}: {error})") from None


def find_images(paths: list[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files (folders: by extension, recursively)."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            found.append(path)  # a missing or non-image file is reported when it is loaded
    return found
