"""Helpers shared by the bench scripts: the OpenAI CLIP reference code, synthetic images, peak-RSS measurement and
the one-subprocess-per-configuration runner (so that each configuration's peak RSS is its own)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def openai_model_module():
    """`clip/model.py` of the openai-clip package, without its torchvision-importing `__init__`."""
    spec = importlib.util.find_spec("clip")
    if spec is None:
        raise SystemExit("the baseline needs the openai-clip package: pip install -e '.[test]'")
    path = os.path.join(spec.submodule_search_locations[0], "model.py")
    file_spec = importlib.util.spec_from_file_location("_openai_clip_model", path)
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


def make_images(size: str, count: int):
    """`count` random RGB PIL images of `size` = "WxH" (seeded)."""
    from PIL import Image

    width, height = (int(v) for v in size.split("x"))
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]


def reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the peak covers scoring (weights included), not loading."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def timed_scores(run, images: list) -> dict:
    """One untimed warm-up image, then `run(images)` timed with the peak RSS reset first: the worker's JSON
    (`seconds_per_image`, `peak_rss_mb`, `scores`)."""
    import torch

    with torch.inference_mode():
        run(images[:1])  # warm-up
        reset_peak_rss()
        start = time.perf_counter()
        scores = run(images)
        elapsed = time.perf_counter() - start
    return {
        "seconds_per_image": elapsed / len(images),
        "peak_rss_mb": peak_rss_mb(),
        "scores": scores.float().tolist(),
    }


def comparison_parser(description: str, sizes: list[str]) -> argparse.ArgumentParser:
    """The options of a baseline-vs-hf_iqa comparison (`--worker method size dtype count batch weights` is the
    hidden per-configuration subprocess call that `run_worker` makes)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=sizes)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--images", type=int, default=4, help="timed images per configuration")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    return parser


SPEED_UP_NOTE = "speed-up = fp32 baseline time / hf_iqa time (bf16 rows: against the fp32 baseline); Δscore against the fp32 baseline"


def answer_worker(args: argparse.Namespace, worker) -> bool:
    """In the `--worker` subprocess (see `comparison_parser`): measure the one configuration and print its JSON.
    False in the parent process, which goes on to the table."""
    if not args.worker:
        return False
    method, size, dtype, count, batch, weights = args.worker
    print(json.dumps(worker(method, size, dtype, int(count), int(batch), weights)))
    return True


def compare_workers(script: str, args: argparse.Namespace, weights_name: str, write_weights):
    """The rows of `compare` for every size and dtype of `args`, each side measured by `script --worker` in its own
    subprocess, all on one set of random weights that `write_weights(path)` writes once to a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, weights_name)
        write_weights(weights)

        def measure(method: str, size: str, dtype: str) -> dict:
            return run_worker(script, method, size, dtype, args.images, args.batch_size, weights)

        yield from compare(measure, args.sizes, args.dtypes)


def print_comparison(script: str, args: argparse.Namespace, weights_name: str, write_weights, extra=None) -> None:
    """The comparison table, a row per size and dtype as `compare_workers` measures it: s/img, speed-up against the
    fp32 baseline, peak RSS, max |Δscore|. `extra` = (header, row(size, base, ours)) adds columns after the speed-up."""
    extra_header, extra_row = extra or ("", None)
    print(f"{'size':>10} {'dtype':>9} | {'baseline s/img':>14} {'hf_iqa s/img':>12} {'speed-up':>8} | "
          f"{extra_header}{'base RSS MB':>11} {'hf_iqa RSS MB':>13} | {'max|Δscore|':>11}")  # fmt: skip
    for size, dtype, reference, base, ours, delta in compare_workers(script, args, weights_name, write_weights):
        middle = extra_row(size, base, ours) if extra_row else ""
        print(f"{size:>10} {dtype:>9} | {base['seconds_per_image']:>14.3f} {ours['seconds_per_image']:>12.3f} "
              f"{reference['seconds_per_image'] / ours['seconds_per_image']:>7.2f}x | {middle}"
              f"{base['peak_rss_mb']:>11.0f} {ours['peak_rss_mb']:>13.0f} | {delta:>11.2e}", flush=True)  # fmt: skip
    print(SPEED_UP_NOTE)


def run_worker(script: str, *arguments: object) -> dict:
    """Run `script --worker arguments...` in a fresh interpreter and return the JSON its last line prints."""
    command = [sys.executable, script, "--worker", *(str(a) for a in arguments)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def compare(measure, sizes: list[str], dtypes: list[str]):
    """For each size and dtype: (size, dtype, fp32 baseline, baseline in dtype, hf_iqa in dtype, max |Δscore|
    against the fp32 baseline), `measure(method, size, dtype)` giving each worker's JSON."""
    for size in sizes:
        reference = measure("baseline", size, "float32")
        for dtype in dtypes:
            base = reference if dtype == "float32" else measure("baseline", size, dtype)
            ours = measure("hf_iqa", size, dtype)
            delta = max(abs(a - b) for a, b in zip(ours["scores"], reference["scores"]))
            yield size, dtype, reference, base, ours, delta


def engine_scores(model, processor, images, batch_size: int, dtype=None, workers: int = 1):
    """hf_iqa's scores of in-memory PIL `images` through the one scoring loop, `hf_iqa.scoring.score_stream` (what
    `hf-iqa score` and `hf-iqa benchmark` run): the image-quality pipeline's preprocess in `workers` loader
    threads (inputs cast to `dtype` when given), one model call per batch. Returns the scores in input order."""
    import torch

    import hf_iqa
    from hf_iqa import scoring

    class Scorer(scoring.PipelineScorer):
        def prepare(self, item):
            inputs = super().prepare(item)
            if dtype is None:
                return inputs
            return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}

    pipe = hf_iqa.pipeline(model=model, image_processor=processor, device=model.device)
    items = (scoring.Item(str(i), source=image, index=i) for i, image in enumerate(images))
    results = list(scoring.score_stream(items, Scorer(pipe), batch_size=batch_size, workers=workers))
    failed = [r.error for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} image(s) failed: {failed[0]}")
    return torch.tensor([r.output["score"] for r in results])
