"""hf_iqa.QualityMetric: scores equal to the processor + model path, gradients w.r.t. pixels, the loss.

Tiny random models built from configs; real photos from scikit-image. Parity is against the PIL image processors
(the independent path: numpy/PIL, one image at a time) followed by the model, and against `hf_iqa.pipeline`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from transformers import CLIPConfig

import hf_iqa
from hf_iqa import QualityMetric
from hf_iqa.models.dog_iqa import DogIqaConfig
from hf_iqa.models.liqe import LiqeConfig, LiqeImageProcessor, LiqeModel
from hf_iqa.models.liqe.tensor_processing_liqe import LiqeTensorProcessor
from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipImageProcessor, QualiClipModel
from hf_iqa.models.qualiclip.tensor_processing_qualiclip import QualiClipTensorProcessor
from hf_iqa.models.uniqa import UniQaConfig, UniQaImageProcessor, UniQaModel
from hf_iqa.models.uniqa.tensor_processing_uniqa import UniQaTensorProcessor
from tests.testing_utils import REPO_ROOT

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]
FAMILIES = ["liqe-official", "liqe-pyiqa", "qualiclip", "uniqa"]
CLIP_STD_MIN = 0.26130258
# Documented tolerance where the PIL processor resizes (README, "Quality as a loss or reward"): PIL rounds its
# uint8 output after each 1-D pass (<= 1/255 bilinear, <= 1.4/255 bicubic); the tensor path does not.
PIXEL_TOLERANCE = {"bilinear": 1.0 / 255 + 1e-6, "bicubic": 1.4 / 255}
SCORE_TOLERANCE = 2e-3  # as a fraction of the score range


# --------------------------------------------------------------------------------------------------------------
# Tiny random models
# --------------------------------------------------------------------------------------------------------------
def tiny_clip_config(image_size: int, patch_size: int) -> CLIPConfig:
    return CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         hidden_act="quick_gelu", eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=patch_size, hidden_act="quick_gelu"),
        projection_dim=16, logit_scale_init_value=3.0,  # exp = 20: random 16-d embeddings at 100 saturate softmaxes
    )  # fmt: skip


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every weight off its structured init (zero prompt features, zero BN gammas, unit norms) so that scores
    depend on the picture; prompt features become random unit vectors."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or name.endswith("logit_scale"):
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("prompt_text_features"):
                tensor.copy_(noise / noise.norm(dim=-1, keepdim=True))
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            elif not name.endswith("score_level"):
                tensor.add_(0.05 * noise)
    return model.eval()


def build(family: str, window: int = 224, seed: int = 0):
    """(model, PIL image processor) of one family; `window` = LIQE window / UniQA crop side."""
    torch.manual_seed(seed)
    if family.startswith("liqe"):
        model = LiqeModel(LiqeConfig(clip_config=tiny_clip_config(window, window // 4 if window < 224 else 32)))
        processor = LiqeImageProcessor(protocol=family.split("-")[1], patch_size=window)
    elif family == "qualiclip":
        vision = dict(layers=[1, 1, 1, 1], width=8, projection_dim=16, num_attention_heads=2, image_size=64)
        model = QualiClipModel(QualiClipConfig(vision_config=vision, projection_dim=16, prompt_logit_scale=20.0))
        processor = QualiClipImageProcessor()
    else:
        clip = tiny_clip_config(window, window // 4 if window < 224 else 32)
        model = UniQaModel(UniQaConfig(clip_config=clip, adapter_tasks=["quality"]))
        processor = UniQaImageProcessor(crop_size={"height": window, "width": window}, num_crops=4)
    return randomize(model, seed), processor


@pytest.fixture(autouse=True)
def _full_precision_on_gpus():
    """cuDNN convolutions default to TF32 on recent GPUs (~1e-3 relative): parity at 1e-5 needs full fp32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def models():
    return {family: build(family) for family in FAMILIES}


def photo(name: str, height: int | None = None, width: int | None = None) -> np.ndarray:
    """A scikit-image sample photo (H, W, 3) uint8, cropped to (height, width) from the top-left ("mosaic": the
    astronaut tiled, a large picture with detail everywhere)."""
    image = np.tile(skimage.data.astronaut(), (3, 3, 1)) if name == "mosaic" else getattr(skimage.data, name)()
    image = image[..., :3]
    return np.ascontiguousarray(image[:height, :width])


def as_tensor(*images: np.ndarray) -> torch.Tensor:
    """uint8 pictures -> (B, 3, H, W) float32 in [0, 1], divided like ToTensor and the processors do."""
    return torch.stack([torch.from_numpy(image).permute(2, 0, 1) for image in images]).float() / 255


