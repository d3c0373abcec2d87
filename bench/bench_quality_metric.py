"""QualityMetric cost: forward + backward w.r.t. the pixels against the no-grad forward, in the same run; and the
score difference to the PIL path where the image processor resizes.

For each model and size, with the same metric and input batch:
- `no-grad`: `metric(x)` under `torch.no_grad()` (the models' inference fast paths, as in scoring);
- `fwd+bwd`: `metric(x).sum().backward()` with `x.requires_grad_()` (a loss or reward gradient).
Time is the median of `--repeats` runs after one warm-up; memory is the peak above what was resident before the
call (CPU: the process high-water mark, reset before each measurement; CUDA: `max_memory_allocated`). The ratios
fwd+bwd / no-grad are the figures to compare across machines.

Then (`--no-parity` skips it) real photos that the processor resizes are scored both ways (processor + model vs
`QualityMetric` on `uint8 / 255`), and the largest pixel and score differences are printed: the README's
"Quality as a loss or reward" figures.

Models have random weights of the real sizes (LIQE ViT-B/32 with 495 prompts, QualiCLIP RN50, UniQA ViT-B/16;
speed does not depend on the values); `--tiny` uses small ones so that the script runs in seconds.

    python bench/bench_quality_metric.py --tiny                        # quick check of the script
    python bench/bench_quality_metric.py --models liqe --repeats 3     # one real-size model at a time on a CPU
    python bench/bench_quality_metric.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from functools import partial

import numpy as np
import torch
from common import peak_rss_mb, reset_peak_rss
from PIL import Image

import hf_iqa
from hf_iqa.models.liqe import LiqeConfig, LiqeImageProcessor, LiqeModel
from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipImageProcessor, QualiClipModel
from hf_iqa.models.uniqa import UniQaConfig, UniQaImageProcessor, UniQaModel

MODELS = ("liqe", "qualiclip", "uniqa")


def tiny_clip(image_size: int = 224, patch_size: int = 32) -> dict:
    return dict(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         hidden_act="quick_gelu", eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=patch_size, hidden_act="quick_gelu"),
        projection_dim=16,
    )  # fmt: skip


def randomize(model: torch.nn.Module) -> torch.nn.Module:
    """Random unit prompt features and non-trivial weights, so scores depend on the picture."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or name.endswith(("logit_scale", "score_level")):
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("prompt_text_features"):
                tensor.copy_(noise / noise.norm(dim=-1, keepdim=True))
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=generator)
            else:
                tensor.add_(0.02 * noise)
    return model.eval()


def build(name: str, tiny: bool):
    """(model, default PIL processor) with random weights."""
    torch.manual_seed(0)
    if name == "liqe":
        config = LiqeConfig(clip_config=tiny_clip()) if tiny else LiqeConfig()
        return randomize(LiqeModel(config)), LiqeImageProcessor()
    if name == "qualiclip":
        if tiny:
            vision = dict(layers=[1, 1, 1, 1], width=8, projection_dim=16, num_attention_heads=2)
            config = QualiClipConfig(vision_config=vision, projection_dim=16)
        else:
            config = QualiClipConfig()
        return randomize(QualiClipModel(config)), QualiClipImageProcessor()
    config = UniQaConfig(clip_config=tiny_clip() if tiny else None, adapter_tasks=["quality"])
    return randomize(UniQaModel(config)), UniQaImageProcessor()


def photo(name: str, height: int | None = None, width: int | None = None) -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[:height, :width, :3])


def as_tensor(*pictures: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.from_numpy(p.copy()).permute(2, 0, 1) for p in pictures]).float() / 255


