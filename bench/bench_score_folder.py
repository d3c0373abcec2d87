"""Folder scoring throughput: `hf-iqa score`'s loop (decode + preprocess in threads, overlapping the model)
against model-only throughput (inputs preprocessed in advance) and a sequential loop, in one run.

Target (issue 10): end-to-end >= 0.8 x model-only. Uses a real-size LIQE (ViT-B/32, random weights) on JPEGs.

    python bench/bench_score_folder.py --images 32 --size 1024x768
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import hf_iqa
    from hf_iqa.commands.score import collate, score_files
    from hf_iqa.io import find_images

    sys_path = Path(__file__).resolve().parent
    import sys

    sys.path.insert(0, str(sys_path))
    from bench_liqe import build_model

    from hf_iqa.models.liqe import LiqeImageProcessor

    width, height = (int(v) for v in args.size.split("x"))
    folder = Path(tempfile.mkdtemp(prefix="hf_iqa_bench_"))
    rng = np.random.default_rng(0)
    for i in range(args.images):
        base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((width, height), Image.BICUBIC).save(folder / f"{i:04d}.jpg", quality=90)
    files = find_images([folder])

    model = build_model("float32")
    pipe = hf_iqa.pipeline(model=model, image_processor=LiqeImageProcessor())

    with torch.inference_mode():
        prepared = [pipe.preprocess(str(f)) for f in files[: args.batch_size]]
        pipe.forward(collate(prepared))  # warm-up

        batches = [collate([pipe.preprocess(str(f)) for f in files[i : i + args.batch_size]])
                   for i in range(0, len(files), args.batch_size)]  # fmt: skip
        start = time.perf_counter()
        for batch in batches:
            pipe.forward(batch)
        model_only = len(files) / (time.perf_counter() - start)

        start = time.perf_counter()
        for i in range(0, len(files), args.batch_size):
            pipe.forward(collate([pipe.preprocess(str(f)) for f in files[i : i + args.batch_size]]))
        sequential = len(files) / (time.perf_counter() - start)

        start = time.perf_counter()
        rows = list(score_files(pipe, files, args.batch_size, args.workers))
        end_to_end = len(files) / (time.perf_counter() - start)
    assert len(rows) == len(files) and not any(r.get("error") for r in rows)

    print(f"{len(files)} JPEGs {args.size}, batch {args.batch_size}, {args.workers} loader threads, "
          f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"model only      {model_only:7.2f} img/s")
    print(f"sequential loop {sequential:7.2f} img/s  ({sequential / model_only:.2f} x model-only)")
    print(f"hf-iqa score    {end_to_end:7.2f} img/s  ({end_to_end / model_only:.2f} x model-only)")


if __name__ == "__main__":
    main()