def processor_scores(model, processor, *images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(**processor([Image.fromarray(i) for i in images], return_tensors="pt")).scores


def span(model) -> float:
    low, high = model.config.score_range
    return high - low


# --------------------------------------------------------------------------------------------------------------
# Scores equal the PIL path
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", FAMILIES)
def test_scores_equal_processor_and_model_without_resize(models, family, device):
    model, processor = models[family]
    images = [photo("astronaut", 384, 512), photo("coffee", 384, 512)]  # no protocol resizes 512x384
    metric = QualityMetric(model, image_processor=processor, device=device)
    with torch.no_grad():  # the PIL path, on the same device
        reference = processor([Image.fromarray(i) for i in images], return_tensors="pt")
        expected = model(**{k: v.to(device) if isinstance(v, torch.Tensor) else [t.to(device) for t in v]
                            for k, v in reference.items()}).scores.cpu()  # fmt: skip
    pixels = as_tensor(*images)
    inputs = metric.preprocess(pixels.to(device))
    for key, value in inputs.items():
        reference_value = reference[key]
        if isinstance(reference_value, list):
            reference_value = torch.stack(reference_value)
        assert torch.equal(value.cpu(), reference_value), key  # bit-identical model inputs
    scores = metric(pixels.to(device))
    assert scores.shape == (2,) and scores.dtype == torch.float32 and scores.device.type == device
    torch.testing.assert_close(scores.cpu(), expected, rtol=0, atol=1e-5)
    assert (expected[0] - expected[1]).abs() > 1e-3  # the photos score differently: the check has teeth
    model.to("cpu")


def test_scores_equal_the_pipeline_for_saved_folders(models, tmp_path):
    """From a folder, like a user: processor settings saved with the model (LIQE protocol) are honoured."""
    image = photo("hubble_deep_field", 872, 1000)  # pyiqa protocol: no resize at any size
    model, _ = models["liqe-pyiqa"]
    model.save_pretrained(tmp_path)
    LiqeImageProcessor(protocol="pyiqa").save_pretrained(tmp_path)
    metric = QualityMetric(str(tmp_path))
    assert metric.image_processor.protocol == "pyiqa"
    expected = hf_iqa.pipeline(model=str(tmp_path))(Image.fromarray(image))["score"]
    assert metric(as_tensor(image)).item() == pytest.approx(expected, abs=1e-5)
    official = QualityMetric(str(tmp_path), protocol="official")  # options reach the processor
    assert abs(official(as_tensor(image)).item() - expected) > 1e-4  # 1000x872 is resized there: scores differ
    coarse = QualityMetric(str(tmp_path), model_kwargs={"num_patches": 3}, num_patches=3)  # and model_kwargs
    assert coarse.model.config.num_patches == 3 and coarse.preprocess(as_tensor(image))["patch_mask"].shape == (1, 3)


@pytest.mark.parametrize(
    "family, processor_options, image",
    [
        ("liqe-official", {}, ("hubble_deep_field", 872, 1000)),  # both sides >= 768: short side -> 768, bilinear
        ("liqe-official", {}, ("retina", 1411, 1411)),
        ("liqe-official", {}, ("mosaic", 1100, 1400)),  # textured everywhere: 1400x1100 -> 977x768
        ("liqe-pyiqa", {}, ("chelsea", 200, 300)),  # below a window: upsampled, bilinear
        ("qualiclip", {"do_resize": True}, ("coffee", 400, 600)),  # qualiclip+-spaq: short side 512, bilinear
        ("uniqa", {}, ("chelsea", 200, 300)),  # below a crop: upsampled, bicubic
    ],
)
def test_scores_close_to_processor_where_it_resizes(models, family, processor_options, image):
    model, processor = models[family]
    if processor_options:
        processor = type(processor)(**{**processor.to_dict(), **processor_options})
    picture = photo(*image)
    metric = QualityMetric(model, image_processor=processor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inputs = metric.preprocess(as_tensor(picture))
        reference = processor(Image.fromarray(picture), return_tensors="pt")
    assert len({str(w.message) for w in caught}) == (1 if min(picture.shape[:2]) < 224 else 0)  # one warning text
    ref_pixels = reference["pixel_values"]
    ref_pixels = torch.stack(ref_pixels) if isinstance(ref_pixels, list) else ref_pixels
    assert inputs["pixel_values"].shape == ref_pixels.shape
    difference = (inputs["pixel_values"] - ref_pixels).abs().max().item() * CLIP_STD_MIN
    assert 0 < difference <= PIXEL_TOLERANCE["bicubic" if family == "uniqa" else "bilinear"]  # > 0: resized
    expected = processor_scores(model, processor, picture)
    assert metric(as_tensor(picture)).item() == pytest.approx(expected.item(), abs=SCORE_TOLERANCE * span(model))


@pytest.mark.parametrize("folder", ["liqe", "qualiclip", "uniqa"])
def test_torch_resize_equals_pil_float_resampling(folder):
    """Where the processor resizes, the tensor path is PIL's own filter: equal to PIL's float ("F") resampling;
    the difference to the processor is only PIL's rounding to uint8. Each folder's copy is checked."""
    import importlib

    resize_like_pil = importlib.import_module(f"hf_iqa.models.{folder}.tensor_processing_{folder}").resize_like_pil
    picture = photo("hubble_deep_field", 872, 1000)
    for size, resample in [((768, 880), Image.BILINEAR), ((1000, 1147), Image.BICUBIC), ((300, 345), Image.BICUBIC)]:
        expected = np.stack(
            [
                np.asarray(Image.fromarray(picture[..., c].astype(np.float32)).resize(size[::-1], resample))
                for c in range(3)
            ]
        )
        expected = np.clip(expected / 255, 0, 1)
        actual = resize_like_pil(as_tensor(picture).double(), size, int(resample))[0].numpy()
        assert np.abs(actual - expected).max() < 1e-5


def test_geometry_follows_the_processor_protocols():
    official = LiqeTensorProcessor(LiqeImageProcessor(protocol="official"))
    pyiqa = LiqeTensorProcessor(LiqeImageProcessor(protocol="pyiqa"))
    height, width, corners = official.geometry(1080, 1920)
    assert (height, width) == (768, 1365) and len(corners) == 15 and corners[1] == (0, 19 * 48)  # 12x24, s = 19
    height, width, corners = pyiqa.geometry(1080, 1920)
    assert (height, width) == (1080, 1920) and corners[1] == (32, 43 * 32)  # 27x54, s = 97: row 1, column 43


# --------------------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "processor, size",
    [
        (LiqeTensorProcessor(LiqeImageProcessor(patch_size=16)), (20, 44)),  # 2 windows, no resize
        (LiqeTensorProcessor(LiqeImageProcessor(patch_size=16)), (12, 18)),  # upsampled (bilinear) to 16x24
        (QualiClipTensorProcessor(QualiClipImageProcessor(do_resize=True, size={"shortest_edge": 8})), (12, 10)),
        (UniQaTensorProcessor(UniQaImageProcessor(crop_size={"height": 8, "width": 8}, num_crops=3)), (9, 12)),
        (UniQaTensorProcessor(UniQaImageProcessor(crop_size={"height": 8, "width": 8}, num_crops=3)), (6, 7)),
    ],
)
def test_gradcheck_tensor_processors(processor, size):
    """The preprocessing alone, in float64 at full precision (bicubic upsampling included)."""
    pixels = torch.rand(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pixels = pixels.clamp(0.05, 0.95).requires_grad_()  # away from bicubic's clipping kinks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(lambda x: processor(x)["pixel_values"], (pixels,), fast_mode=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_end_to_end_float64(family):
    """Tiny float64 models. The models compute their heads in float32 (`.float()` on the embeddings), so finite
    differences need a larger step and tolerance there; once a model keeps float64 the check is exact."""
    model, processor = build(family, window=32, seed=1)
    metric = QualityMetric(model.double(), image_processor=processor)
    pixels = as_tensor(photo("astronaut", 64, 72)).double().requires_grad_()
    exact = metric(pixels).dtype == torch.float64
    tolerance = dict(eps=1e-6, atol=1e-5, rtol=1e-3) if exact else dict(eps=1e-3, atol=1e-4, rtol=2e-3)
    assert torch.autograd.gradcheck(metric, (pixels,), fast_mode=True, **tolerance)


def window_mask(height: int, width: int, corners, size: int) -> torch.Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool)
    for y, x in corners:
        mask[y : y + size, x : x + size] = True
    return mask


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_exactly_the_pixels_that_matter(family, device):
    model, processor = build(family, window=32, seed=2)
    metric = QualityMetric(model, image_processor=processor, device=device)
    height, width = (96, 128) if family == "qualiclip" else (88, 120)  # /32 sizes for the ResNet: no floor drops
    pixels = as_tensor(photo("astronaut", height, width)).repeat(2, 1, 1, 1).to(device).requires_grad_()
    metric(pixels).sum().backward()
    grad = pixels.grad.cpu()
    assert torch.isfinite(grad).all()
    moving = (grad != 0).any(dim=1)  # (B, H, W): pixels with a gradient in some channel
    if family == "qualiclip":  # native resolution: every pixel counts, but for a few under dead ReLUs
        assert moving.float().mean() > 0.99
    else:
        *_, corners = metric.tensor_processor.geometry(height, width)
        expected = window_mask(height, width, corners, 32)
        assert 0 < expected.sum() < height * width  # some pixels lie outside every window / crop
        assert torch.equal(moving, expected.expand_as(moving))
    assert all(p.grad is None and not p.requires_grad for p in metric.parameters())  # weights stay out of it
    model.to("cpu")


def test_liqe_official_resize_spreads_gradients_and_keeps_them_finite():
    model, processor = build("liqe-official", window=32, seed=3)
    metric = QualityMetric(model, image_processor=LiqeImageProcessor(protocol="official", patch_size=32))
    pixels = as_tensor(photo("retina", 800, 1100)).requires_grad_()
    metric(pixels).sum().backward()
    assert torch.isfinite(pixels.grad).all() and (pixels.grad != 0).any()


@pytest.mark.parametrize("family", ["liqe-official", "qualiclip", "uniqa"])
def test_loss_decreases_when_optimising_a_real_photo(models, family):
    """A noisy astronaut, optimised with Adam for a few steps: the loss falls."""
    model, processor = models[family]
    metric = QualityMetric(model, as_loss=True, image_processor=processor)
    clean = as_tensor(photo("astronaut", 256, 256))
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0.01, 0.99)
    logits = torch.logit(noisy).requires_grad_()  # optimise in logit space: pixels stay in (0, 1)
    optimiser = torch.optim.Adam([logits], lr=0.05)
    losses = []
    for _ in range(6):
        loss = metric(torch.sigmoid(logits))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(metric(torch.sigmoid(logits)).item())
    assert losses[-1] < losses[0] - 1e-3, losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 4, losses  # steadily, not one lucky step


