"""Learning check of the QualiCLIP self-supervised recipe, longer than the test allows.

A small randomly initialised QualiCLIP-style model (CLIP modified-ResNet image tower, fixed random prompt features)
is trained with `hf_iqa.training.qualiclip` on real photos that ship with scikit-image, then asked to order the 5
levels of each of the 24 degradations on held-out photos it never saw. Reported: the mean Spearman correlation
between its scores and the reversed level (1 = every sequence perfectly ordered), overall and per distortion
group, before and after training, for several seeds.

    pip install scikit-image
    python bench/bench_training_qualiclip.py --steps 1000 --seeds 0 1 2 [--width 16] [--crop-size 64]

Runs on CPU (a few minutes) or on a GPU if one is visible (`accelerate` picks it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

# real photos shipped in scikit-image's package data (no download); four are held out for the ranking test
TRAIN_PHOTOS = [
    "astronaut.png", "brick.png", "cell.png", "clock_motion.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg",
]  # fmt: skip
HELD_OUT_PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "camera.png"]


def prepare_photos(folder: Path, short_side: int) -> tuple[Path, Path]:
    """Copy the scikit-image photos into train/ and held_out/, resized so the short side is `short_side`."""
    import skimage
    from PIL import Image

    data = Path(skimage.__file__).parent / "data"
    for split, names in (("train", TRAIN_PHOTOS), ("held_out", HELD_OUT_PHOTOS)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            image = Image.open(data / name).convert("RGB")
            scale = short_side / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
            image.save(folder / split / f"{Path(name).stem}.png")
    return folder / "train", folder / "held_out"


def tiny_model_config(width: int, crop_size: int) -> dict:
    """A small RN tower; prompt scale 1 so scores never saturate (the ranking depends only on cos+ - cos-)."""
    return dict(
        vision_config=dict(
            layers=[1, 1, 1, 1], width=width, projection_dim=32, num_attention_heads=4, image_size=crop_size
        ),
        projection_dim=32,
        prompt_pairs=[["Good photo.", "Bad photo."]],
        prompt_logit_scale=1.0,
    )


def run(folder: Path, steps: int, seed: int, width: int, crop_size: int, learning_rate: float) -> dict:
    from accelerate.state import AcceleratorState, GradientState
    from transformers import AutoModel

    import hf_iqa.models
    from hf_iqa.io import find_images
    from hf_iqa.training import common, qualiclip

    hf_iqa.models.register_all()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train_dir, held_out_dir = folder / "train", folder / "held_out"
    config = qualiclip.QualiClipTrainingConfig(
        output_dir=str(folder / f"run_{seed}"), model_config=tiny_model_config(width, crop_size),
        image_dir=str(train_dir), crop_size=crop_size, train_batch_size=8, max_steps=steps, optimizer="adam",
        learning_rate=learning_rate, lr_scheduler="cosine", freeze_batch_norm=False, eval_steps=0,
        logging_steps=max(1, steps // 10), checkpointing_steps=0, seed=seed, report_to=[],
    )  # fmt: skip
    torch.manual_seed(seed)  # `train` seeds the same way before building: same initial weights
    untrained = qualiclip.build_model(config)
    pixels, groups = qualiclip.degraded_sequences(find_images([held_out_dir]), crop_size)
    before = qualiclip.level_ranking(untrained, pixels, groups)
    start = time.perf_counter()
    result = common.train(config, qualiclip.build_task)
    seconds = time.perf_counter() - start
    trained = AutoModel.from_pretrained(result.last_dir)
    after = qualiclip.level_ranking(trained, pixels, groups)
    losses = [round(h["loss"], 4) for h in result.history if "loss" in h]
    return {"seed": seed, "steps": steps, "train_seconds": round(seconds, 1), "before": before, "after": after,
            "losses": losses}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--short-side", type=int, default=160, help="photos are resized to this short side")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_qualiclip_"))
    try:
        prepare_photos(folder, args.short_side)
        results = []
        for seed in args.seeds:
            report = run(folder, args.steps, seed, args.width, args.crop_size, args.learning_rate)
            results.append(report)
            print(
                f"seed {seed}: level-ranking SRCC {report['before']['srcc']:+.3f} -> {report['after']['srcc']:+.3f} "
                f"({report['train_seconds']} s)"
            )
            print("  per group after:", {k[5:]: round(v, 3) for k, v in report["after"].items() if k != "srcc"})
        if args.output:
            Path(args.output).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
