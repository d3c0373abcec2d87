"""Numeric helpers of `hf_iqa.degradations`: filtering kernels, colour spaces, tone curves, resampling and codec
round trips, on float32 HxWx3 images in [0, 1] (numpy and PIL only)."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------------------------------------------
# numeric helpers: filtering, colour spaces, tone curves, resampling (float32 HxWx3 images in [0, 1])
# ----------------------------------------------------------------------------------------------------------------


def _gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """2-D normalised Gaussian; default size 2*ceil(2*sigma)+1 as in ARNIQA/KADID (MATLAB `fspecial`)."""
    size = size or 2 * math.ceil(2 * sigma) + 1
    half = (size - 1) / 2
    axis = np.arange(size) - half
    g = np.exp(-(axis**2) / (2 * sigma**2))
    kernel = np.outer(g, g)
    return kernel / kernel.sum()


def _disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """Uniform disk of the given radius with anti-aliased edges (each pixel weighted by the fraction of its area
    inside the circle, estimated on a `supersample`² grid). Ours; approximates MATLAB's `fspecial('disk')`."""
    half = math.ceil(radius)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    coords = np.arange(-half, half + 1)
    fine = (coords[:, None] + offsets[None, :]).reshape(-1)
    inside = (fine[:, None] ** 2 + fine[None, :] ** 2) <= radius**2
    n = 2 * half + 1
    kernel = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    return kernel / kernel.sum()


def _motion_kernel(length: float, angle_degrees: float) -> np.ndarray:
    """A line segment of `length` pixels through the centre at `angle_degrees`, rasterised by bilinear splatting
    of densely sampled points. Ours (same intent as MATLAB's `fspecial('motion')`)."""
    half = math.ceil(length / 2) + 1
    size = 2 * half + 1
    kernel = np.zeros((size, size), np.float64)
    t = np.linspace(-length / 2, length / 2, max(2, int(length * 16)))
    theta = math.radians(angle_degrees)
    xs = half + t * math.cos(theta)
    ys = half - t * math.sin(theta)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(kernel, (y0 + dy, x0 + dx), weight)
    return kernel / kernel.sum()


def _filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel of an HxW[xC] image with an odd-sized kernel, replicating the border (FFT based, so
    large kernels cost the same as small ones)."""
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    squeeze = image.ndim == 2
    if squeeze:
        image = image[..., None]
    h, w = image.shape[:2]
    padded = np.pad(image, ((ry, ry), (rx, rx), (0, 0)), mode="edge")
    ph, pw = padded.shape[:2]
    # place the kernel's centre at (0, 0) so the circular convolution is not shifted; the padding keeps the
    # wrap-around out of the interior we crop back
    full = np.zeros((ph, pw), np.float64)
    full[:kh, :kw] = kernel
    full = np.roll(full, (-ry, -rx), axis=(0, 1))
    spectrum = np.fft.rfft2(full)[..., None]
    out = np.fft.irfft2(np.fft.rfft2(padded, axes=(0, 1)) * spectrum, s=(ph, pw), axes=(0, 1))
    out = out[ry : ry + h, rx : rx + w].astype(np.float32)
    return out[..., 0] if squeeze else out


_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_D65_WHITE = np.array([0.950456, 1.0, 1.088754])


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> CIE L*a*b* (D65), L in [0, 100]."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _XYZ_FROM_RGB.T / _D65_WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lightness = 116 * f[..., 1] - 16
    return np.stack([lightness, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) -> sRGB, clipped to [0, 1]."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787) * _D65_WHITE
    linear = np.clip(xyz @ _RGB_FROM_XYZ.T, 0, None)
    rgb = np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
    return np.clip(rgb, 0, 1).astype(np.float32)


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    maxc, minc = rgb.max(-1), rgb.min(-1)
    delta = maxc - minc
    saturation = np.where(maxc > 0, delta / np.where(maxc > 0, maxc, 1), 0)
    safe = np.where(delta > 0, delta, 1)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hue = np.select(
        [delta == 0, maxc == r, maxc == g],
        [0.0, ((g - b) / safe) % 6, (b - r) / safe + 2],
        default=(r - g) / safe + 4,
    )
    return np.stack([hue / 6, saturation, maxc], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `_rgb_to_hsv`; accepts saturations outside [0, 1] (needed by `colorsat1`'s negative factor)."""
    h, s, v = hsv[..., 0] * 6, hsv[..., 1], hsv[..., 2]
    sector = np.floor(h).astype(int) % 6
    frac = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    channels = [np.choose(sector, [c[i] for c in choices]) for i in range(3)]
    return np.stack(channels, axis=-1)


def _rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr with chroma centred at 0.5."""
    y = rgb @ np.array([0.299, 0.587, 0.114])
    return np.stack([y, (rgb[..., 2] - y) * 0.564 + 0.5, (rgb[..., 0] - y) * 0.713 + 0.5], axis=-1)


def _ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 0.5, ycc[..., 2] - 0.5
    r = y + 1.403 * cr
    b = y + 1.773 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return np.stack([r, g, b], axis=-1)


def _midpoint_curve(x: np.ndarray, mid: float) -> np.ndarray:
    """The tone curve through (0, 0), (0.5, mid), (1, 1): with three knots MATLAB's `spline` (used by KADID's
    `curves`) is this parabola. Clipped to [0, 1]."""
    return np.clip((2 - 4 * mid) * x**2 + (4 * mid - 1) * x, 0, 1)


def _pchip(knots_x: np.ndarray, knots_y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch–Carlson slopes). Ours: KADID uses a not-a-knot
    spline, which overshoots; a monotone curve keeps the tone order of the pixels."""
    h = np.diff(knots_x)
    delta = np.diff(knots_y) / h
    slopes = np.zeros_like(knots_y)
    for k in range(1, len(knots_x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            slopes[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    slopes[0], slopes[-1] = delta[0], delta[-1]
    k = np.clip(np.searchsorted(knots_x, x, side="right") - 1, 0, len(h) - 1)
    t = (x - knots_x[k]) / h[k]
    h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * knots_y[k] + h10 * h[k] * slopes[k] + h01 * knots_y[k + 1] + h11 * h[k] * slopes[k + 1]


def _bilinear_sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample an HxWxC image at fractional (rows, cols), clamping coordinates to the border."""
    h, w = image.shape[:2]
    rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    top = image[r0, c0] * (1 - fc) + image[r0, c1] * fc
    bottom = image[r1, c0] * (1 - fc) + image[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _shift_replicate(channel: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate a 2-D array by (dy, dx) pixels, filling the uncovered border by replication."""
    h, w = channel.shape
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return channel[rows[:, None], cols[None, :]]


def _encode_decode(image: np.ndarray, **save_kwargs) -> np.ndarray:
    pil = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, **save_kwargs)
    buffer.seek(0)
    with Image.open(buffer, formats=[save_kwargs["format"]]) as decoded:  # the format just written
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255