# --------------------------------------------------------------------------------------------------------------
# Loss, attributes, modes, dtypes
# --------------------------------------------------------------------------------------------------------------
def test_loss_is_normalised_weighted_and_reduced(models):
    model, processor = models["liqe-official"]
    pixels = as_tensor(photo("astronaut", 256, 256), photo("coffee", 256, 256))
    metric = QualityMetric(model, image_processor=processor)
    assert (metric.score_range, metric.lower_better, metric.as_loss) == ((1.0, 5.0), False, False)
    scores = metric(pixels)
    per_image = (5.0 - scores) / 4.0
    for reduction, expected in [("mean", per_image.mean()), ("sum", per_image.sum()), ("none", per_image)]:
        loss = QualityMetric(model, True, image_processor=processor, loss_weight=0.5, reduction=reduction)
        assert loss.lower_better is True and loss.loss_reduction == reduction and loss.loss_weight == 0.5
        torch.testing.assert_close(loss(pixels), 0.5 * expected)
    torch.testing.assert_close(loss.score(pixels), scores)  # scores stay reachable in loss mode
    with pytest.raises(ValueError, match="reduction"):
        QualityMetric(model, True, image_processor=processor, reduction="max")


def test_weights_frozen_and_eval_even_in_train_mode():
    model, processor = build("qualiclip", seed=4)
    model.train()
    metric = QualityMetric(model, image_processor=processor)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    metric.train()  # e.g. the parent restoration network goes into training mode
    assert metric.training and not model.training
    running = model.vision_model.bn1.running_mean.clone()
    metric(as_tensor(photo("astronaut", 64, 64)).requires_grad_()).sum().backward()
    assert torch.equal(model.vision_model.bn1.running_mean, running)  # BatchNorm statistics did not move

    trainable = QualityMetric(build("qualiclip", seed=4)[0], image_processor=processor, freeze=False)
    trainable(as_tensor(photo("astronaut", 64, 64))).sum().backward()
    assert trainable.model.vision_model.conv1.weight.grad is not None


