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


def random_liqe():
    """A real-size LIQE (OpenAI ViT-B/32 shapes, quick_gelu, logit scale 100) with random weights."""
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
    return model


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
    from hf_iqa.models.liqe import LiqeImageProcessor

    width, height = (int(v) for v in args.size.split("x"))
    folder = Path(tempfile.mkdtemp(prefix="hf_iqa_bench_"))
    rng = np.random.default_rng(0)
    for i in range(args.images):
        base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((width, height), Image.BICUBIC).save(folder / f"{i:04d}.jpg", quality=90)
    files = find_images([folder])

    model = random_liqe()
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
