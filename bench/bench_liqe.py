"""LIQE speed and memory: hf_iqa vs the pyiqa-style forward on the OpenAI CLIP code, measured in the same run.

Baseline (what pyiqa runs): the OpenAI `clip/model.py` CLIP from the openai-clip package; normalise the whole
image, materialise every 224x224 window with `unfold` (stride 32), keep 15 evenly spaced ones, `encode_image`
them, one image at a time; prompt embeddings cached. hf_iqa: the same weights converted with
`hf_iqa.converters.liqe.build_model` (what `hf-iqa convert liqe` does), `LiqeImageProcessor` cutting out only the
15 windows, all windows of a batch in one forward of the flat inference loop.

Both use a real-size ViT-B/32 with random weights (speed does not depend on weight values) and the `pyiqa`
protocol, so fp32 scores must agree to 1e-5. Each (method, size, dtype) runs in its own subprocess so that peak
RSS is measured separately (the high-water mark during scoring: weights and activations, not
loading). The first line measures this CPU's fp32 GEMM throughput through the BLAS (MKL, what
`torch.matmul` uses) and through oneDNN, on the ViT-B/32 MLP shape, so the speed-ups can be read against what the
hardware allows; "GFLOP/s" columns divide the baseline's FLOPs per image (15 full ViT-B/32 forwards) by the time.

    python bench/bench_liqe.py                     # all sizes, fp32 and bf16
    python bench/bench_liqe.py --sizes 512x384 --images 4 --dtypes float32
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time

import numpy as np
from common import (
    CLIP_MEAN,
    CLIP_STD,
    answer_worker,
    comparison_parser,
    engine_scores,
    make_images,
    openai_model_module,
    print_comparison,
    timed_scores,
)

WIDTH, LAYERS, TOKENS, PATCH, WINDOWS = 768, 12, 50, 32, 15


def flops_per_image(size: str = "512x384") -> float:
    """Multiply-adds x 2 of the image's ViT-B/32 windows (15, or fewer on a small image, `pyiqa` protocol): patch
    embedding, 12 layers (projections, attention, MLP)."""
    width, height = (int(v) for v in size.split("x"))
    windows = min(WINDOWS, ((height - 224) // 32 + 1) * ((width - 224) // 32 + 1))
    patch = (TOKENS - 1) * WIDTH * 3 * PATCH * PATCH
    layer = TOKENS * 12 * WIDTH * WIDTH + 2 * TOKENS * TOKENS * WIDTH
    return 2.0 * windows * (patch + LAYERS * layer + WIDTH * 512)


def write_weights(path: str) -> None:
    """A random OpenAI-layout ViT-B/32 CLIP (LIQE's logit scale 100) plus 495 prompt embeddings."""
    import torch

    torch.manual_seed(0)
    clip = openai_model_module().CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
    state = clip.state_dict()
    state["logit_scale"] = torch.tensor(math.log(100.0))
    prompts = torch.nn.functional.normalize(torch.randn(495, 512), dim=-1)
    torch.save({"clip": state, "prompt_text_features": prompts}, path)


def gemm_throughput(threads: int) -> dict:
    """fp32 GFLOP/s of (750 x 768) @ (768 x 3072) (15 windows' MLP) through MKL and through oneDNN."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    x, w, b = torch.randn(750, 768), torch.randn(3072, 768), torch.randn(3072)
    flops = 2.0 * 750 * 768 * 3072
    paths = {"mkl": lambda: F.linear(x, w, b)}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        paths["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    result = {}
    for name, run in paths.items():
        for _ in range(3):
            run()
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(10):
                run()
            best = min(best, (time.perf_counter() - start) / 10)
        result[name] = flops / best / 1e9
    return result


def worker(method: str, size: str, dtype: str, count: int, batch_size: int, weights: str) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    torch_dtype = getattr(torch, dtype)
    saved = torch.load(weights, weights_only=True)
    prompts = saved["prompt_text_features"]
    if method == "baseline":
        module = openai_model_module()
        clip = module.CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
        clip.load_state_dict(saved["clip"])
        visual = clip.visual.eval().to(torch_dtype)
        for norm in visual.modules():  # OpenAI's LayerNorm computes in fp32 (as in its `convert_weights`)
            if isinstance(norm, torch.nn.LayerNorm):
                norm.float()
        scale = float(saved["clip"]["logit_scale"].exp())
        mean, std = torch.from_numpy(CLIP_MEAN).view(3, 1, 1), torch.from_numpy(CLIP_STD).view(3, 1, 1)

        def run(images):
            scores = []
            for image in images:  # pyiqa: one image at a time, every window materialised
                x = (torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255.0 - mean) / std
                windows = x.unfold(1, 224, 32).unfold(2, 224, 32).permute(1, 2, 0, 3, 4).reshape(-1, 3, 224, 224)
                keep = min(WINDOWS, windows.shape[0])
                chosen = windows[torch.arange(keep) * (windows.shape[0] // keep)]
                embeds = F.normalize(visual(chosen.to(torch_dtype)).float(), dim=-1)
                probs = (scale * embeds @ prompts.t()).mean(0).softmax(-1)
                quality = probs.view(5, 9, 11).sum(dim=(1, 2))
                scores.append((quality * torch.arange(1, 6)).sum()[None])
            return torch.cat(scores)

    else:
        from hf_iqa.converters.liqe import build_model
        from hf_iqa.models.liqe import LiqeImageProcessor, LiqeModel

        model = build_model(saved["clip"], "mix", "pyiqa")
        model.prompt_text_features.copy_(prompts)
        if dtype != "float32":  # load as users do: `dtype=` keeps the prompt embeddings and logit scale in fp32
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                model = LiqeModel.from_pretrained(folder, dtype=torch_dtype).eval()
        processor = LiqeImageProcessor(protocol="pyiqa")

        def run(images):  # the engine's loop, as `hf-iqa score` runs it (one loader thread)
            return engine_scores(model, processor, images, batch_size, torch_dtype)

    del saved
    gc.collect()
    return timed_scores(run, make_images(size, count))


def main() -> None:
    args = comparison_parser(__doc__, ["512x384", "1024x768", "3840x2160"]).parse_args()
    if answer_worker(args, worker):
        return

    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
    gemm = gemm_throughput(threads)
    flops = flops_per_image()  # at 512x384 and larger
    print(f"threads={threads} load={os.getloadavg()[0]:.1f} images={args.images} batch={args.batch_size}")
    print("fp32 GEMM throughput (750x768 @ 768x3072): "
          + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in gemm.items())
          + f"; one image = {flops / 1e9:.0f} GFLOP")  # fmt: skip

    def gflops(size: str, base: dict, ours: dict) -> str:
        return (f"{flops_per_image(size) / base['seconds_per_image'] / 1e9:>12.0f} "
                f"{flops_per_image(size) / ours['seconds_per_image'] / 1e9:>7.0f} | ")  # fmt: skip

    extra = (f"{'GFLOP/s base':>12} {'hf_iqa':>7} | ", gflops)
    print_comparison(__file__, args, "clip_vit_b32.pt", write_weights, extra)


if __name__ == "__main__":
    main()
