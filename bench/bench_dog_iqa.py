"""Dog-IQA throughput: hf_iqa vs the released procedure, on the same models, in one run.

released procedure (DQ `eval.py`): per image SAM2 masks, then one `generate(max_new_tokens=1)` per view (global +
every region crop), batch 1, no deduplication, no prefix cache.
hf_iqa: the same segmentation, then all views of all images in left-padded batches, identical views once, the
image-free prompt prefix encoded once, one forward pass per batch (`score_mode="expected"`, which also yields the
greedy digit of `"generate"`). Also: one call per image (a pipeline with batch size 1) with and without a shared
`DogIqaCache`, i.e. the prompt prefix encoded once per run vs once per call.

    python bench/bench_dog_iqa.py --images 16 [--segmenter DIR --mllm DIR]
Without `--segmenter` / `--mllm` it builds tiny random SAM2 and Qwen2-VL folders (seeded, nothing downloaded). Prints
images/s, the speed-ups and MLLM forward passes per image. Not a test: nothing is asserted except that both
procedures read the same greedy digits.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hf_iqa.models  # noqa: E402
from hf_iqa.models.dog_iqa import DogIqaConfig, DogIqaModel  # noqa: E402
from hf_iqa.models.dog_iqa.segmentation_dog_iqa import crop_region  # noqa: E402

QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]


def textured_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth gradients + noise, so SAM2 finds regions (pure noise gives none)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([127 + 100 * np.sin(xx / (7 + seed % 5)) * np.cos(yy / 11), 127 + 100 * np.cos((xx + yy) / 13),
                     127 + 60 * np.sin(yy / 5)], axis=-1)  # fmt: skip
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8), "RGB")


def save_tiny_parts(root: str) -> tuple[str, str]:
    """A tiny random SAM2 (mask logits scaled so stability scores are not all 0) and a tiny Qwen2-VL with a
    byte-level tokenizer (the digits are single tokens; their lm_head rows scaled so greedy answers a digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Sam2Config,
        Sam2Model,
    )

    torch.manual_seed(0)
    hiera = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[128, 128],
                 blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                 num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                 global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2])  # fmt: skip
    sam = Sam2Model(Sam2Config(
        vision_config=dict(backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=32,
                           backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]]),
        prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16, mask_input_channels=8),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=32)))  # fmt: skip
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(4e5)
            mlp.proj_out.bias.mul_(4e5)
    sam.save_pretrained(os.path.join(root, "sam2"))

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    ids = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(token) for name, token in
           [("image", "<|image_pad|>"), ("video", "<|endoftext|>"), ("vision_start", "<|vision_start|>"),
            ("vision_end", "<|vision_end|>")]}  # fmt: skip
    mllm = Qwen2VLForConditionalGeneration(Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.pad_token_id),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2), **ids))  # fmt: skip
    with torch.no_grad():
        mllm.get_output_embeddings().weight[[tokenizer.convert_tokens_to_ids(str(d)) for d in range(1, 8)]] *= 20.0
    path = os.path.join(root, "qwen2_vl")
    mllm.save_pretrained(path)
    Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 2, max_pixels=28 * 28 * 12).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return os.path.join(root, "sam2"), path