def no_grad(metric: hf_iqa.QualityMetric, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        metric(pixels)


def forward_backward(metric: hf_iqa.QualityMetric, pixels: torch.Tensor) -> None:
    x = pixels.clone().requires_grad_()
    metric(x).sum().backward()


def measure(run, device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MB above the memory resident before each call)."""
    run()  # warm-up: one-time allocations, caches
    times, peaks = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            reset_peak_rss()
            before = peak_rss_mb()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peaks.append((torch.cuda.max_memory_allocated(device) - before) / 2**20)
        else:
            peaks.append(peak_rss_mb() - before)
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(peaks)


def bench_speed(args, device: torch.device, dtype: torch.dtype) -> None:
    print(f"{'model':10s} {'size':>9s} {'batch':>5s} | {'no-grad s':>9s} {'MB':>7s} | {'fwd+bwd s':>9s} {'MB':>7s} | "
          f"{'time x':>6s} {'mem x':>6s}")  # fmt: skip
    for name in args.models:
        model, processor = build(name, args.tiny)
        metric = hf_iqa.QualityMetric(model.to(dtype), image_processor=processor, device=device)
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            picture = np.asarray(Image.fromarray(photo("astronaut")).resize((width, height), Image.BICUBIC))
            pixels = as_tensor(picture).repeat(args.batch, 1, 1, 1).to(device)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                base_time, base_memory = measure(partial(no_grad, metric, pixels), device, args.repeats)
                grad_time, grad_memory = measure(partial(forward_backward, metric, pixels), device, args.repeats)
            print(
                f"{name:10s} {size:>9s} {args.batch:5d} | {base_time:9.3f} {base_memory:7.0f} | {grad_time:9.3f} "
                f"{grad_memory:7.0f} | {grad_time / base_time:6.2f} {grad_memory / max(base_memory, 1.0):6.2f}",
                flush=True,
            )
        del metric, model


PARITY_CASES = [
    ("liqe", "official resize 1000x872 -> 880x768", {}, ("hubble_deep_field", 872, 1000)),
    ("liqe", "official resize 1411x1411 -> 768x768", {}, ("retina",)),
    ("liqe", "small 300x200 -> 336x224 (bilinear)", {"protocol": "pyiqa"}, ("chelsea", 200, 300)),
    ("liqe", "no resize 512x384 (pyiqa)", {"protocol": "pyiqa"}, ("astronaut", 384, 512)),
    ("qualiclip", "spaq resize 600x400 -> 768x512", {"do_resize": True}, ("coffee", 400, 600)),
    ("qualiclip", "no resize 512x384", {}, ("astronaut", 384, 512)),
    ("uniqa", "small 300x200 -> 336x224 (bicubic)", {}, ("chelsea", 200, 300)),
    ("uniqa", "no resize 512x384", {}, ("astronaut", 384, 512)),
]


def bench_parity(args) -> None:
    print(f"\n{'model':10s} {'case':40s} | {'max |dpixel|':>12s} {'mean':>7s} | {'|dscore|':>9s} {'/ range':>8s}")
    built = {}
    for name, case, options, picture_spec in PARITY_CASES:
        if name not in args.models:
            continue
        if name not in built:
            built[name] = build(name, args.tiny)
        model, default = built[name]
        processor = type(default)(**{**default.to_dict(), **options})
        picture = photo(*picture_spec)
        metric = hf_iqa.QualityMetric(model, image_processor=processor)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            reference = processor(Image.fromarray(picture), return_tensors="pt")
            expected = model(**reference).scores.item()
            inputs = metric.preprocess(as_tensor(picture))
            actual = metric(as_tensor(picture)).item()
        ref_pixels = reference["pixel_values"]
        ref_pixels = torch.stack(ref_pixels) if isinstance(ref_pixels, list) else ref_pixels
        std = torch.tensor(processor.image_std).view(3, 1, 1)
        pixel_delta = ((inputs["pixel_values"] - ref_pixels) * std).abs() * 255  # back to 0..255 units
        low, high = model.config.score_range
        print(
            f"{name:10s} {case:40s} | {pixel_delta.max().item():8.3f}/255 {pixel_delta.mean().item():7.3f} | "
            f"{abs(actual - expected):9.2e} {abs(actual - expected) / (high - low):8.1e}",
            flush=True,
        )


def main() -> None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # CPU peak memory is the process high-water mark (VmHWM). glibc keeps freed blocks of up to 32 MB in its
        # heap for reuse, where the mark cannot see them being used again; a fixed mmap threshold returns every
        # large block to the system when freed. glibc reads it at start-up, hence the re-exec.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", default=["512x384", "1024x768"], help="WxH")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="small random models (seconds, for a quick check)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--no-parity", action="store_true", help="skip the PIL-path score differences")
    parser.add_argument("--no-speed", action="store_true", help="only the PIL-path score differences")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {device}, {args.dtype}, threads {torch.get_num_threads()}, "
          f"{'tiny' if args.tiny else 'real-size'} random models")  # fmt: skip
    if not args.no_speed:
        bench_speed(args, device, dtype)
    if not args.no_parity:
        bench_parity(args)


if __name__ == "__main__":
    main()
