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


def test_float16_on_gpu_as_released_float32_on_cpu(monkeypatch):
    """The released eval.py loads mPLUG-Owl3 with torch_dtype=torch.half on GPU; on CPU hf_iqa keeps float32."""
    import transformers

    asked = []
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **kw: asked.append(kw))
    adapter_cls = adapter_class_for("mplugowl3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    adapter_cls.load_model("repo", device_map="cuda")
    adapter_cls.load_model("repo", device_map="cuda", dtype="auto")  # transformers' default word: the released one
    adapter_cls.load_model("repo", device_map="cpu")
    adapter_cls.load_model("repo", device_map="cuda", dtype=torch.bfloat16)  # the checkpoint's own type, on request
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    adapter_cls.load_model("repo", device_map="auto")
    expected = [torch.float16, torch.float16, torch.float32, torch.bfloat16, torch.float32]
    assert [kw["dtype"] for kw in asked] == expected


@pytest.fixture(scope="module")
def mplug_folder(tmp_path_factory):
    """The fixture's tiny mPLUG-Owl3 as a loadable folder (config, weights, the byte tokenizer)."""
    import shutil

    folder = tmp_path_factory.mktemp("mplug_owl3_tiny")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURE_DIR / name, folder / name)
    byte_tokenizer().save_pretrained(folder)
    return folder


def test_an_mllm_loaded_without_dtype_takes_its_released_precision_where_it_goes(mplug_folder, tmp_path, monkeypatch):
    """Loaded on CPU (float32), moved to an accelerator: cast to float16 first, as the released eval.py ran it; moved
    back to CPU: float32 again. A dtype given at loading or in `to()` is left alone."""
    from hf_iqa.models.dog_iqa import DogIqaModel
    from tests.models.dog_iqa.tiny_models import save_tiny_models

    sam2 = save_tiny_models(str(tmp_path), families=())["sam2"]
    config = DogIqaConfig(segmenter_name_or_path=sam2, mllm_name_or_path=str(mplug_folder), backbone="mplug_owl3")
    model = DogIqaModel.from_pretrained("unused", config=DogIqaConfig(**config.to_diff_dict()))
    assert model.mllm.dtype == torch.float32 and model.released_mllm_dtype == torch.float16
    model.to("cpu")
    assert model.mllm.dtype == torch.float32
    model.mllm.half()
    model.to(torch.device("cpu"))  # CPU: float32, however it got to half precision
    assert model.mllm.dtype == torch.float32
    model.to("meta")  # any device but the CPU stands for the GPU here
    assert model.mllm.dtype == torch.float16 and model.mllm.device.type == "meta"
    assert model.segmenter.dtype == torch.float32  # SAM2 keeps the precision it was saved in
    pinned = DogIqaModel.from_pretrained("unused", config=DogIqaConfig(**config.to_diff_dict()), dtype=torch.float32)
    assert pinned.released_mllm_dtype is None
    pinned.to("meta")
    assert pinned.mllm.dtype == torch.float32
    explicit = DogIqaModel.from_pretrained("unused", config=DogIqaConfig(**config.to_diff_dict()))
    explicit.to("meta", torch.bfloat16)  # a dtype in to(): everything in it
    assert explicit.mllm.dtype == torch.bfloat16
    moves = []
    monkeypatch.setattr(DogIqaModel, "to", lambda self, *args, **kwargs: moves.append(args))  # `cuda()` uses `to()`
    explicit.cuda(), explicit.cuda(1)
    assert moves == [("cuda",), (torch.device("cuda", 1),)]


def test_region_view_matches_the_original_code_token_for_token(mplug_folder, tmp_path):
    """The golden region case (utils/make_mplug_owl3_region_golden.py: the original remote code, run on the released
    eval.py's region turn around a bounding-box crop): the model's own region crop and region prompt give the
    original's input ids, tiles and next-token logits."""
    import json

    import numpy as np

    from hf_iqa.models.dog_iqa import DogIqaModel
    from hf_iqa.models.dog_iqa.segmentation_dog_iqa import build_regions, crop_region
    from tests.models.dog_iqa.tiny_models import save_tiny_models

    case = json.loads((FIXTURE_DIR / "region_case.json").read_text())
    inputs = load_file(FIXTURE_DIR / "region_inputs.safetensors")
    expected = load_file(FIXTURE_DIR / "region_expected.safetensors")
    sam2 = save_tiny_models(str(tmp_path), families=())["sam2"]
    config = DogIqaConfig(segmenter_name_or_path=sam2, mllm_name_or_path=str(mplug_folder),
                          mllm_image_processor_kwargs={"size": {"height": 56, "width": 56}})  # fmt: skip
    model = DogIqaModel.from_pretrained("unused", config=config)
    assert case["messages_as_passed_to_processor"][0]["content"] == config.region_user_template.format(
        system=config.system_prompt, image="<|image|>", query=config.query_prompt
    )
    image = np.asarray(fixture_image(case["image"]["file"]))
    (r0, r1), (c0, c1) = case["image"]["crop_rows"], case["image"]["crop_cols"]
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[r0:r1, c0:c1] = True
    regions = build_regions(mask[None], np.array([mask.sum()]), *mask.shape, min_area=1000, add_leftover=False)
    view = Image.fromarray(crop_region(image, regions, 0))
    assert view.size == tuple(case["image"]["crop_size_wh"])
    full = model.region_backbone.full_inputs(view)
    assert torch.equal(full["input_ids"], inputs["dogiqa_region.input_ids"])
    assert not torch.equal(model.backbone.full_inputs(view)["input_ids"], inputs["dogiqa_region.input_ids"])
    torch.testing.assert_close(full["pixel_values"], inputs["dogiqa_region.pixel_values"], atol=1e-6, rtol=0)
    with torch.no_grad():
        logits = model.region_backbone.next_token_logits([view])
    torch.testing.assert_close(logits[0], expected["dogiqa_region.logits"][0, -1], atol=1e-5, rtol=0)
