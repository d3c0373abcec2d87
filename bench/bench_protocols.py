"""Where hf_iqa's defaults meet or depart from the released code, measured (the figures of docs/protocols.md).

On six scikit-image photos (`skimage.data`), CPU, random weights (no released checkpoint is reachable offline):
LIQE as a real-size ViT-B/32 with 495 random prompt features, QualiCLIP as a real-size RN50 at native resolution,
UniQA as a real-size ViT-B/16 converted by `hf_iqa.converters.uniqa` from a random OpenAI-layout CLIP, Dog-IQA as
the golden fixture's tiny mPLUG-Owl3 (digit rows of `lm_head` x20) with a tiny random SAM2 on photos downscaled to
160 px. Each row compares two settings on the same weights and prints max and mean |score difference|; random
weights show the size of an effect, not its size on the released models.

    pip install scikit-image        # the photos
    python bench/bench_protocols.py [--models liqe qualiclip uniqa dog_iqa]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
ROWS: list[tuple[str, str, str, np.ndarray]] = []


def photos() -> list[np.ndarray]:
    from skimage import data

    return [np.ascontiguousarray(getattr(data, name)()[..., :3]) for name in PHOTOS]


def turned(array: np.ndarray) -> np.ndarray:
    """What EXIF orientation 6 shows: the stored pixels turned 90 degrees clockwise."""
    return np.ascontiguousarray(np.rot90(array, k=-1))


def scores(model, processor, arrays: list[np.ndarray], **forward) -> np.ndarray:
    with torch.no_grad():
        return np.array([
            float(model(**processor(images=Image.fromarray(a), return_tensors="pt"), **forward).scores[0])
            for a in arrays
        ])  # fmt: skip


def record(model: str, place: str, compared: str, a: np.ndarray, b: np.ndarray) -> None:
    ROWS.append((model, place, compared, np.abs(a - b)))
    print(f"  {model} / {place}: max {np.abs(a - b).max():.2g}", file=sys.stderr, flush=True)


def half_copy(model, folder: Path):
    """The model as `from_pretrained(..., dtype=torch.float16)` loads it (buffers such as prompt features stay)."""
    model.save_pretrained(folder)
    return type(model).from_pretrained(folder, dtype=torch.float16).eval()


def liqe(images: list[np.ndarray], work: Path) -> None:
    from bench_liqe import write_weights

    from hf_iqa.converters.liqe import build_model
    from hf_iqa.models.liqe import LiqeImageProcessor

    write_weights(work / "weights.pt")  # the speed bench's random ViT-B/32 and 495 prompt features
    saved = torch.load(work / "weights.pt", weights_only=True)
    model = build_model(saved["clip"], "mix", "official").eval()
    model.prompt_text_features.copy_(saved["prompt_text_features"])
    processor = LiqeImageProcessor()
    base = scores(model, processor, images)
    record("LIQE", "orientation", "EXIF-turned vs stored", scores(model, processor, [turned(a) for a in images]), base)
    record("LIQE", "dtype", "fp16 vs fp32", scores(half_copy(model, work / "liqe"), processor, images), base)


def qualiclip(images: list[np.ndarray], work: Path) -> None:
    from bench_qualiclip import write_weights

    from hf_iqa.converters.qualiclip import convert_resnet_state_dict
    from hf_iqa.models.qualiclip import QualiClipConfig, QualiClipImageProcessor, QualiClipModel

    write_weights(work / "weights.pt")  # the speed bench's random RN50 (random BatchNorm statistics), 14 features
    saved = torch.load(work / "weights.pt", weights_only=True)
    model = QualiClipModel(QualiClipConfig()).eval()
    weights = {f"vision_model.{k}": v for k, v in convert_resnet_state_dict(saved["visual"], prefix="").items()}
    model.load_state_dict({**weights, "prompt_text_features": saved["prompts_features"]}, strict=True)
    processor = QualiClipImageProcessor()
    base = scores(model, processor, images)
    record("QualiCLIP", "orientation", "EXIF-turned vs stored",
           scores(model, processor, [turned(a) for a in images]), base)  # fmt: skip
    record("QualiCLIP", "dtype", "fp16 vs fp32", scores(half_copy(model, work / "qualiclip"), processor, images), base)


def uniqa(images: list[np.ndarray], work: Path) -> None:
    from bench_uniqa import write_weights
    from transformers import AutoImageProcessor, AutoModel

    from hf_iqa.converters.uniqa import convert

    write_weights(work / "weights.pt")  # the speed bench's random ViT-B/16, as UniQA's bare CLIP state dict
    torch.save(torch.load(work / "weights.pt", weights_only=True)["clip"], work / "UniQA_weight.pt")
    folders = {
        "released": dict(),
        "no_roundtrip": dict(fp16_roundtrip_weights=False),
        "aesthetic": dict(aesthetics_prompts="aesthetic"),
    }
    for name, options in folders.items():
        convert(work / "UniQA_weight.pt", work / f"uniqa_{name}", progress=False, **options)
    load = lambda name: AutoModel.from_pretrained(work / f"uniqa_{name}").eval()  # noqa: E731
    processor = AutoImageProcessor.from_pretrained(work / "uniqa_released")
    model = load("released")
    base = scores(model, processor, images)
    record("UniQA", "orientation", "EXIF-turned vs stored", scores(model, processor, [turned(a) for a in images]), base)
    record("UniQA", "weights", "fp32 as stored vs fp16 round trip", scores(load("no_roundtrip"), processor, images),
           base)  # fmt: skip
    aesthetics = scores(model, processor, images, task="aesthetics")
    record("UniQA", "aesthetics prompts", "'... aesthetic image' vs released",
           scores(load("aesthetic"), processor, images, task="aesthetics"), aesthetics)  # fmt: skip
    by_seed = np.stack([scores(model, AutoImageProcessor.from_pretrained(work / "uniqa_released", crop_seed=seed),
                               images) for seed in range(5)])  # fmt: skip
    record("UniQA", "10 eval crops", "range over crop seeds 0-4", by_seed.max(0), by_seed.min(0))


def dog_iqa(images: list[np.ndarray], work: Path) -> None:
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hf_iqa.models.dog_iqa import DogIqaConfig, DogIqaImageProcessor, DogIqaModel
    from tests.models.dog_iqa.tiny_models import boost_digits, save_tiny_models
    from tests.models.mplug_owl3.golden_fixture import FIXTURE_DIR, byte_tokenizer

    folder = work / "mplug"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURE_DIR / name, folder / name)
    byte_tokenizer().save_pretrained(folder)
    sam2 = save_tiny_models(str(work / "sam2"), families=())["sam2"]
    small = []
    for array in images:
        picture = Image.fromarray(array)
        picture.thumbnail((160, 160), Image.BICUBIC)
        small.append(np.asarray(picture))

    def run(**settings) -> np.ndarray:
        config = DogIqaConfig(segmenter_name_or_path=sam2, mllm_name_or_path=str(folder), pred_iou_thresh=0.0,
                              min_region_area=200, points_per_side=4,
                              mllm_image_processor_kwargs={"size": {"height": 56, "width": 56}}, **settings)  # fmt: skip
        model = DogIqaModel.from_pretrained("unused", config=config)
        boost_digits(model.mllm, model.backbone.tokenizer)
        return scores(model, DogIqaImageProcessor(), small)

    base = run()
    record("Dog-IQA", "region prompt", "global prompt for regions vs released region prompt",
           run(region_user_template=None), base)  # fmt: skip
    expected = run(score_mode="expected")
    record("Dog-IQA", "reading", "softmax expectation vs greedy integer", expected, base)
    record("Dog-IQA", "region prompt (expectation reading)", "global prompt for regions vs released region prompt",
           run(score_mode="expected", region_user_template=None), expected)  # fmt: skip
    record("Dog-IQA", "aggregation", "released_code vs paper", run(protocol="released"), base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["liqe", "qualiclip", "uniqa", "dog_iqa"])
    args = parser.parse_args()
    images = photos()
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            print(f"{name} ...", file=sys.stderr, flush=True)
            target = Path(work) / name
            target.mkdir()
            globals()[name](images, target)
    sizes = ", ".join(f"{a.shape[1]}x{a.shape[0]}" for a in images)
    print(f"Photos: {', '.join(PHOTOS)} ({sizes}); torch {torch.__version__}, CPU, random weights\n")
    print("| model | place | compared | max abs diff | mean abs diff |\n|---|---|---|---|---|")
    for model, place, compared, diff in ROWS:
        print(f"| {model} | {place} | {compared} | {diff.max():.2g} | {diff.mean():.2g} |")


if __name__ == "__main__":
    main()
