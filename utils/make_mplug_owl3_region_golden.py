"""Add the Dog-IQA *region* case to the mPLUG-Owl3 golden fixture (`tests/fixtures/mplug_owl3_tiny/`), computed by the
original remote code that Dog-IQA vendors. Not part of the package or the test suite: run it once, by hand, in an
environment where the original code runs, and commit only the data it writes.

    git clone -b zzq https://github.com/sjtuzzq/Dog-IQA /tmp/Dog-IQA
    python -m venv /tmp/orig && /tmp/orig/bin/pip install torch==2.14.1 torchvision==0.29.1 transformers==4.44.2 \
        einops icecream "numpy<2" pillow==10.4.0 safetensors tokenizers pytest
    /tmp/orig/bin/python utils/make_mplug_owl3_region_golden.py --original /tmp/Dog-IQA/dogiqa

It first recomputes the fixture's existing `dogiqa_single` logits and stops unless they match (so the environment
is the one the fixture was made with, to float noise), then writes `region_inputs.safetensors`,
`region_expected.safetensors` and `region_case.json`: the released region turn (`eval.py`'s loop body, whose
`<|image|>` and query lines are indented by 24 spaces where the global turn has 20) around a bounding-box crop of
`img_1200x1200.png`, as `eval.py` crops (numpy slicing of the RGB array, then `Image.fromarray`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mplug_owl3_tiny"
CROP_ROWS, CROP_COLS = (180, 780), (90, 660)  # a region's bounding box in img_1200x1200.png: 600 rows x 570 columns
REGION_INDENT = " " * 24  # eval.py, region loop; the global turn uses 20


def forward_logits(model, inputs: dict) -> torch.Tensor:
    """The original forward as the fixture's goldens call it: no attention mask, no position ids, batch 1."""
    with torch.no_grad():
        output = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                       media_offset=inputs["media_offset"])  # fmt: skip
    return output.logits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", required=True, help="the `dogiqa` folder of sjtuzzq/Dog-IQA (branch zzq)")
    args = parser.parse_args()
    sys.path[:0] = [args.original, str(ROOT)]
    from mplug_owl3.image_processing_mplugowl3 import mPLUGOwl3ImageProcessor
    from mplug_owl3.modeling_mplugowl3 import mPLUGOwl3Model
    from mplug_owl3.processing_mplugowl3 import mPLUGOwl3Processor
    from words_systems_queries import get_system_and_query

    from tests.models.mplug_owl3.golden_fixture import byte_tokenizer  # the fixture's id rule (no hf_iqa import)

    torch.manual_seed(0)
    model = mPLUGOwl3Model.from_pretrained(str(FIXTURE), attn_implementation="sdpa", torch_dtype=torch.float32).eval()
    tokenizer = byte_tokenizer()
    processor = mPLUGOwl3Processor(image_processor=mPLUGOwl3ImageProcessor(image_size=56), tokenizer=tokenizer)

    inputs = load_file(FIXTURE / "inputs.safetensors")
    expected = load_file(FIXTURE / "expected.safetensors")
    single = {key.split(".", 1)[1]: value for key, value in inputs.items() if key.startswith("dogiqa_single.")}
    drift = (forward_logits(model, single) - expected["dogiqa_single.logits"]).abs().max().item()
    print(f"dogiqa_single logits recomputed: max |diff| {drift:.2e}")
    if drift > 5e-6:
        print("not the fixture's environment: stopping", file=sys.stderr)
        return 1

    system, query = get_system_and_query("word", 7)  # eval.py's defaults: standard='word', n_word=7
    content = f" {system}\n{REGION_INDENT}<|image|>\n{REGION_INDENT}{query}"
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": ""}]
    image = np.array(Image.open(FIXTURE / "img_1200x1200.png").convert("RGB"))
    crop = Image.fromarray(image[CROP_ROWS[0] : CROP_ROWS[1], CROP_COLS[0] : CROP_COLS[1]])
    processed = processor(copy.deepcopy(messages), images=[crop], videos=None)  # it expands <|image|> in place
    region = {"input_ids": processed["input_ids"], "pixel_values": processed["pixel_values"],
              "media_offset": processed["media_offset"]}  # fmt: skip
    logits = forward_logits(model, region)
    save_file({f"dogiqa_region.{k}": v.contiguous() for k, v in region.items()}, FIXTURE / "region_inputs.safetensors")
    save_file({"dogiqa_region.logits": logits.contiguous()}, FIXTURE / "region_expected.safetensors")
    import transformers

    case = {
        "case": "dogiqa_region",
        "what": "the released Dog-IQA region turn (eval.py's loop body: 24-space indents) around a bounding-box crop",
        "messages_as_passed_to_processor": messages,
        "image": {"file": "img_1200x1200.png", "crop_rows": list(CROP_ROWS), "crop_cols": list(CROP_COLS),
                  "crop_size_wh": list(crop.size), "how": "numpy slicing of the RGB array, then Image.fromarray"},
        "processor": "mPLUGOwl3Processor(mPLUGOwl3ImageProcessor(image_size=56), byte tokenizer); "
        "processor(messages, images=[crop], videos=None)",
        "forward": "mPLUGOwl3Model.forward(pixel_values=..., input_ids=..., media_offset=...); no mask, batch 1",
        "seq_len": int(region["input_ids"].shape[1]),
        "num_tiles": int(region["pixel_values"].shape[0]),
        "max_abs_logit": float(logits.abs().max()),
        "argmax_last": int(logits[0, -1].argmax()),
        "check": {"dogiqa_single_logits_recomputed_max_abs_diff": drift},
        "environment": {"transformers": transformers.__version__, "torch": torch.__version__,
                        "pillow": Image.__version__, "numpy": np.__version__},
    }  # fmt: skip
    (FIXTURE / "region_case.json").write_text(json.dumps(case, indent=2) + "\n")
    print(f"wrote the region case: {case['seq_len']} tokens, {case['num_tiles']} tiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
