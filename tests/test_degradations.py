"""hf_iqa.degradations: the 24 KADID/ARNIQA-style distortions, 5 levels each, deterministic, stronger with level."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hf_iqa import degradations

EXPECTED_GROUPS = {
    "brightness_change": ["brighten", "darken", "meanshift"],
    "blur": ["gaublur", "lensblur", "motionblur"],
    "spatial": ["jitter", "noneccpatch", "pixelate", "quantization", "colorblock"],
    "noise": ["whitenoise", "whitenoiseCC", "impulsenoise", "multnoise"],
    "color": ["colordiff", "colorshift", "colorsat1", "colorsat2"],
    "compression": ["jpeg2000", "jpeg"],
    "sharpness_contrast": ["highsharpen", "lincontrchange", "nonlincontrchange"],
}
# patch-based distortions: a later patch may paste over an earlier one with colours closer to the original, so
# their strength is measured by the area they change, which can only grow with the number of patches
AREA_MEASURED = {"colorblock", "noneccpatch"}


def natural_image(seed: int, size: int = 224) -> np.ndarray:
    """A photo-like float image: smooth colour field, solid shapes with edges, mild sensor noise."""
    rng = np.random.default_rng(seed)
    canvas = Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for _ in range(12):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(max(2, size // 20), max(3, size // 3), 2)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=fill)
    array = np.asarray(canvas, np.float32) / 255
    return np.clip(array + rng.normal(0, 0.02, array.shape), 0, 1).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return np.inf if mse == 0 else 10 * np.log10(1 / mse)


def test_24_distortions_in_7_groups_with_5_levels():
    assert {g: degradations.list_degradations(g) for g in degradations.GROUPS} == EXPECTED_GROUPS
    assert len(degradations.list_degradations()) == 24
    for d in degradations.DEGRADATIONS.values():
        assert len(d.values) == degradations.NUM_LEVELS and d.source in ("arniqa", "ours")
    # a few of ARNIQA's level tables, verbatim (qualiclip.md §8.1)
    assert degradations.DEGRADATIONS["gaublur"].values == (0.1, 0.5, 1, 2, 5)
    assert degradations.DEGRADATIONS["jpeg"].values == (43, 36, 24, 7, 4)
    assert degradations.DEGRADATIONS["whitenoise"].values == (0.001, 0.002, 0.003, 0.005, 0.01)
    assert {n for n, d in degradations.DEGRADATIONS.items() if d.source == "ours"} == {"meanshift", "lincontrchange"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intensity_increases_with_level_for_every_distortion(seed):
    image = natural_image(seed)
    for name in degradations.list_degradations():
        outputs = [degradations.apply(image, name, level, rng=seed) for level in range(1, 6)]
        if name in AREA_MEASURED:
            changed = [float(np.mean(np.any(np.abs(o - image) > 1e-6, axis=-1))) for o in outputs]
            assert all(a < b for a, b in zip(changed, changed[1:])), (name, changed)
        else:
            quality = [psnr(o, image) for o in outputs]
            assert all(a > b for a, b in zip(quality, quality[1:])), (name, quality)
        assert psnr(outputs[-1], image) < 40, name  # the strongest level is clearly visible


def test_deterministic_under_a_seed_and_random_across_seeds():
    image = natural_image(5, size=96)
    for name in degradations.list_degradations():
        first = degradations.apply(image, name, 4, rng=np.random.default_rng(11))
        again = degradations.apply(image, name, 4, rng=np.random.default_rng(11))
        np.testing.assert_array_equal(first, again, err_msg=name)
    random_ones = ["motionblur", "colorshift", "whitenoise", "impulsenoise", "jitter", "noneccpatch", "colorblock"]
    for name in random_ones:
        a = degradations.apply(image, name, 5, rng=1)
        b = degradations.apply(image, name, 5, rng=2)
        assert not np.array_equal(a, b), name


def test_input_kinds_are_preserved(make_image):
    pil = make_image(80, 64, seed=3)
    out = degradations.apply(pil, "jpeg", 5, rng=0)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (80, 64)
    as_uint8 = degradations.apply(np.asarray(pil), "gaublur", 3, rng=0)
    assert as_uint8.dtype == np.uint8 and as_uint8.shape == (64, 80, 3)
    np.testing.assert_array_equal(as_uint8, np.asarray(degradations.apply(pil, "gaublur", 3, rng=0)))
    as_float = degradations.apply(np.asarray(pil, np.float32) / 255, "whitenoise", 2, rng=0)
    assert as_float.dtype == np.float32 and 0 <= as_float.min() and as_float.max() <= 1
    gray = degradations.apply(pil.convert("L"), "darken", 2, rng=0)
    assert gray.mode == "RGB"


def test_small_images_do_not_break_any_distortion():
    tiny = natural_image(0, size=24)
    for name in degradations.list_degradations():
        for level in (1, 5):
            out = degradations.apply(tiny, name, level, rng=0)
            assert out.shape == tiny.shape and np.isfinite(out).all(), name


def test_blur_and_noise_behave_as_named():
    image = natural_image(1)
    blurred = degradations.apply(image, "gaublur", 5, rng=0)
    # blur removes high frequencies: the mean absolute horizontal gradient drops a lot
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(np.diff(image, axis=1)).mean()
    flat = np.full((64, 64, 3), 0.5, np.float32)
    noisy = degradations.apply(flat, "whitenoise", 5, rng=0)
    assert np.std(noisy - flat) == pytest.approx(np.sqrt(0.01), rel=0.05)
    salt_pepper = degradations.apply(flat, "impulsenoise", 5, rng=0)
    assert np.mean(salt_pepper != 0.5) == pytest.approx(0.03, abs=0.005)
    quantized = degradations.apply(image, "quantization", 5, rng=0)
    assert len(np.unique(quantized)) == 7
    gray = degradations.apply(image, "colorsat1", 4, rng=0)  # saturation factor 0
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-5)


def test_unknown_names_and_levels_are_clear_errors():
    image = natural_image(0, size=32)
    with pytest.raises(ValueError, match="unknown degradation 'blurr'; known: brighten"):
        degradations.apply(image, "blurr", 1)
    for level in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="level must be an integer in 1..5"):
            degradations.apply(image, "jpeg", level)
    with pytest.raises(ValueError, match="unknown degradation group"):
        degradations.list_degradations("colour")
    with pytest.raises(ValueError, match="values in \\[0, 1\\]"):
        degradations.apply(image * 255, "jpeg", 1)
    with pytest.raises(ValueError, match="shape \\(height, width, 3\\)"):
        degradations.apply(image[..., 0], "jpeg", 1)


def test_random_composition_and_levels_api():
    image = natural_image(2, size=64)
    out, steps = degradations.random_degradation(image, rng=4, max_distortions=4)
    again, same_steps = degradations.random_degradation(image, rng=4, max_distortions=4)
    assert steps == same_steps and 1 <= len(steps) <= 4
    np.testing.assert_array_equal(out, again)
    groups = [degradations.DEGRADATIONS[name].group for name, _ in steps]
    assert len(set(groups)) == len(groups)  # one distortion per group
    # ARNIQA's half-Gaussian level distribution favours mild levels
    levels = [lvl for seed in range(300) for _, lvl in degradations.random_degradation(image[:8, :8], rng=seed)[1]]
    counts = np.bincount(levels, minlength=6)[1:]
    assert counts[0] > counts[-1] and all(counts > 0)

    ladder = degradations.degrade_at_levels(image, ["whitenoise"], seed=9)
    assert len(ladder) == 5
    # the same noise pattern at every level, only scaled: residuals are positively proportional
    r1, r5 = (ladder[0] - image).ravel(), (ladder[4] - image).ravel()
    assert np.corrcoef(r1, r5)[0, 1] > 0.95
