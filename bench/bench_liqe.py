"""LIQE speed and memory: hf_iqa vs a naive pyiqa-style baseline, measured in the same run.

Baseline (what pyiqa does): normalise the whole image, materialise every 224x224 window with `unfold`, keep 15,
encode them, one image at a time (prompt embeddings cached, as both do). hf_iqa: `LiqeImageProcessor` cuts out
only the 15 windows, and all windows of a batch of images go through the vision tower in one forward.

Both use the same real-size ViT-B/32 with random weights (speed does not depend on weight values) and the
`pyiqa` protocol (no resize, stride 32), so their scores must agree to 1e-5 in fp32.
Each (method, size, dtype) runs in its own subprocess so that peak RSS is measured separately.

    python bench/bench_liqe.py                     # all sizes, fp32 and bf16
    python bench/bench_liqe.py --sizes 512x384 --images 4 --dtypes float32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def build_model(dtype: str):
    import torch
    from transformers import CLIPConfig

    from hf_iqa.models.liqe import LiqeConfig, LiqeModel

    torch.manual_seed(0)
    clip = CLIPConfig(
        text_config={"hidden_act": "quick_gelu", "eos_token_id": 49407},
        vision_config={"hidden_act": "quick_gelu", "patch_size": 32},
        logit_scale_init_value=4.605170185988092,
    )
    model = LiqeModel(LiqeConfig(clip_config=clip)).eval()
    with torch.no_grad():
        model.text_embeds.copy_(torch.nn.functional.normalize(torch.randn_like(model.text_embeds), dim=-1))
    if dtype == "float32":
        return model
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # load as users do: `dtype=` keeps prompt embeddings in fp32
        model.save_pretrained(folder)
        return LiqeModel.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()


def make_images(size: str, count: int):
    from PIL import Image

    width, height = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def baseline_scores(model, images, dtype):
    """pyiqa-style: materialise all windows, one image at a time."""
    import torch

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    scores = []
    for image in images:
        x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255.0
        x = (x - mean) / std
        windows = x.unfold(1, 224, 32).unfold(2, 224, 32).permute(1, 2, 0, 3, 4).reshape(-1, 3, 224, 224)
        step = max(1, windows.shape[0] // min(15, windows.shape[0]))
        chosen = windows[torch.arange(min(15, windows.shape[0])) * step][None].to(getattr(torch, dtype))
        scores.append(model(pixel_values=chosen).scores)
    return torch.cat(scores)


def hf_iqa_scores(model, processor, images, dtype, batch_size):
    import torch

    scores = []
    for start in range(0, len(images), batch_size):
        inputs = processor(images[start : start + batch_size], return_tensors="pt")
        inputs["pixel_values"] = inputs["pixel_values"].to(getattr(torch, dtype))
        scores.append(model(**inputs).scores)
    return torch.cat(scores)


def worker(method: str, size: str, dtype: str, count: int, batch_size: int) -> dict:
    import torch

    from hf_iqa.models.liqe import LiqeImageProcessor

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    model = build_model(dtype)
    images = make_images(size, count)
    processor = LiqeImageProcessor(protocol="pyiqa")
    with torch.inference_mode():
        run = (lambda imgs: baseline_scores(model, imgs, dtype)) if method == "baseline" else (
            lambda imgs: hf_iqa_scores(model, processor, imgs, dtype, batch_size)
        )
        run(images[:1])  # warm-up
        start = time.perf_counter()
        scores = run(images)
        elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "size": size, "dtype": dtype, "seconds_per_image": elapsed / count,
            "peak_rss_mb": peak_mb, "scores": scores.float().tolist()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x384", "1024x768", "3840x2160"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--images", type=int, default=4, help="timed images per configuration")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, size, dtype, count, batch = args.worker
        print(json.dumps(worker(method, size, dtype, int(count), int(batch))))
        return

    def measure(method: str, size: str, dtype: str) -> dict:
        command = [sys.executable, __file__, "--worker", method, size, dtype, str(args.images), str(args.batch_size)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return json.loads(output.strip().splitlines()[-1])

    print(f"threads={os.environ.get('BENCH_THREADS', os.cpu_count())} load={os.getloadavg()[0]:.1f}")
    print(f"{'size':>10} {'dtype':>9} | {'baseline s/img':>14} {'hf_iqa s/img':>12} {'speed-up':>8} | "
          f"{'base RSS MB':>11} {'hf_iqa RSS MB':>13} | {'max|Δscore|':>11}")  # fmt: skip
    for size in args.sizes:
        reference = measure("baseline", size, "float32")
        for dtype in args.dtypes:
            base = reference if dtype == "float32" else measure("baseline", size, dtype)
            ours = measure("hf_iqa", size, dtype)
            delta = max(abs(a - b) for a, b in zip(ours["scores"], reference["scores"]))
            print(f"{size:>10} {dtype:>9} | {base['seconds_per_image']:>14.3f} {ours['seconds_per_image']:>12.3f} "
                  f"{reference['seconds_per_image'] / ours['seconds_per_image']:>7.2f}x | "
                  f"{base['peak_rss_mb']:>11.0f} {ours['peak_rss_mb']:>13.0f} | {delta:>11.2e}", flush=True)  # fmt: skip
    print("speed-up = fp32 baseline time / hf_iqa time (bf16 rows: against the fp32 baseline); "
          "Δscore against the fp32 baseline")  # fmt: skip


if __name__ == "__main__":
    main()
