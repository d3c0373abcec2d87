"""QualiCLIP speed and memory: hf_iqa vs the naive upstream forward, measured in the same run.

Baseline (what the official torch.hub model and pyiqa run): the OpenAI `clip/model.py` ModifiedResNet from the
openai-clip package (BatchNorm as separate ops, full self-attention over all HxW+1 tokens in the attention pool),
one image at a time, pixels normalised with numpy like `ToTensor + Normalize`. Its position table is replaced by a
zero row, since QualiCLIP adds none. hf_iqa: `QualiClipImageProcessor` + `QualiClipModel` (BatchNorm folded into
the convolutions, mean-token-only attention pool, same-size images batched).

Both load the same real-size RN50 with random weights (speed does not depend on the values), so scores must
agree to ~1e-5 in fp32. Each (method, size, dtype) runs in its own subprocess; peak RSS is the high-water mark
during inference only (reset after the model is built), so it includes the weights but not their loading.

    python bench/bench_qualiclip.py                                  # 512x384 and 1024x768, fp32 + bf16
    python bench/bench_qualiclip.py --sizes 3840x2160 --images 1 --warmup 0   # slow: run 4K once
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time

import numpy as np
from common import (
    CLIP_MEAN,
    CLIP_STD,
    compare,
    engine_scores,
    make_images,
    openai_model_module,
    peak_rss_mb,
    reset_peak_rss,
    run_worker,
)

MEAN, STD = CLIP_MEAN, CLIP_STD


def write_weights(path: str) -> None:
    """A random RN50 in the OpenAI layout with non-trivial BatchNorm statistics, plus 14 prompt features."""
    import torch

    torch.manual_seed(0)
    resnet = openai_model_module().ModifiedResNet([3, 4, 6, 3], 1024, 32, 224, 64)
    with torch.no_grad():
        for bn in resnet.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0, 0.1)
                bn.running_mean.normal_(0, 0.1)
                bn.running_var.uniform_(0.5, 2.0)
    features = torch.nn.functional.normalize(torch.randn(14, 1024), dim=-1)
    torch.save({"visual": resnet.state_dict(), "prompts_features": features}, path)


def worker(method: str, size: str, dtype: str, count: int, batch_size: int, warmup: int, weights: str) -> dict:
    import torch
    import torch.nn.functional as F

    from hf_iqa.converters.qualiclip import convert_resnet_state_dict
    from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipImageProcessor, QualiClipModel

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    torch_dtype = getattr(torch, dtype)
    saved = torch.load(weights, weights_only=True)
    features = saved["prompts_features"]
    if method == "baseline":
        resnet = openai_model_module().ModifiedResNet([3, 4, 6, 3], 1024, 32, 224, 64)
        resnet.load_state_dict(saved["visual"])
        resnet.attnpool.positional_embedding = torch.nn.Parameter(torch.zeros(1, 2048))  # QualiCLIP: no table
        resnet = resnet.eval().to(torch_dtype)

        def run(images):
            scores = []
            for image in images:  # one at a time, as pyiqa and the official script do
                array = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
                x = torch.from_numpy(array.transpose(2, 0, 1).copy())[None].to(torch_dtype)
                embeds = F.normalize(resnet(x).float(), dim=-1)
                logits = (100.0 * embeds @ features.t()).view(1, -1, 2)
                scores.append(logits.softmax(-1)[..., 0].mean(-1))
            return torch.cat(scores)

    else:
        model = QualiClipModel(QualiClipConfig()).eval()
        weights_hf = {f"vision_model.{k}": v for k, v in convert_resnet_state_dict(saved["visual"], prefix="").items()}
        model.load_state_dict({**weights_hf, "prompt_text_features": features}, strict=True)
        model.vision_model.to(torch_dtype)  # as from_pretrained(dtype=...): the prompt features stay fp32
        processor = QualiClipImageProcessor()

        def run(images):  # the engine's loop, as `hf-iqa score` runs it (one loader thread)
            return engine_scores(model, processor, images, batch_size)

    del saved
    images = make_images(size, count)
    gc.collect()
    with torch.inference_mode():
        for _ in range(warmup):
            run(images[:1])
        reset_peak_rss()
        start, start_cpu = time.perf_counter(), time.process_time()
        scores = run(images)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return {"images_per_second": count / elapsed, "cpu_seconds_per_image": cpu / count,
            "peak_rss_mb": peak_rss_mb(), "scores": scores.float().tolist()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x384", "1024x768"], help="WxH; add 3840x2160 once")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--images", type=int, default=4, help="timed images per configuration")
    parser.add_argument("--batch-size", type=int, default=4, help="hf_iqa images per processor/model call")
    parser.add_argument("--warmup", type=int, default=1, help="untimed single-image runs first (0 for 4K)")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, size, dtype, count, batch, warmup, weights = args.worker
        print(json.dumps(worker(method, size, dtype, int(count), int(batch), int(warmup), weights)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "rn50.pt")
        write_weights(weights)

        def measure(method: str, size: str, dtype: str) -> dict:
            return run_worker(__file__, method, size, dtype, args.images, args.batch_size, args.warmup, weights)

        print(f"threads={os.environ.get('BENCH_THREADS', os.cpu_count())} load={os.getloadavg()[0]:.1f} "
              f"images={args.images}")  # fmt: skip
        print(f"{'size':>10} {'dtype':>9} | {'base img/s':>10} {'hf_iqa img/s':>12} {'speed-up':>8} {'cpu-time':>8} | "
              f"{'base peak MB':>12} {'hf_iqa peak MB':>14} {'ratio':>6} | {'max|Δscore|':>11}")  # fmt: skip
        for size, dtype, _, base, ours, delta in compare(measure, args.sizes, args.dtypes):
            print(f"{size:>10} {dtype:>9} | {base['images_per_second']:>10.3f} {ours['images_per_second']:>12.3f} "
                  f"{ours['images_per_second'] / base['images_per_second']:>7.2f}x "
                  f"{base['cpu_seconds_per_image'] / ours['cpu_seconds_per_image']:>7.2f}x | "
                  f"{base['peak_rss_mb']:>12.0f} {ours['peak_rss_mb']:>14.0f} "
                  f"{ours['peak_rss_mb'] / base['peak_rss_mb']:>6.2f} | {delta:>11.2e}", flush=True)  # fmt: skip
    print(
        "speed-up (wall clock, and CPU time which is steadier on a shared machine) and memory ratio against the "
        "baseline in the same dtype; Δscore against the fp32 baseline"
    )


if __name__ == "__main__":
    main()
