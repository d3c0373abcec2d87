"""Folder scoring through `hf_iqa.scoring` (what `hf-iqa score` runs), in one run:

1. throughput: end to end (decode + preprocess in loader threads, a bounded window ahead of the model) against
   model-only (the same batches preprocessed in advance), and how busy the model was end to end;
2. memory: peak RSS of the full `hf-iqa score ... -o out.csv` command on 100 and on 2,000 images (one subprocess
   each, same model), which must not grow with the number of images.

Targets (issue 14): end to end >= 0.9 x model-only; peak RSS at 2,000 images within 10 % of 100 images.
Random weights (speed does not depend on their values); JPEGs of `--size` (default 1024x768).

    python bench/bench_score_folder.py             # real-size LIQE (ViT-B/32) for throughput, small LIQE for RSS
    python bench/bench_score_folder.py --small     # small LIQE for both: about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import peak_rss_mb, run_worker


def save_liqe(folder: Path, small: bool) -> str:
    """A LIQE folder with random weights: OpenAI ViT-B/32 shapes, or a small 2-layer ViT (same preprocessing)."""
    import torch
    from transformers import CLIPConfig

    from hf_iqa.models.liqe import LiqeConfig, LiqeImageProcessor, LiqeModel

    torch.manual_seed(0)
    vision = {"hidden_act": "quick_gelu", "patch_size": 32}
    text = {"hidden_act": "quick_gelu", "eos_token_id": 49407}
    if small:
        vision |= {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
        text |= {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
    clip = CLIPConfig(text_config=text, vision_config=vision, projection_dim=64 if small else 512,
                      logit_scale_init_value=4.605170185988092)  # fmt: skip
    model = LiqeModel(LiqeConfig(clip_config=clip)).eval()
    with torch.no_grad():
        model.prompt_text_features.copy_(
            torch.nn.functional.normalize(torch.randn_like(model.prompt_text_features), dim=-1)
        )
    model.save_pretrained(folder)
    LiqeImageProcessor().save_pretrained(folder)
    return str(folder)


def make_folder(folder: Path, count: int, distinct: list[Path]) -> Path:
    """`count` image files (hard links to the distinct JPEGs, so that making 2,000 takes no time)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.link(distinct[i % len(distinct)], folder / f"{i:05d}.jpg")
    return folder


def throughput_worker(model_dir: str, folder: str, batch_size: int, workers: int) -> dict:
    import torch

    from hf_iqa import scoring

    pipe = scoring.load_pipeline(model_dir, device="cpu")
    inputs = scoring.open_inputs([folder])
    items = list(inputs.items())
    scorer = scoring.PipelineScorer(pipe)
    with torch.inference_mode():
        batches = [scoring.collate([scorer.prepare(item) for item in items[i : i + batch_size]])
                   for i in range(0, len(items), batch_size)]  # fmt: skip
        pipe.forward(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            pipe.forward(batch)
        model_only = len(items) / (time.perf_counter() - start)
        del batches

        busy = [0.0]
        predict = scorer.predict

        def timed(prepared):
            started = time.perf_counter()
            try:
                return predict(prepared)
            finally:
                busy[0] += time.perf_counter() - started

        scorer.predict = timed
        start = time.perf_counter()
        results = list(scoring.score_stream(inputs.items(), scorer, batch_size=batch_size, workers=workers))
        wall = time.perf_counter() - start
    assert len(results) == len(items) and not any(r.error for r in results)
    return {"model_only": model_only, "end_to_end": len(items) / wall, "model_busy": busy[0] / wall,
            "threads": torch.get_num_threads()}  # fmt: skip


def rss_worker(model_dir: str, folder: str, batch_size: int, workers: int) -> dict:
    from hf_iqa.cli import main as cli

    output = Path(folder).with_suffix(".csv")
    start = time.perf_counter()
    status = cli(["score", "-m", model_dir, folder, "-o", str(output), "--overwrite", "--no-progress",
                  "-b", str(batch_size), "--workers", str(workers)])  # fmt: skip
    rows = output.read_text().count("\n") - 1
    return {"status": status, "rows": rows, "peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images for the throughput comparison")
    parser.add_argument("--rss-counts", type=int, nargs=2, default=[100, 2000], help="folder sizes for peak RSS")
    parser.add_argument("--size", default="1024x768", help="JPEG size for the throughput part")
    parser.add_argument("--rss-size", default="320x240", help="JPEG size for the RSS part (LIQE's window inputs "
                        "cost the same per image at any size; small files keep 2,000 images quick)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="small LIQE for the throughput part too")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, model_dir, folder, batch, workers = args.worker
        function = throughput_worker if kind == "speed" else rss_worker
        print(json.dumps(function(model_dir, folder, int(batch), int(workers))))
        return

    from PIL import Image

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="hf_iqa_bench_") as temporary:
        root = Path(temporary)
        rng = np.random.default_rng(0)

        def jpegs(name: str, count: int, width: int, height: int) -> list[Path]:
            paths = []
            for i in range(count):
                base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
                path = root / name / f"{i:04d}.jpg"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(base).resize((width, height), Image.BICUBIC).save(path, quality=90)
                paths.append(path)
            return paths

        distinct = jpegs("distinct", args.images, width, height)
        rss_width, rss_height = (int(v) for v in args.rss_size.split("x"))
        rss_distinct = jpegs("rss_distinct", 50, rss_width, rss_height)
        small = save_liqe(root / "small", small=True)
        speed_model = small if args.small else save_liqe(root / "real", small=False)
        speed_folder = make_folder(root / "speed", args.images, distinct)
        speed = run_worker(__file__, "speed", speed_model, speed_folder, args.batch_size, args.workers)
        rss = {}
        for count in args.rss_counts:
            folder = make_folder(root / f"rss{count}", count, rss_distinct)
            rss[count] = run_worker(__file__, "rss", small, folder, args.batch_size, args.workers)
            assert rss[count]["rows"] == count, rss[count]

    few, many = args.rss_counts
    print(f"{args.size} JPEGs, batch {args.batch_size}, {args.workers} loader threads, torch threads "
          f"{speed['threads']}, load {os.getloadavg()[0]:.1f}, python {sys.version.split()[0]}")  # fmt: skip
    print(f"throughput ({'small' if args.small else 'real-size ViT-B/32'} LIQE, {args.images} images):")
    print(f"  model only   {speed['model_only']:7.2f} img/s")
    print(f"  end to end   {speed['end_to_end']:7.2f} img/s  = {speed['end_to_end'] / speed['model_only']:.2f} x "
          f"model-only (target >= 0.9); model busy {100 * speed['model_busy']:.0f} % of the time")  # fmt: skip
    print(f"peak RSS of `hf-iqa score FOLDER -o out.csv` (small LIQE, {args.rss_size} JPEGs):")
    for count in args.rss_counts:
        print(f"  {count:6d} images  {rss[count]['peak_rss_mb']:7.0f} MB  ({rss[count]['seconds']:.1f} s)")
    ratio = rss[many]["peak_rss_mb"] / rss[few]["peak_rss_mb"]
    print(f"  {many} vs {few} images: {ratio:.3f} x (target within 10 %)")


if __name__ == "__main__":
    main()