def test_batch_equals_one_by_one_and_no_grad_builds_no_graph(models):
    model, processor = models["uniqa"]
    metric = QualityMetric(model, image_processor=processor)
    pixels = as_tensor(photo("astronaut", 300, 260), photo("coffee", 300, 260), photo("chelsea", 300, 260))
    with torch.no_grad():
        batch = metric(pixels)
        single = torch.cat([metric(pixels[i : i + 1]) for i in range(3)])
    assert not batch.requires_grad
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models_and_inputs(models, dtype):
    model, processor = models["liqe-official"]
    pixels = as_tensor(photo("astronaut", 256, 256), photo("coffee", 256, 256))
    reference = QualityMetric(model, image_processor=processor)(pixels)
    low = QualityMetric(build("liqe-official")[0].to(dtype), image_processor=processor)
    half_pixels = pixels.to(dtype).requires_grad_()
    scores = low(half_pixels)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, reference, rtol=0, atol=0.05 * span(model))
    scores.sum().backward()
    assert half_pixels.grad.dtype == dtype and torch.isfinite(half_pixels.grad.float()).all()


def test_grey_input_equals_rgb_and_bad_input_is_one_clear_error(models):
    model, processor = models["qualiclip"]
    metric = QualityMetric(model, image_processor=processor)
    grey = torch.rand(1, 1, 64, 96)
    torch.testing.assert_close(metric(grey), metric(grey.expand(-1, 3, -1, -1)))
    for bad in (torch.rand(3, 64, 64), torch.rand(1, 4, 64, 64), torch.randint(0, 255, (1, 3, 64, 64))):
        with pytest.raises(ValueError, match=r"QualityMetric expects a float tensor of shape \(B, 3, H, W\)"):
            metric(bad)
    with pytest.raises(TypeError, match="QualityMetric expects"):
        metric(np.zeros((1, 3, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 32x32"):  # QualiCLIP's small-image rule, as on the PIL path
        metric(torch.rand(1, 3, 20, 64))


def test_inputs_outside_the_declared_range_are_refused_or_scaled(models):
    model, processor = models["qualiclip"]
    metric = QualityMetric(model, image_processor=processor)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"inputs must be in \[0, 1\] but range over \[[\d.e-]+, 25[\d.]+\]; declare"):
        metric(images * 255)
    with pytest.raises(ValueError, match=r"range over \[-0\.99\d+, 0\.99\d+\]"):
        metric(images * 2 - 1)  # [-1, 1] normalised inputs too
    metric(images.clamp(0.005, 0.995) * 1.005)  # resampling overshoot within the tolerance passes
    scaled = QualityMetric(model, image_processor=processor, input_range=(0, 255))
    torch.testing.assert_close(scaled(images * 255), metric(images), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"must be in \[0, 255\]"):
        scaled(images * 1000)
    assert QualityMetric(model, image_processor=processor, input_range=None)(images * 255).shape == (1,)
    with pytest.raises(ValueError, match="high > low"):
        QualityMetric(model, image_processor=processor, input_range=(1, 0))


def test_dog_iqa_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="Dog-IQA cannot be used as a differentiable metric.*SAM2"):
        QualityMetric("dog-iqa")  # refused by name, before any download

    class Stub(torch.nn.Module):
        config = DogIqaConfig()

    with pytest.raises(ValueError, match="Dog-IQA cannot be used as a differentiable metric"):
        QualityMetric(Stub())
    with pytest.raises(TypeError, match="expected a model name"):
        QualityMetric(42)


def test_example_writes_its_figures_and_keeps_existing_ones(tmp_path, capsys):
    import importlib.util

    path = REPO_ROOT / "examples" / "quality_reward.py"
    spec = importlib.util.spec_from_file_location("quality_reward_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    arguments = ["--steps", "2", "--size", "224", "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert example.main(arguments) == 0
    assert (tmp_path / "before_after.png").stat().st_size > 0 and (tmp_path / "score_curve.png").stat().st_size > 0
    first, last = (float(v) for v in capsys.readouterr().out.split("score ")[1].split(" in ")[0].split(" -> "))
    assert last > first  # two steps already raise the score
    stamp = (tmp_path / "score_curve.png").stat().st_mtime_ns
    assert example.main(arguments) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err and (tmp_path / "score_curve.png").stat().st_mtime_ns == stamp
    assert example.main([*arguments, "--overwrite", "--optimise", "net"]) == 0


def test_copies_of_resize_like_pil_are_identical():
    """Model folders are flat Hub units, so `resize_like_pil` is copied; the copies must not drift."""
    import importlib
    import inspect

    modules = [
        importlib.import_module(f"hf_iqa.models.{f}.tensor_processing_{f}") for f in ("qualiclip", "liqe", "uniqa")
    ]
    sources = {inspect.getsource(module.resize_like_pil) for module in modules}
    assert len(sources) == 1 and all(module._TORCH_MODES == modules[0]._TORCH_MODES for module in modules)
