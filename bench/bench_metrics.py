"""Cost of the confidence intervals and of the paired test, next to the plain metrics and to scoring, same run.

    python bench/bench_metrics.py                  # 10,000 images, 1,000 resamples, 3 models
    python bench/bench_metrics.py --images 2000 --score-images 4

Three baselines measured here: the plain metrics (`iqa_correlations(..., resamples=0)`: SRCC, KRCC, PLCC with the
logistic fit, RMSE), the intervals (`resamples=1000`), the paired bootstrap of 3 models on the same images, and
scoring: LIQE ViT-B/32 (random weights of the real size, `pyiqa` protocol, fp32, batch 4) through the engine on
`--score-images` synthetic 512x384 images, extrapolated per image to `--images`. Timings are the best of
`--repeats` runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def scoring_seconds_per_image(count: int) -> float:
    """LIQE ViT-B/32 (random weights, real size) through the engine, fp32, 512x384: seconds per image."""
    import math

    import torch
    from common import engine_scores, make_images, openai_model_module

    from hf_iqa.converters.liqe import build_model
    from hf_iqa.models.liqe import LiqeImageProcessor

    torch.manual_seed(0)
    clip = openai_model_module().CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
    state = clip.state_dict()
    state["logit_scale"] = torch.tensor(math.log(100.0))
    model = build_model(state, "mix", "pyiqa").eval()
    processor = LiqeImageProcessor(protocol="pyiqa")
    images = make_images("512x384", count)
    engine_scores(model, processor, images[:1], 1)  # warm-up
    start = time.perf_counter()
    engine_scores(model, processor, images, 4)
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--score-images", type=int, default=8, help="images scored to estimate scoring (0: skip)")
    args = parser.parse_args()

    from hf_iqa.metrics import iqa_correlations
    from hf_iqa.significance import paired_bootstrap

    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, args.images)
    models = {f"model_{k}": mos + rng.normal(0, noise, args.images) for k, noise in enumerate((0.6, 0.8, 1.0))}
    pred = models["model_0"]
    plain = best_time(lambda: iqa_correlations(pred, mos, resamples=0), args.repeats)
    intervals = best_time(lambda: iqa_correlations(pred, mos, resamples=args.resamples), args.repeats)
    paired = best_time(lambda: paired_bootstrap(models, mos, resamples=args.resamples), args.repeats)
    print(f"{args.images} images, {args.resamples} resamples, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"plain metrics (SRCC, KRCC, PLCC with logistic4 fit, RMSE): {plain:.3f} s")
    print(
        f"metrics + 95% intervals:                                  {intervals:.3f} s ({intervals / plain:.1f}x plain)"
    )
    print(f"paired bootstrap, 3 models (3 pairs):                     {paired:.3f} s ({paired / plain:.1f}x plain)")
    if args.score_images:
        per_image = scoring_seconds_per_image(args.score_images)
        scoring = per_image * args.images
        print(f"scoring with LIQE ViT-B/32 fp32 at 512x384: {per_image:.3f} s/img, {scoring:.0f} s for {args.images}")
        print(f"intervals + paired test as a fraction of scoring: {(intervals + paired) / scoring:.2e}")


if __name__ == "__main__":
    main()
