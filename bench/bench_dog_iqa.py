"""Dog-IQA throughput: hf_iqa vs the released procedure, on the same tiny random models, in one run.

released procedure (DQ `eval.py`): per image SAM2 masks, then one `generate(max_new_tokens=1)` per view (global +
every region crop), batch 1, no deduplication, no prefix cache.
hf_iqa: the same segmentation, then all views of all images in left-padded batches, identical views once, the
image-free prompt prefix encoded once, one forward pass per batch (`score_mode="expected"`, which also yields the
greedy digit of `"generate"`).

    python bench/bench_dog_iqa.py --images 16 --family qwen2_vl
Prints images/s of both, the speed-up, and MLLM forward passes per image. Not a test: nothing is asserted except
that both procedures read the same greedy digits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
sys.path.insert(0, TESTS)

from conftest import random_image  # noqa: E402
from test_dog_iqa_tiny_models import save_tiny_models  # noqa: E402

import hf_iqa.models  # noqa: E402
from hf_iqa.models.dog_iqa import DogIqaConfig, DogIqaModel  # noqa: E402
from hf_iqa.models.dog_iqa.segmentation_dog_iqa import crop_region  # noqa: E402


def released_procedure(model: DogIqaModel, images: list) -> tuple[list[list[int]], int]:
    """One greedy `generate` per view, batch 1, no dedup; returns the digits per image and the forward passes."""
    passes, digits = 0, []
    for image in images:
        array = np.asarray(image)
        regions = model.segment([array])[0]
        views = [array] + [crop_region(array, regions, r, model.config.crop_mode) for r in range(len(regions.areas))]
        row = []
        for view in views:
            inputs = model.backbone.full_inputs(view_to_pil(view))
            with torch.no_grad():
                token = model.mllm.generate(**inputs, max_new_tokens=1, do_sample=False)[0, -1]
            passes += 1
            text = model.backbone.tokenizer.decode([int(token)])
            row.append(int(text) if text.strip().isdigit() else 1)
        digits.append(row)
    return digits, passes


def view_to_pil(view):
    from PIL import Image

    return Image.fromarray(view)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--family", default="qwen2_vl", choices=["qwen2_vl", "idefics3"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-mode", default="bbox", choices=["bbox", "masked"], help="masked: views rarely repeat")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each procedure (best is reported)")
    args = parser.parse_args(argv)
    hf_iqa.models.register_all()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    paths = save_tiny_models(tempfile.mkdtemp(prefix="dog_iqa_bench_"), families=(args.family,))
    config = DogIqaConfig(
        segmenter_name_or_path=paths["sam2"], mllm_name_or_path=paths[args.family], pred_iou_thresh=0.0,
        min_region_area=200, view_batch_size=args.batch_size, crop_mode=args.crop_mode,
    )  # fmt: skip
    model = DogIqaModel.from_pretrained("unused", config=config)
    images = [random_image(args.width, args.height, seed) for seed in range(args.images)]
    start = time.perf_counter()
    model.segment([np.asarray(img) for img in images])  # the same segmentation for both: timed once, added to both
    seg_seconds = time.perf_counter() - start
    seg_cache = dict(model.segmentation_cache)

    def run_hf():
        model.view_cache.clear()
        model.backbone._prefix_cache = None
        start = time.perf_counter()
        out = model(images=images, score_mode="generate")
        return time.perf_counter() - start, out, dict(model.last_stats)

    def run_released():
        start = time.perf_counter()
        digits, passes = released_procedure(model, images)
        return time.perf_counter() - start, digits, passes

    hf_times, rel_times = [], []
    for _ in range(args.repeats):
        model.segmentation_cache.update(seg_cache)
        seconds, out, stats = run_hf()
        hf_times.append(seconds)
        seconds, digits, released_passes = run_released()
        rel_times.append(seconds)

    for i, row in enumerate(digits):
        c = int(out.num_regions[i])
        ours = [int(out.global_score[i])] + [int(v) for v in out.region_scores[i, :c].tolist()]
        if ours != row:
            print(f"warning: image {i}: greedy digits differ (hf_iqa {ours}, released {row})")
    n = args.images
    views = stats["views"]
    print(f"device cpu, {args.family} tiny, {n} images {args.width}x{args.height}, {views} views "
          f"({views / n:.2f}/image), view batch {args.batch_size}")  # fmt: skip
    print(
        f"released procedure: {n / min(rel_times):8.2f} images/s (MLLM side)   MLLM forward passes/image {released_passes / n:.2f}"
    )
    print(f"hf_iqa Dog-IQA    : {n / min(hf_times):8.2f} images/s (MLLM side)   MLLM forward passes/image "
          f"{stats['mllm_forward_passes'] / n:.2f} (unique views {stats['scored_views']})")  # fmt: skip
    print(
        f"speed-up, MLLM side: {min(rel_times) / min(hf_times):.2f}x; end to end with SAM2 "
        f"({seg_seconds / n * 1000:.0f} ms/image): {(min(rel_times) + seg_seconds) / (min(hf_times) + seg_seconds):.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
