"""Synthetic image degradations in the KADID-10k / ARNIQA style: 24 distortions in 7 groups, 5 levels each.

QualiCLIP's self-supervised recipe degrades pristine crops at increasing intensity and trains the image encoder to
rank them; this module provides those degradations with numpy and PIL only (no torchvision, OpenCV or
scikit-image), deterministic under a `numpy.random.Generator`.

    >>> from hf_iqa import degradations
    >>> degraded = degradations.apply(image, "gaublur", level=3, rng=0)      # PIL in -> PIL out
    >>> degradations.list_degradations("noise")
    ['whitenoise', 'whitenoiseCC', 'impulsenoise', 'multnoise']

Where the values come from
--------------------------
The distortion names, groups and the per-level parameter values are those of ARNIQA's degradation model
(Agnolucci et al., WACV 2024, `miccunifi/ARNIQA:utils/utils_data.py`, which QualiCLIP reuses), themselves derived
from the KADID-10k distortions (Lin, Hosu & Saupe, 2019). `DEGRADATIONS[name].source` says per distortion whether
its level values are the paper's ("arniqa") or ours ("ours"); the docstring of each function says what it does and
which constants are ours. The implementations are our own (written from the descriptions, not ported), work on
RGB (ARNIQA feeds BGR-ordered tensors to its Lab/HSV conversions, which we do not reproduce), and guarantee that
intensity increases with the level: two ARNIQA level tables do not (`meanshift` and `lincontrchange` alternate the
sign of the change so that levels 2 and 3 change the image equally), so those two use our values.

Determinism: every random choice (noise, angles, patch positions, shift directions) comes from the `rng` argument.
Passing generators seeded identically at every level gives the same random choices at every level, so only the
intensity changes — this is what `degrade_at_levels` does and what the level-ranking recipe wants.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hf_iqa.degradation_ops import (
    _bilinear_sample,
    _disk_kernel,
    _encode_decode,
    _filter2d,
    _gaussian_kernel,
    _hsv_to_rgb,
    _lab_to_rgb,
    _midpoint_curve,
    _motion_kernel,
    _pchip,
    _rgb_to_hsv,
    _rgb_to_lab,
    _rgb_to_ycbcr,
    _shift_replicate,
    _ycbcr_to_rgb,
)

NUM_LEVELS = 5

ImageLike = Image.Image | np.ndarray
RngLike = np.random.Generator | int | Sequence[int] | None

# ----------------------------------------------------------------------------------------------------------------
# the 24 distortions: f(image float32 HxWx3 in [0, 1], value, rng) -> image
# ----------------------------------------------------------------------------------------------------------------


def gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma` pixels, kernel 2*ceil(2σ)+1 (ARNIQA)."""
    return _filter2d(x, _gaussian_kernel(sigma))


