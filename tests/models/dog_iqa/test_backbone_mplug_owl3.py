"""Dog-IQA with the paper's backbone: the mPLUG-Owl3 adapter against the golden fixture of the original code."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import hf_iqa  # noqa: F401  (registers mPLUG-Owl3)
from hf_iqa.models.dog_iqa.backbones_dog_iqa import adapter_class_for
from hf_iqa.models.dog_iqa.configuration_dog_iqa import DogIqaConfig
from hf_iqa.models.mplug_owl3 import MplugOwl3Config, MplugOwl3ForConditionalGeneration, MplugOwl3ImageProcessor
from tests.models.mplug_owl3.golden_fixture import FIXTURE_DIR, byte_tokenizer


@pytest.fixture(scope="module")
def adapter():
    config = MplugOwl3Config.from_json_file(FIXTURE_DIR / "config.json")
    model = MplugOwl3ForConditionalGeneration(config).eval()
    model.load_state_dict(load_file(FIXTURE_DIR / "model.safetensors"))
    processor = MplugOwl3ImageProcessor(size={"height": 56, "width": 56})
    return adapter_class_for("mplugowl3")(model, byte_tokenizer(), processor, DogIqaConfig())


def fixture_image(name: str) -> Image.Image:
    return Image.open(FIXTURE_DIR / name).convert("RGB")


def test_prompt_and_logits_match_the_original(adapter):
    inputs = load_file(FIXTURE_DIR / "inputs.safetensors")
    expected = load_file(FIXTURE_DIR / "expected.safetensors")
    view = fixture_image("img_1200x1200.png")
    assert torch.equal(adapter.full_inputs(view)["input_ids"], inputs["dogiqa_single.input_ids"])
    with torch.no_grad():
        logits = adapter.next_token_logits([view])
    torch.testing.assert_close(logits[0], expected["dogiqa_single.logits"][0, -1], atol=1e-5, rtol=0)
    assert len(adapter.score_token_ids) == 7


def test_batched_and_prefix_cache_equal_one_by_one(adapter):
    square = fixture_image("img_1200x1200.png")
    views = [square, fixture_image("img_500x300.png"), fixture_image("img_300x900.png"), square.crop((0, 0, 80, 200))]
    with torch.no_grad():
        singles = torch.cat([adapter.next_token_logits([v]) for v in views])
        batched = adapter.next_token_logits(views)
        cached = adapter.next_token_logits(views, prefix_cache=adapter.prefix_cache())
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached, singles, atol=1e-5, rtol=0)


def released_prompt_ids(adapter, view: Image.Image, indent: int) -> list[int]:
    """The released eval.py's message, restated: one user turn ' {system}', newline, `indent` spaces, the image,
    newline, `indent` spaces, the query (20 spaces for the whole image, 24 for the region crops), in the processor's
    ChatML with an empty system turn; the image token expands to the processor's tile placeholder text."""
    cfg = DogIqaConfig()
    pad = " " * indent
    content = f" {cfg.system_prompt}\n{pad}<|image|>\n{pad}{cfg.query_prompt}"
    text = f"<|im_start|>system\n<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    grid = tuple(adapter.image_processor([view], return_tensors="pt")["image_grids"][0].tolist())
    text = text.replace("<|image|>", adapter.image_processor.placeholder_text(*grid))
    ids: list[int] = []
    for index, chunk in enumerate(text.split("<|image|>")):
        if index:
            ids.append(adapter.image_token_id)
        ids.extend(adapter.tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return ids


def test_global_and_region_prompts_are_the_released_token_ids(adapter):
    cfg = DogIqaConfig()
    region_adapter = adapter_class_for("mplugowl3")(
        adapter.model, adapter.tokenizer, adapter.image_processor, DogIqaConfig(user_template=cfg.region_user_template)
    )
    assert cfg.region_user_template == " {system}\n" + " " * 24 + "{image}\n" + " " * 24 + "{query}"
    assert cfg.user_template == " {system}\n" + " " * 20 + "{image}\n" + " " * 20 + "{query}"
    for name in ("img_1200x1200.png", "img_500x300.png", "img_300x900.png"):
        view = fixture_image(name)
        global_ids = adapter.full_inputs(view)["input_ids"][0].tolist()
        region_ids = region_adapter.full_inputs(view)["input_ids"][0].tolist()
        assert global_ids == released_prompt_ids(adapter, view, 20)
        assert region_ids == released_prompt_ids(adapter, view, 24)
        assert region_ids != global_ids
