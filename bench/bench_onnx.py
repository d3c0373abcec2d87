"""onnxruntime fp32 / int8 against PyTorch fp32 / bf16: images per second and peak memory, same photos, same run.

Real-size models with random weights (LIQE: CLIP ViT-B/32, 15 windows, pyiqa protocol; QualiCLIP: CLIP RN50 at
native resolution), exported once with `hf_iqa.onnx` (fp32 parity-checked; int8 by onnxruntime's dynamic
quantisation). Each configuration runs in its own subprocess, so its peak RSS (weights + scoring, after
`reset_peak_rss`) is its own. Timed: preprocessing (the same image processor) + the model, batch of `--batch`.
Random weights: the int8 drift printed here says nothing about trained weights (see bench/README.md).

    python bench/bench_onnx.py [--count 6] [--sizes 512x384 1024x768] [--models liqe qualiclip]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import make_images, peak_rss_mb, reset_peak_rss, run_worker  # noqa: E402

METHODS = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-int8")


def build(family: str, folder: Path) -> None:
    """Save a random real-size model and its processor, export it (fp32, parity-checked) and its int8 variant."""
    import torch

    from hf_iqa.onnx.export import export_onnx
    from hf_iqa.onnx.variants import convert

    torch.manual_seed(0)
    if family == "liqe":
        from hf_iqa.models.liqe import LiqeConfig, LiqeImageProcessor, LiqeModel

        model, processor = LiqeModel(LiqeConfig()).eval(), LiqeImageProcessor(protocol="pyiqa")
        features = model.prompt_text_features
    else:
        from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipImageProcessor, QualiClipModel

        model, processor = QualiClipModel(QualiClipConfig()).eval(), QualiClipImageProcessor()
        features = model.prompt_text_features
    with torch.no_grad():
        features.copy_(torch.nn.functional.normalize(torch.randn(features.shape), dim=-1))
    model.save_pretrained(folder / "torch")
    processor.save_pretrained(folder / "torch")
    export_onnx(model, processor, folder / "ort-fp32", log=lambda line: print(f"  {family}: {line}", file=sys.stderr))
    (folder / "ort-int8").mkdir()
    for item in (folder / "ort-fp32").iterdir():
        if item.name != "model.onnx":
            (folder / "ort-int8" / item.name).write_bytes(item.read_bytes())
    convert(folder / "ort-fp32" / "model.onnx", folder / "ort-int8" / "model.onnx", "int8")


def worker(method: str, folder: str, size: str, count: int, batch: int) -> dict:
    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
    images = make_images(size, count)
    if method.startswith("ort"):
        from hf_iqa.onnx import OnnxScorer

        scorer = OnnxScorer(Path(folder) / method, threads=threads)

        def run(chunk):
            return [r["score"] for r in scorer.predict([scorer.preprocess(image) for image in chunk])]

    else:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        import hf_iqa  # noqa: F401  registers the model classes

        torch.set_num_threads(threads)
        dtype = torch.bfloat16 if method == "torch-bf16" else torch.float32
        model = AutoModel.from_pretrained(Path(folder) / "torch", dtype=dtype).eval()
        processor = AutoImageProcessor.from_pretrained(Path(folder) / "torch")

        def cast(value):  # floating inputs to the model's dtype (a list for native-resolution QualiCLIP)
            if isinstance(value, list):
                return [v.to(dtype) for v in value]
            return value.to(dtype) if value.is_floating_point() else value

        def run(chunk):
            inputs = {key: cast(value) for key, value in processor(images=chunk, return_tensors="pt").items()}
            with torch.inference_mode():
                return model(**inputs).scores.float().tolist()

    gc.collect()
    run(images[:1])  # warm-up
    reset_peak_rss()
    start = time.perf_counter()
    scores = [score for i in range(0, count, batch) for score in run(images[i : i + batch])]
    elapsed = time.perf_counter() - start
    return {"images_per_second": count / elapsed, "peak_rss_mb": peak_rss_mb(), "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["512x384", "1024x768"])
    parser.add_argument("--models", nargs="+", default=["liqe", "qualiclip"])
    args = parser.parse_args()
    from scipy.stats import spearmanr

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.models:
            folder = Path(tmp) / family
            build(family, folder)
            for size in args.sizes:
                results = {m: run_worker(__file__, m, folder, size, args.count, args.batch) for m in METHODS}
                base = results["torch-fp32"]
                for method, result in results.items():
                    delta = max(abs(a - b) for a, b in zip(result["scores"], base["scores"]))
                    srcc = float(spearmanr(result["scores"], base["scores"]).statistic)
                    rows.append((family, size, method, result["images_per_second"],
                                 result["images_per_second"] / base["images_per_second"], result["peak_rss_mb"],
                                 delta, srcc))  # fmt: skip
                    print(f"{family:9} {size:9} {method:10} {rows[-1][3]:7.2f} img/s  x{rows[-1][4]:.2f}  "
                          f"{rows[-1][5]:7.0f} MB  max|Δ| {delta:.2e}", flush=True)  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        method, folder, size, count, batch = sys.argv[2:7]
        print(json.dumps(worker(method, folder, size, int(count), int(batch))))
    else:
        main()