def released_procedure(model: DogIqaModel, images: list, cache) -> list[list[int]]:
    """One greedy `generate` per view, batch 1, no dedup; returns the digits per image."""
    digits = []
    for image in images:
        array = np.asarray(image)
        regions = model.segment([array], cache)[0]
        views = [array] + [crop_region(array, regions, r, model.config.crop_mode) for r in range(len(regions.areas))]
        row = []
        for view in views:
            inputs = model.backbone.full_inputs(Image.fromarray(view))
            with torch.no_grad():
                token = model.mllm.generate(**inputs, max_new_tokens=1, do_sample=False)[0, -1]
            text = model.backbone.tokenizer.decode([int(token)])
            row.append(int(text) if text.strip().isdigit() else 1)
        digits.append(row)
    return digits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--segmenter", help="a Sam2Model folder (default: a tiny random one)")
    parser.add_argument(
        "--mllm", help="an MLLM folder with a Dog-IQA backbone adapter (default: tiny random Qwen2-VL)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-mode", default="bbox", choices=["bbox", "masked"], help="masked: views rarely repeat")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each procedure (best is reported)")
    args = parser.parse_args(argv)
    hf_iqa.models.register_all()

    segmenter, mllm = args.segmenter, args.mllm
    if segmenter is None or mllm is None:
        tiny_segmenter, tiny_mllm = save_tiny_parts(tempfile.mkdtemp(prefix="dog_iqa_bench_"))
        segmenter, mllm = segmenter or tiny_segmenter, mllm or tiny_mllm
    config = DogIqaConfig(
        segmenter_name_or_path=segmenter, mllm_name_or_path=mllm, pred_iou_thresh=0.0,
        min_region_area=200, view_batch_size=args.batch_size, crop_mode=args.crop_mode,
    )  # fmt: skip
    model = DogIqaModel.from_pretrained("unused", config=config)
    rows: list[int] = []  # batch rows of every MLLM forward pass (the model keeps no statistics)
    model.mllm.register_forward_pre_hook(lambda _, a, kw: rows.append(len(kw["input_ids"])), with_kwargs=True)
    images = [textured_image(args.width, args.height, seed) for seed in range(args.images)]
    segmented = model.make_cache()
    start = time.perf_counter()
    model.segment([np.asarray(img) for img in images], segmented)  # the same segmentation for all: timed once
    seg_seconds = time.perf_counter() - start

    def fresh_cache():  # segmentations kept, no view scores, no prefix
        cache = model.make_cache()
        cache.segmentations.update(segmented.segmentations)
        return cache

    def timed(run):
        rows.clear()
        start = time.perf_counter()
        result = run()
        return time.perf_counter() - start, result, list(rows)

    times = {"released": [], "hf_iqa": [], "per_call": [], "per_call_shared": []}
    for _ in range(args.repeats):
        seconds, out, hf_rows = timed(lambda: model(images=images, score_mode="generate", cache=fresh_cache()))
        times["hf_iqa"].append(seconds)
        seconds, _, per_call_rows = timed(lambda: [model(images=[i], cache=fresh_cache()) for i in images])
        times["per_call"].append(seconds)
        seconds, _, shared_rows = timed(lambda cache=fresh_cache(): [model(images=[i], cache=cache) for i in images])
        times["per_call_shared"].append(seconds)
        seconds, digits, released_rows = timed(lambda: released_procedure(model, images, segmented))
        times["released"].append(seconds)

    for i, row in enumerate(digits):
        c = int(out.num_regions[i])
        ours = [int(out.global_score[i])] + [int(v) for v in out.region_scores[i, :c].tolist()]
        if ours != row:
            print(f"warning: image {i}: greedy digits differ (hf_iqa {ours}, released {row})")
    n = args.images
    best = {name: min(values) for name, values in times.items()}
    views = int(out.num_regions.sum()) + n
    print(f"device cpu, {os.path.basename(mllm)}, {n} images {args.width}x{args.height}, {views} views "
          f"({views / n:.2f}/image), view batch {args.batch_size}")  # fmt: skip
    print(f"released procedure: {n / best['released']:8.2f} images/s (MLLM side)   MLLM forward passes/image "
          f"{len(released_rows) / n:.2f}")  # fmt: skip
    print(f"hf_iqa Dog-IQA    : {n / best['hf_iqa']:8.2f} images/s (MLLM side)   MLLM forward passes/image "
          f"{len(hf_rows) / n:.2f} (unique views {sum(hf_rows) - 1})")  # fmt: skip
    print(
        f"speed-up, MLLM side: {best['released'] / best['hf_iqa']:.2f}x; end to end with SAM2 "
        f"({seg_seconds / n * 1000:.0f} ms/image): {(best['released'] + seg_seconds) / (best['hf_iqa'] + seg_seconds):.2f}x"
    )
    print(f"one call per image: {n / best['per_call']:.2f} images/s with a cache per call "
          f"({len(per_call_rows) / n:.2f} passes/image), {n / best['per_call_shared']:.2f} images/s with one shared "
          f"cache ({len(shared_rows) / n:.2f} passes/image): {best['per_call'] / best['per_call_shared']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
