"""Hostile inputs (issue 16, points 1-3): every file gives an RGB image or one `ImageLoadError` line naming it;
declared sizes are checked before decoding, in any thread; non-finite pixels are refused on every input path;
no processor's memory grows with an image's aspect ratio.

The corpus is generated here (no committed binaries). Memory is measured in a subprocess (peak RSS growth, with
an address-space limit so that a regression fails fast instead of exhausting the machine).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_iqa.io import ImageLoadError, load_image
from tests.testing_utils import FIXTURES_DIR, REPO_ROOT, random_image


# ---------------------------------------------------------------------------------------------------------------
# Crafting files
# ---------------------------------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, *, valid_data: bool = True) -> bytes:
    """A 1-bit grayscale PNG of `width` x `height` black pixels: a few KB on disk whatever the declared size (a
    decompression bomb when large). With `valid_data=False` the pixel data is a stub."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    if valid_data:
        compressor = zlib.compressobj(9)
        row = b"\x00" * (1 + (width + 7) // 8)
        parts = [compressor.compress(row * min(height, 256)) for _ in range(0, height, 256)]
        data = b"".join(parts) + compressor.flush()
    else:
        data = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def build_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus; return {file name: "ok" | "error"}, the outcome each must have."""
    base = random_image(48, 32)
    gray = base.convert("L")
    out: dict[str, str] = {}

    def add(name: str, expected: str, image: Image.Image | None = None, data: bytes | None = None, **kwargs):
        path = folder / name
        if image is not None:
            _save(image, path, **kwargs)
        else:
            path.write_bytes(data)
        out[name] = expected

    add("rgb.jpg", "ok", base)
    add("gray.png", "ok", gray)
    add("bilevel.png", "ok", base.convert("1"))
    add("deep16.png", "ok", Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257))
    add("palette.png", "ok", base.convert("P"))
    palette = base.convert("P")
    add("palette_transparent.png", "ok", palette, transparency=0)
    add("palette_transparent.gif", "ok", palette, transparency=3)
    add("rgba.png", "ok", base.convert("RGBA"))
    add("la.png", "ok", gray.convert("LA"))
    add("cmyk.jpg", "ok", base.convert("CMYK"))
    add("cmyk.tif", "ok", base.convert("CMYK"))
    add("i16.tif", "ok", Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257))
    add("i32.tif", "ok", Image.fromarray(np.asarray(gray, dtype=np.int32) * 100, mode="I"))
    floats = np.asarray(gray, dtype=np.float32) / 255
    add("float.tif", "ok", Image.fromarray(floats, mode="F"))
    add("float_large.tif", "ok", Image.fromarray(floats * 1000, mode="F"))
    for name, value in (("nan", np.nan), ("inf", np.inf), ("neginf", -np.inf)):
        bad = floats.copy()
        bad[5, 7] = value
        add(f"float_{name}.tif", "error", Image.fromarray(bad, mode="F"))
    frames = [random_image(16, 16, seed=s) for s in range(3)]
    add("animated.gif", "ok", frames[0], save_all=True, append_images=frames[1:])
    add("animated.webp", "ok", frames[0], save_all=True, append_images=frames[1:], lossless=True)
    add("animated.png", "ok", frames[0], save_all=True, append_images=frames[1:])
    add("pages.tif", "ok", frames[0], save_all=True, append_images=frames[1:])
    # `frames` saved as MPO by Pillow 12.3 (the MPO writer of Pillow 10 and 11 makes files no reader accepts)
    add("mpo.jpg", "ok", data=(FIXTURES_DIR / "hostile" / "three_frames.mpo").read_bytes())
    add("lossless.webp", "ok", base.convert("RGBA"), lossless=True)
    add("bitmap.bmp", "ok", base)
    add("pixmap.ppm", "ok", base)
    sixteen = (np.asarray(gray, dtype=np.uint16) * 257).astype(">u2")  # written by hand: Pillow < 10.1 cannot
    add("graymap16.pgm", "ok", data=b"P5\n48 32\n65535\n" + sixteen.tobytes())
    add("one_pixel.png", "ok", Image.new("RGB", (1, 1), (9, 9, 9)))
    exif = Image.Exif()
    exif[0x0112] = 6
    add("orientation6.jpg", "ok", base, exif=exif.tobytes())
    big_exif = Image.Exif()
    big_exif[0x9286] = b"ASCII\x00\x00\x00" + b"x" * 60000  # UserComment: a 60 KB EXIF block
    add("huge_exif.jpg", "ok", base, exif=big_exif.tobytes())
    broken_exif = Image.Exif()
    broken_exif[0x0112] = 99  # an orientation that does not exist
    add("bad_orientation.jpg", "ok", base, exif=broken_exif.tobytes())

    jpeg = io.BytesIO()
    random_image(200, 200).save(jpeg, format="JPEG")
    png = io.BytesIO()
    random_image(200, 200).save(png, format="PNG")
    add("truncated.jpg", "error", data=jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    add("truncated.png", "error", data=png.getvalue()[: len(png.getvalue()) // 2])
    add("header_only.png", "error", data=png.getvalue()[:40])
    add("zero.jpg", "error", data=b"")
    add("text.jpg", "error", data=b"hello, I am not a picture\n" * 10)
    add("svg.jpg", "error", data=b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    add("pdf.jpg", "error", data=b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    add("eps.jpg", "error", data=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    add("heic.jpg", "error", data=b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    icon = io.BytesIO()
    base.save(icon, format="ICO")
    add("icon.png", "error", data=icon.getvalue())  # a format outside the supported list, whatever its name
    psd_like = io.BytesIO()
    base.save(psd_like, format="TGA")
    add("targa.jpg", "error", data=psd_like.getvalue())
    add("bomb.png", "error", data=png_declaring(12_000, 12_000))
    add("bomb_stub.png", "error", data=png_declaring(60_000, 60_000, valid_data=False))
    add("zero_width.png", "error", data=png_declaring(0, 10, valid_data=False))
    add("garbage_after_signature.png", "error", data=b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    add("jpeg_magic_only.jpg", "error", data=b"\xff\xd8\xff\xe0" + os.urandom(100))
    (folder / "folder.jpg").mkdir()
    out["folder.jpg"] = "error"
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    out["dangling.jpg"] = "error"
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    out["loop.jpg"] = "error"
    os.mkfifo(folder / "fifo.jpg")  # opening it would block forever
    out["fifo.jpg"] = "error"
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hostile")
    return folder, build_corpus(folder)


def test_corpus_gives_rgb_images_or_one_clean_line(corpus):
    folder, expected = corpus
    assert len(expected) >= 40
    outcomes = {}
    for name in sorted(expected):
        path = folder / name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow's own bomb warning is not what is tested here
                image = load_image(path)
        except ImageLoadError as error:
            message = str(error)
            assert message.startswith(f"{path}: ") and "\n" not in message and error.source == str(path), message
            outcomes[name] = "error"
        else:
            assert image.mode == "RGB" and image.width > 0 and image.height > 0, name
            np.asarray(image)  # the pixels are usable once the file is closed
            outcomes[name] = "ok"
    assert outcomes == expected


def test_corpus_pixels_are_the_pictures(corpus):
    folder, _ = corpus
    assert load_image(folder / "orientation6.jpg").size == (32, 48)  # EXIF rotation applied
    first = np.asarray(random_image(16, 16, seed=0), dtype=np.int16)
    for name in ("animated.webp", "animated.png", "pages.tif"):  # first frame, lossless formats
        assert np.abs(np.asarray(load_image(folder / name), dtype=np.int16) - first).max() <= 1, name
    gray = np.asarray(random_image(48, 32).convert("L"), dtype=np.int16)
    for name in ("i16.tif", "float.tif", "deep16.png", "graymap16.pgm"):  # deep data keeps its brightness
        assert np.abs(np.asarray(load_image(folder / name), dtype=np.int16)[..., 0] - gray).max() <= 1, name


def test_unsupported_formats_are_never_interpreted(corpus, monkeypatch):
    """A PostScript file named .jpg must not reach Pillow's EPS plug-in (which runs Ghostscript)."""
    from PIL import EpsImagePlugin

    def refuse(*args, **kwargs):
        raise AssertionError("the EPS plug-in was used")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", refuse)
    folder, _ = corpus
    with pytest.raises(ImageLoadError, match="not an image hf_iqa can read"):
        load_image(folder / "eps.jpg")


# ---------------------------------------------------------------------------------------------------------------
# Decompression bombs
# ---------------------------------------------------------------------------------------------------------------
def test_bomb_limit_does_not_depend_on_pillow_or_warnings_state(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(png_declaring(11_000, 11_000))  # 121 Mpx: Pillow only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # someone disabled Pillow's check
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ImageLoadError, match=r"bomb.png: image of 11000x11000 \(121,000,000 pixels\) is over"):
            load_image(tmp_path / "bomb.png")
        lazy = Image.open(tmp_path / "bomb.png")  # a PIL image handed in before it is decoded
        with pytest.raises(ImageLoadError, match="over the 89,478,485-pixel limit"):
            load_image(lazy)
        lazy.close()


def test_bombs_are_rejected_every_time_under_threads(tmp_path):
    bombs, normal = [], []
    for index in range(12):
        path = tmp_path / f"bomb{index}.png"
        path.write_bytes(png_declaring(11_000, 11_000))
        bombs.append(path)
    for index in range(24):
        normal.append(_save(random_image(64, 48, seed=index), tmp_path / f"ok{index}.png"))
    files = [item for pair in zip(normal[::2], normal[1::2], bombs) for item in pair]

    def outcome(path: Path) -> str:
        try:
            load_image(path)
            return "ok"
        except ImageLoadError as error:
            return "too large" if "pixel limit" in str(error) else str(error)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(8):
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = dict(zip(files, pool.map(outcome, files)))
            assert all(results[path] == "too large" for path in bombs), results
            assert all(results[path] == "ok" for path in normal), results


# ---------------------------------------------------------------------------------------------------------------
# Non-finite pixels, every input path
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_on_every_path(value):
    array = np.full((8, 8, 3), 0.5, dtype=np.float32)
    array[2, 3, 1] = value
    inputs = {
        "<array>": array,
        "<tensor>": torch.from_numpy(array),
        "<tensor>:bf16": torch.from_numpy(array).to(torch.bfloat16),
        "<tensor>:chw": torch.from_numpy(array).permute(2, 0, 1),
        "<PIL image>": Image.fromarray(array[..., 1], mode="F"),
    }
    for source, item in inputs.items():
        with pytest.raises(ImageLoadError, match="NaN or infinite") as info:
            load_image(item)
        assert str(info.value).startswith(source.split(":")[0]), source


def test_processors_refuse_non_finite_arrays():
    from hf_iqa.models.dog_iqa.image_processing_dog_iqa import DogIqaImageProcessor
    from hf_iqa.models.liqe.image_processing_liqe import LiqeImageProcessor
    from hf_iqa.models.qualiclip.image_processing_qualiclip import QualiClipImageProcessor
    from hf_iqa.models.uniqa.image_processing_uniqa import UniQaImageProcessor

    array = np.full((3, 256, 256), 0.5, dtype=np.float32)
    array[0, 0, 0] = np.nan
    for processor in (LiqeImageProcessor(), UniQaImageProcessor(), QualiClipImageProcessor(), DogIqaImageProcessor()):
        with pytest.raises(ValueError, match="NaN or infinite"):
            processor(array, do_rescale=False)


# ---------------------------------------------------------------------------------------------------------------
# Bounded cost: thin and huge images, measured in a subprocess
# ---------------------------------------------------------------------------------------------------------------
MEASURE = r"""
import importlib, json, resource, sys, warnings
warnings.simplefilter("ignore")
from PIL import Image
from hf_iqa.io import load_image
steps, files = json.loads(sys.argv[1]), sys.argv[2:]
processors = []
for name, kwargs in steps:
    if name == "load":
        processors.append(lambda image: image)
        continue
    module, cls = name.rsplit(".", 1)
    processor = getattr(importlib.import_module(module), cls)(**kwargs)
    processor(Image.new("RGB", (300, 260)), return_tensors="pt")  # warm-up: lazy imports, allocator pools
    processors.append(lambda image, processor=processor: processor(image, return_tensors="pt"))
def vm_size():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (3 << 30), hard))  # a regression fails fast
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = []
for process in processors:  # peak RSS only grows: step k's figure bounds steps 0..k
    outcomes = []
    for path in files:
        try:
            process(load_image(path))
            outcomes.append("ok")
        except MemoryError:
            outcomes.append("MemoryError")
        except ValueError as error:
            outcomes.append(str(error).splitlines()[0])
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    report.append({"grown": grown, "outcomes": outcomes})
print(json.dumps(report))
"""

PROCESSORS = {
    "load": ("load", {}),
    "liqe-official": ("hf_iqa.models.liqe.image_processing_liqe.LiqeImageProcessor", {}),
    "liqe-pyiqa-random": (
        "hf_iqa.models.liqe.image_processing_liqe.LiqeImageProcessor",
        {"protocol": "pyiqa", "patch_sampling": "random", "seed": 0},
    ),
    "uniqa": ("hf_iqa.models.uniqa.image_processing_uniqa.UniQaImageProcessor", {}),
    "uniqa-grid": ("hf_iqa.models.uniqa.image_processing_uniqa.UniQaImageProcessor", {"crop_mode": "grid"}),
    "qualiclip": ("hf_iqa.models.qualiclip.image_processing_qualiclip.QualiClipImageProcessor", {}),
    "qualiclip-resize": (
        "hf_iqa.models.qualiclip.image_processing_qualiclip.QualiClipImageProcessor",
        {"do_resize": True, "size": {"shortest_edge": 512}},
    ),
    "dog-iqa": ("hf_iqa.models.dog_iqa.image_processing_dog_iqa.DogIqaImageProcessor", {}),
    "mplug-owl3": ("hf_iqa.models.mplug_owl3.image_processing_mplug_owl3.MplugOwl3ImageProcessor", {}),
}


def measure(steps: list[str], files: list[Path]) -> dict[str, dict]:
    """{step: {"grown": peak RSS growth in bytes so far, "outcomes": one per file}}, from one subprocess."""
    env = dict(os.environ)
    root = str(REPO_ROOT)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", MEASURE, json.dumps([PROCESSORS[step] for step in steps]), *map(str, files)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(zip(steps, json.loads(result.stdout.strip().splitlines()[-1])))


THIN_CEILING = 200 << 20  # preprocessing does not grow with the aspect ratio (a 40000x2 LIQE input took > 8 GB)


def test_thin_images_cost_little_memory_in_every_processor(tmp_path):
    files = []
    for width, height in ((40_000, 2), (2, 40_000), (10_000, 8), (1, 60_000)):
        pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
        files.append(_save(Image.fromarray(pixels), tmp_path / f"thin_{width}x{height}.png"))
        assert files[-1].stat().st_size < 1 << 20  # inputs under 1 MB
    steps = [step for step in PROCESSORS if step != "load"]
    report = measure(steps, files)
    for step, result in report.items():
        assert "MemoryError" not in result["outcomes"] and result["grown"] < THIN_CEILING, (step, result)
    # 40000x2 with the short side to 512 would be 5 Gpx: refused up front; at native size it is cheap
    assert all("budget" in outcome for outcome in report["qualiclip-resize"]["outcomes"]), report
    for step in set(steps) - {"qualiclip", "qualiclip-resize"}:
        assert report[step]["outcomes"] == ["ok"] * len(files), (step, report[step])


# documented in hf_iqa/io.py, the processors and README ("### Limits")
BYTES_PER_PIXEL = 14  # loading (any mode) plus LIQE / UniQA / Dog-IQA / mPLUG-Owl3 preprocessing
QUALICLIP_BYTES_PER_PIXEL = 48  # float32 output at native size plus the backend's temporaries


def test_huge_images_cost_at_most_the_documented_bytes_per_pixel(tmp_path):
    width, height = 4000, 3000
    path = _save(Image.new("RGBA", (width, height), (10, 20, 30, 128)), tmp_path / "huge.png")  # the costly mode
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(12_000, 12_000))  # 144 Mpx: over our limit, under Pillow's hard one
    assert path.stat().st_size < 1 << 20 and bomb.stat().st_size < 1 << 20
    report = measure(["load", "liqe-official", "uniqa", "qualiclip"], [path, bomb])
    for step, result in report.items():
        per_pixel = QUALICLIP_BYTES_PER_PIXEL if step == "qualiclip" else BYTES_PER_PIXEL
        assert result["grown"] < per_pixel * width * height + (32 << 20), (step, result)
        assert result["outcomes"][0] == "ok" and "-pixel limit" in result["outcomes"][1], (step, result)
