"""The one image-loading path shared by the pipeline, the CLI, the benchmark runner and training.

Every input becomes an RGB `PIL.Image.Image`: EXIF orientation applied; grayscale, palette, RGBA/LA (composited
on white), CMYK, 16-bit and I;16/I/F converted; the first frame of animated images. Anything that cannot be
decoded raises `ImageLoadError`, which names the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".jp2", ".j2k",
)  # fmt: skip


class ImageLoadError(ValueError):
    """An image that cannot be used, with the offending file (or input) named in the message."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


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
