"""UniQA speed: hf_iqa vs the upstream forward on the OpenAI CLIP code, measured in the same run.

Baseline (upstream `random_crop_test`, one image at a time as its test loader does): the OpenAI `clip/model.py`
ViT-B/16 from the openai-clip package; 10 crops of 224x224 from the [0, 1] image, normalised, stacked and encoded
in one forward, zero-shot head (softmax over the 5 level prompts, weighted by the levels), mean over crops.
hf_iqa: the same weights converted with `hf_iqa.converters.uniqa.build_model`, `UniQaImageProcessor` and
`UniQaModel` (flat inference loop: oneDNN linears, fused quick_gelu, class-token-only last layer), batches of
images. Both cut the same crops (the processor's seeded positions), so fp32 scores must agree to ~1e-5.

    python bench/bench_uniqa.py                     # 512x384, fp32 and bf16
    python bench/bench_uniqa.py --sizes 512x384 1024x768 --images 8
"""

from __future__ import annotations

import gc
import math
import os
import tempfile

import numpy as np
from common import (
    CLIP_MEAN,
    CLIP_STD,
    answer_worker,
    comparison_parser,
    engine_scores,
    make_images,
    openai_model_module,
    print_comparison,
    timed_scores,
)

MEAN, STD = CLIP_MEAN.reshape(3, 1, 1), CLIP_STD.reshape(3, 1, 1)
LEVELS = [0.2, 0.4, 0.6, 0.8, 1.0]


def openai_clip():
    return openai_model_module().CLIP(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12)  # ViT-B/16


def write_weights(path: str) -> None:
    import torch

    torch.manual_seed(0)
    state = openai_clip().state_dict()
    state["logit_scale"] = torch.tensor(math.log(100.0))
    prompts = torch.nn.functional.normalize(torch.randn(5, 512), dim=-1)
    torch.save({"clip": state, "prompts": prompts}, path)


def worker(method: str, size: str, dtype: str, count: int, batch_size: int, weights: str) -> dict:
    import torch
    import torch.nn.functional as F

    from hf_iqa.models.uniqa import UniQaImageProcessor
    from hf_iqa.models.uniqa.image_processing_uniqa import crop_positions

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    torch_dtype = getattr(torch, dtype)
    saved = torch.load(weights, weights_only=True)
    prompts = saved["prompts"]
    processor = UniQaImageProcessor()
    if method == "baseline":
        clip = openai_clip()
        clip.load_state_dict(saved["clip"])
        visual = clip.visual.eval().to(torch_dtype)
        for norm in visual.modules():  # OpenAI's LayerNorm computes in fp32 (as in its `convert_weights`)
            if isinstance(norm, torch.nn.LayerNorm):
                norm.float()
        scale = float(saved["clip"]["logit_scale"].exp())
        levels = torch.tensor(LEVELS)

        def run(images):
            scores = []
            for image in images:
                array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
                height, width = array.shape[1:]
                positions = crop_positions(height, width, 224, processor.num_crops, "random", processor.crop_seed)
                crops = np.stack([array[:, t : t + 224, left : left + 224] for t, left in positions])
                x = torch.from_numpy((crops - MEAN) / STD).to(torch_dtype)
                embeds = F.normalize(visual(x).float(), dim=-1)
                probs = (scale * embeds @ prompts.t()).softmax(dim=-1)
                scores.append((probs * levels).sum(dim=-1).mean()[None])
            return torch.cat(scores)

    else:
        from hf_iqa.converters.uniqa import build_model
        from hf_iqa.models.uniqa import UniQaModel

        model = build_model(saved["clip"], "vit")
        model.heads["quality"].prompt_text_features.copy_(prompts)
        if dtype != "float32":
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                model = UniQaModel.from_pretrained(folder, dtype=torch_dtype).eval()

        def run(images):  # the engine's loop, as `hf-iqa score` runs it (one loader thread)
            return engine_scores(model, processor, images, batch_size, torch_dtype)

    del saved
    gc.collect()
    return timed_scores(run, make_images(size, count))


def main() -> None:
    args = comparison_parser(__doc__, ["512x384"]).parse_args()
    if answer_worker(args, worker):
        return

    threads = int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))
    print(f"threads={threads} load={os.getloadavg()[0]:.1f} images={args.images} batch={args.batch_size}")
    print_comparison(__file__, args, "clip_vit_b16.pt", write_weights)


if __name__ == "__main__":
    main()