def lens_blur(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Defocus: convolution with a uniform disk of `radius` pixels."""
    return _filter2d(x, _disk_kernel(radius))


def motion_blur(x: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Linear motion of `length` pixels in a random direction (uniform in [0°, 180°), as ARNIQA)."""
    return _filter2d(x, _motion_kernel(length, rng.uniform(0, 180)))


def color_diffusion(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Colour bleeding: the Lab chroma (a*, b*) is blurred with σ = 1.5·amount + 2 and scaled by `amount`
    (ARNIQA's constants), lightness kept."""
    lab = _rgb_to_lab(x)
    lab[..., 1:] = _filter2d(lab[..., 1:], _gaussian_kernel(1.5 * amount + 2)) * amount
    return _lab_to_rgb(lab)


def color_shift(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Misregistered green channel: G is translated by `amount` pixels in a random direction (positive quadrant,
    as ARNIQA) and blended in where the image has edges (gradient magnitude blurred with σ = 4, normalised, clipped
    to its 1st-99th percentiles — ARNIQA's constants; we use true percentiles)."""
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    grad_y = np.diff(gray, axis=0, append=gray[-1:])
    grad_x = np.diff(gray, axis=1, append=gray[:, -1:])
    edges = _filter2d(np.sqrt(grad_x**2 + grad_y**2), _gaussian_kernel(4))
    lo, hi = edges.min(), edges.max()
    if hi > lo:
        edges = (edges - lo) / (hi - lo)
    edges = np.clip(edges, np.percentile(edges, 1), np.percentile(edges, 99))
    direction = rng.random(2)
    dy, dx = np.round(direction / max(np.linalg.norm(direction), 1e-12) * amount).astype(int)
    y = x.copy()
    y[..., 1] = _shift_replicate(x[..., 1], dy, dx) * edges + x[..., 1] * (1 - edges)
    return y


def color_saturation_hsv(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """HSV saturation multiplied by `factor` (< 1 desaturates; 0 is grey; negative pushes towards the complementary
    hue, ARNIQA's last level)."""
    hsv = _rgb_to_hsv(x)
    hsv[..., 1] *= factor
    return np.clip(_hsv_to_rgb(hsv), 0, 1)


def color_saturation_lab(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Lab chroma (a*, b*) multiplied by `factor` (> 1 over-saturates)."""
    lab = _rgb_to_lab(x)
    lab[..., 1:] *= factor
    return _lab_to_rgb(lab)


def jpeg2000_compression(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """JPEG 2000 at compression ratio `ratio` (PIL/OpenJPEG, `quality_mode="rates"`, LRCP, up to 8 resolutions as
    ARNIQA; fewer for images too small for 8)."""
    resolutions = max(1, min(8, int(math.log2(min(x.shape[:2]))) - 1))
    return _encode_decode(
        x,
        format="JPEG2000",
        quality_mode="rates",
        quality_layers=[float(ratio)],
        num_resolutions=resolutions,
        progression="LRCP",
    )


def jpeg_compression(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Baseline JPEG at `quality` (PIL/libjpeg, 4:2:0 chroma subsampling)."""
    return _encode_decode(x, format="JPEG", quality=int(quality))


def white_noise(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of `variance` on each RGB value."""
    return np.clip(x + rng.standard_normal(x.shape, np.float32) * math.sqrt(variance), 0, 1)


def white_noise_color_component(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of `variance` in YCbCr (luma and both chroma channels)."""
    noisy = _rgb_to_ycbcr(x) + rng.standard_normal(x.shape, np.float32) * math.sqrt(variance)
    return np.clip(_ycbcr_to_rgb(noisy), 0, 1)


def impulse_noise(x: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: `density`·(H·W·3) random RGB values set to 1 (half) or 0 (half)."""
    y = x.copy()
    count = int(density * x.size)
    flat = rng.integers(0, x.size, count)
    y.reshape(-1)[flat[: count // 2]] = 1.0
    y.reshape(-1)[flat[count // 2 :]] = 0.0
    return y


def multiplicative_noise(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """Speckle: x + x·n with n Gaussian of `variance`."""
    return np.clip(x * (1 + rng.standard_normal(x.shape, np.float32) * math.sqrt(variance)), 0, 1)


def brighten(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Tone curve through (0.5, 0.5 + amount/2) applied to RGB and to Lab lightness, mixed 2:1 (ARNIQA's recipe)."""
    mid = 0.5 + amount / 2
    lab = _rgb_to_lab(x)
    lab[..., 0] = _midpoint_curve(lab[..., 0] / 100, mid) * 100
    return (2 * _midpoint_curve(x, mid) + _lab_to_rgb(lab)) / 3


def darken(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Tone curve through (0.5, 0.5 - amount/2) applied to RGB (ARNIQA)."""
    return _midpoint_curve(x, 0.5 - amount / 2)


def mean_shift(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """All values shifted by ±`amount` (the sign drawn from `rng`), clipped. Level values are ours: ARNIQA's
    [0, 0.08, -0.08, 0.15, -0.15] make level 1 the identity and levels 2/3 (and 4/5) equally strong."""
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return np.clip(x + sign * amount, 0, 1)


def jitter(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Pixel scatter: 5 rounds of resampling at positions displaced by Gaussian offsets of std `amount` pixels
    (ARNIQA: 5 rounds)."""
    h, w = x.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    y = x
    for _ in range(5):
        shift = rng.standard_normal((2, h, w), np.float32) * amount
        y = _bilinear_sample(y, rows - shift[0], cols - shift[1])
    return y.astype(np.float32)


def non_eccentricity_patch(x: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """`count` 16×16 patches copied to a position up to ±8 pixels away (patch 16, radius 16: ARNIQA). Sources are
    kept `radius` away from the border when the image is large enough."""
    patch, radius = 16, 16
    h, w = x.shape[:2]
    if h < patch or w < patch:
        return x.copy()
    y = x.copy()
    lo_r, hi_r = (radius, h - patch - radius) if h >= patch + 2 * radius else (0, h - patch)
    lo_c, hi_c = (radius, w - patch - radius) if w >= patch + 2 * radius else (0, w - patch)
    for _ in range(int(count)):
        top, left = int(rng.integers(lo_r, hi_r + 1)), int(rng.integers(lo_c, hi_c + 1))
        offset = np.round((rng.random(2) - 0.5) * radius).astype(int)
        to_top = int(np.clip(top + offset[0], 0, h - patch))
        to_left = int(np.clip(left + offset[1], 0, w - patch))
        y[to_top : to_top + patch, to_left : to_left + patch] = y[top : top + patch, left : left + patch]
    return y


def pixelate(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Nearest-neighbour down- and up-sampling by z = 0.95 - strength^0.6 (ARNIQA's formula)."""
    h, w = x.shape[:2]
    z = 0.95 - strength**0.6
    small_h, small_w = max(1, int(h * z)), max(1, int(w * z))
    down_r = np.floor((np.arange(small_h) + 0.5) * h / small_h).astype(int)
    down_c = np.floor((np.arange(small_w) + 0.5) * w / small_w).astype(int)
    up_r = np.floor((np.arange(h) + 0.5) * small_h / h).astype(int)
    up_c = np.floor((np.arange(w) + 0.5) * small_w / w).astype(int)
    return x[down_r[up_r][:, None], down_c[up_c][None, :]]


def quantization(x: np.ndarray, levels: float, rng: np.random.Generator) -> np.ndarray:
    """Each RGB value quantised to `levels` uniform bins and reconstructed at the bin centre. ARNIQA also uses
    uniform thresholds (KADID used Otsu's multi-threshold); the bin-centre reconstruction is ours."""
    n = int(levels)
    return ((np.minimum(np.floor(x * n), n - 1) + 0.5) / n).astype(np.float32)


def color_block(x: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """`count` 32×32 blocks of uniformly random colour at random positions (ARNIQA's patch size)."""
    h, w = x.shape[:2]
    size_h, size_w = min(32, h), min(32, w)
    y = x.copy()
    for _ in range(int(count)):
        color = rng.random(3).astype(np.float32)
        top, left = int(rng.integers(0, h - size_h + 1)), int(rng.integers(0, w - size_w + 1))
        y[top : top + size_h, left : left + size_w] = color
    return y


def high_sharpen(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Unsharp masking of Lab lightness: L + amount·(L - G*L), G a 13×13 Gaussian of σ = 6 (ARNIQA's constants)."""
    lab = _rgb_to_lab(x)
    lightness = lab[..., 0]
    lab[..., 0] = lightness + amount * (lightness - _filter2d(lightness, _gaussian_kernel(6, size=13)))
    return _lab_to_rgb(lab)


def linear_contrast_change(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """S-shaped tone curve through (0.3, 0.25 - amount/4), (0.5, 0.5), (0.7, 0.75 + amount/4) (ARNIQA's knots,
    our monotone interpolation). Level values are ours, contrast increase only: ARNIQA's
    [0, 0.15, -0.4, 0.3, -0.6] move the 0.3 knot by 0.05, 0.0875, 0.05, 0.125, 0.1 (not monotone); contrast
    decrease is covered by `nonlincontrchange`."""
    knots_x = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
    knots_y = np.array([0.0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1.0])
    return np.clip(_pchip(knots_x, knots_y, x), 0, 1).astype(np.float32)


def non_linear_contrast_change(x: np.ndarray, offset: float, rng: np.random.Generator) -> np.ndarray:
    """Contrast compression into [0.5 - offset, 0.5 + offset] (ARNIQA's function and values, a linear map despite
    its name)."""
    return (0.5 + 2 * offset * (x - 0.5)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Degradation:
    name: str
    group: str
    values: tuple[float, ...]  # the parameter at levels 1..5
    function: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    source: str  # "arniqa": ARNIQA's level values; "ours": chosen by us (see the function's docstring)


_TABLE = [
    # brightness_change
    ("brighten", "brightness_change", (0.1, 0.2, 0.4, 0.7, 1.1), brighten, "arniqa"),
    ("darken", "brightness_change", (0.05, 0.1, 0.2, 0.4, 0.8), darken, "arniqa"),
    ("meanshift", "brightness_change", (0.04, 0.08, 0.12, 0.16, 0.2), mean_shift, "ours"),
    # blur
    ("gaublur", "blur", (0.1, 0.5, 1, 2, 5), gaussian_blur, "arniqa"),
    ("lensblur", "blur", (1, 2, 4, 6, 8), lens_blur, "arniqa"),
    ("motionblur", "blur", (1, 2, 4, 6, 10), motion_blur, "arniqa"),
    # spatial
    ("jitter", "spatial", (0.05, 0.1, 0.2, 0.5, 1), jitter, "arniqa"),
    ("noneccpatch", "spatial", (20, 40, 60, 80, 100), non_eccentricity_patch, "arniqa"),
    ("pixelate", "spatial", (0.01, 0.05, 0.1, 0.2, 0.5), pixelate, "arniqa"),
    ("quantization", "spatial", (20, 16, 13, 10, 7), quantization, "arniqa"),
    ("colorblock", "spatial", (2, 4, 6, 8, 10), color_block, "arniqa"),
    # noise
    ("whitenoise", "noise", (0.001, 0.002, 0.003, 0.005, 0.01), white_noise, "arniqa"),
    ("whitenoiseCC", "noise", (0.0001, 0.0005, 0.001, 0.002, 0.003), white_noise_color_component, "arniqa"),
    ("impulsenoise", "noise", (0.001, 0.005, 0.01, 0.02, 0.03), impulse_noise, "arniqa"),
    ("multnoise", "noise", (0.001, 0.005, 0.01, 0.02, 0.05), multiplicative_noise, "arniqa"),
    # color
    ("colordiff", "color", (1, 3, 6, 8, 12), color_diffusion, "arniqa"),
    ("colorshift", "color", (1, 3, 6, 8, 12), color_shift, "arniqa"),
    ("colorsat1", "color", (0.4, 0.2, 0.1, 0, -0.4), color_saturation_hsv, "arniqa"),
    ("colorsat2", "color", (1, 2, 3, 6, 9), color_saturation_lab, "arniqa"),
    # compression
    ("jpeg2000", "compression", (16, 32, 45, 120, 170), jpeg2000_compression, "arniqa"),
    ("jpeg", "compression", (43, 36, 24, 7, 4), jpeg_compression, "arniqa"),
    # sharpness_contrast
    ("highsharpen", "sharpness_contrast", (1, 2, 3, 6, 12), high_sharpen, "arniqa"),
    ("lincontrchange", "sharpness_contrast", (0.0, 0.15, 0.3, 0.45, 0.6), linear_contrast_change, "ours"),
    ("nonlincontrchange", "sharpness_contrast", (0.4, 0.3, 0.2, 0.1, 0.05), non_linear_contrast_change, "arniqa"),
]

DEGRADATIONS: dict[str, Degradation] = {row[0]: Degradation(*row) for row in _TABLE}
GROUPS: dict[str, tuple[str, ...]] = {}
for _d in DEGRADATIONS.values():
    GROUPS[_d.group] = GROUPS.get(_d.group, ()) + (_d.name,)

# ARNIQA draws the level of each distortion with probabilities from a half-Gaussian (mean 0, std 2.5) over the
# level indices 0..num_levels-1, favouring mild levels.
_LEVEL_STD = 2.5


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------


def list_degradations(group: str | None = None) -> list[str]:
    """Names of all degradations, or of one group (see `GROUPS`)."""
    if group is None:
        return list(DEGRADATIONS)
    if group not in GROUPS:
        raise ValueError(f"unknown degradation group {group!r}; known groups: {', '.join(GROUPS)}")
    return list(GROUPS[group])


def _make_rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(name: str, level: int) -> Degradation:
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATIONS)}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= NUM_LEVELS:
        raise ValueError(f"degradation level must be an integer in 1..{NUM_LEVELS}, got {level!r} (for {name!r})")
    return DEGRADATIONS[name]


def _to_float(image: ImageLike) -> tuple[np.ndarray, str]:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255, "pil"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a PIL image or a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image array must have shape (height, width, 3), got {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255, "uint8"
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image array must be uint8 or float in [0, 1], got dtype {image.dtype}")
    if image.size and (image.min() < 0 or image.max() > 1):
        raise ValueError("float image arrays must have values in [0, 1]")
    return image.astype(np.float32), "float"


def _from_float(image: np.ndarray, kind: str) -> ImageLike:
    image = np.clip(image, 0, 1).astype(np.float32)
    if kind == "float":
        return image
    as_uint8 = np.round(image * 255).astype(np.uint8)
    return Image.fromarray(as_uint8, "RGB") if kind == "pil" else as_uint8


def apply(image: ImageLike, name: str, level: int, rng: RngLike = None) -> ImageLike:
    """Degrade `image` with distortion `name` at `level` (1 = mildest, 5 = strongest).

    `image`: a PIL image, a uint8 (H, W, 3) array or a float (H, W, 3) array in [0, 1]; the result has the same
    kind (float arrays stay float, unquantised). `rng`: a `numpy.random.Generator` or a seed (None = fresh entropy).
    """
    degradation = _check(name, level)
    array, kind = _to_float(image)
    out = degradation.function(array, degradation.values[level - 1], _make_rng(rng))
    return _from_float(out, kind)


def apply_sequence(image: ImageLike, steps: Iterable[tuple[str, int]], rng: RngLike = None) -> ImageLike:
    """Apply several (name, level) degradations in order, as ARNIQA's composition does."""
    steps = list(steps)
    for name, level in steps:
        _check(name, level)
    generator = _make_rng(rng)
    array, kind = _to_float(image)
    for name, level in steps:
        degradation = DEGRADATIONS[name]
        array = np.clip(degradation.function(array, degradation.values[level - 1], generator), 0, 1)
    return _from_float(array, kind)


def sample_degradations(
    rng: RngLike = None, max_distortions: int = 1, groups: Sequence[str] | None = None
) -> list[str]:
    """Draw 1..`max_distortions` distinct groups (uniformly many, ARNIQA's model) and one distortion from each."""
    generator = _make_rng(rng)
    pool = list(GROUPS) if groups is None else list(groups)
    unknown = [g for g in pool if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown degradation group(s) {unknown}; known groups: {', '.join(GROUPS)}")
    if not 1 <= max_distortions <= len(pool):
        raise ValueError(f"max_distortions must be in 1..{len(pool)}, got {max_distortions}")
    count = int(generator.integers(1, max_distortions + 1))
    chosen = generator.choice(len(pool), size=count, replace=False)
    return [str(generator.choice(GROUPS[pool[i]])) for i in chosen]


def random_degradation(
    image: ImageLike, rng: RngLike = None, max_distortions: int = 4, num_levels: int = NUM_LEVELS
) -> tuple[ImageLike, list[tuple[str, int]]]:
    """ARNIQA's degradation model: a random ordered composition of distortions from distinct groups, each at a level
    drawn with half-Gaussian probabilities (std 2.5) over levels 1..`num_levels`. Returns the image and the steps."""
    if not 1 <= num_levels <= NUM_LEVELS:
        raise ValueError(f"num_levels must be in 1..{NUM_LEVELS}, got {num_levels}")
    generator = _make_rng(rng)
    names = sample_degradations(generator, max_distortions)
    weights = np.exp(-(np.arange(num_levels) ** 2) / (2 * _LEVEL_STD**2))
    levels = generator.choice(num_levels, size=len(names), p=weights / weights.sum()) + 1
    steps = [(name, int(level)) for name, level in zip(names, levels)]
    return apply_sequence(image, steps, generator), steps


def degrade_at_levels(
    image: ImageLike, names: Sequence[str], levels: Iterable[int] = range(1, NUM_LEVELS + 1), seed: int = 0
) -> list[ImageLike]:
    """The same composition `names` applied at each level in `levels`, with identical random choices (noise
    pattern, angle, patch positions) at every level, so only the intensity differs — for level-ranking losses."""
    return [apply_sequence(image, [(name, level) for name in names], np.random.default_rng(seed)) for level in levels]
