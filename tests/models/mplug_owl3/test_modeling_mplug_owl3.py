"""mPLUG-Owl3 port vs the original remote code (golden fixture from transformers 4.44, fp32, CPU)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_iqa.models.mplug_owl3 import (
    MplugOwl3Config,
    MplugOwl3ForConditionalGeneration,
    MplugOwl3ImageProcessor,
    MplugOwl3Processor,
    default_dtype,
    placeholder_text,
    quantization_config,
    register_mplug_owl3,
    render_chat,
    select_grid,
)
from hf_iqa.models.mplug_owl3.modeling_mplug_owl3 import CACHE_NAME, QUANTIZATION_SKIP_MODULES, visible_tiles
from tests.models.mplug_owl3.golden_fixture import (
    FIXTURE_DIR,
    IMAGE_TOKEN_ID,
    PILLOW_MAJOR,
    byte_tokenizer,
    read_json,
    tiles_from_png,
)

ATOL = 1e-5
CASES = ("two_images", "dogiqa_single")
EOS = [258, 256]  # <|im_end|>, <|endoftext|>


def tiny_config() -> MplugOwl3Config:
    config = MplugOwl3Config.from_json_file(FIXTURE_DIR / "config.json")
    config.image_token_id = IMAGE_TOKEN_ID
    return config


@pytest.fixture(scope="module")
def model():
    model = MplugOwl3ForConditionalGeneration(tiny_config()).eval()
    model.load_state_dict(load_file(FIXTURE_DIR / "model.safetensors"), strict=True)
    return model


@pytest.fixture(scope="module")
def inputs():
    return load_file(FIXTURE_DIR / "inputs.safetensors")


@pytest.fixture(scope="module")
def expected():
    return load_file(FIXTURE_DIR / "expected.safetensors")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def left_pad(rows: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :], mask[index, width - len(row) :] = row, 1
    return ids, mask


# ---- model vs the original -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_original(model, inputs, expected, case):
    pixel_values = inputs[f"{case}.pixel_values"]
    with torch.no_grad():
        out = model(input_ids=inputs[f"{case}.input_ids"], pixel_values=pixel_values, output_hidden_states=True)
        vision = model.vision_model(pixel_values, output_hidden_states=True).hidden_states[-2]
        image_embeds = model.get_image_features(pixel_values)
    assert max_diff(vision, expected[f"{case}.vision_hidden_states_minus2"]) <= ATOL
    assert max_diff(image_embeds, expected[f"{case}.image_embeds"]) <= ATOL
    assert max_diff(torch.stack(out.hidden_states)[:, 0], expected[f"{case}.decoder_hidden_states"]) <= ATOL
    assert max_diff(out.logits, expected[f"{case}.logits"]) <= ATOL


def test_tokens_before_first_image_ignore_images(model, inputs, expected):
    """The original's logits up to and including the first <|image|> equal a text-only run."""
    ids = inputs["two_images.input_ids"]
    first = int((ids[0] == IMAGE_TOKEN_ID).nonzero()[0])
    with torch.no_grad():
        text_only = model(input_ids=ids[:, : first + 1]).logits
    assert max_diff(text_only, expected["two_images.logits"][:, : first + 1]) <= ATOL


def test_media_offset_rule(model, inputs):
    """Tile visibility from position ids == the original `media_offset` (tile k visible iff k < offset[i, 1])."""
    for case in CASES:
        ids, media_offset = inputs[f"{case}.input_ids"], inputs[f"{case}.media_offset"]
        exclusive_count = torch.cumsum(ids == IMAGE_TOKEN_ID, dim=1) - (ids == IMAGE_TOKEN_ID).long()
        assert torch.equal(media_offset[..., 1], exclusive_count) and not media_offset[..., 0].any()
        positions = torch.arange(ids.shape[1])[None]
        embeds = torch.zeros(int((ids == IMAGE_TOKEN_ID).sum()), 16, 64)
        _, media_positions = model.prepare_media(ids, positions, image_embeds=embeds)
        tile_index = torch.arange(media_positions.shape[1])
        assert torch.equal(visible_tiles(media_positions, positions), tile_index < media_offset[..., 1:])


def test_generate_matches_original(model, inputs, expected):
    ids = inputs["two_images.input_ids"]
    out = model.generate(
        input_ids=ids,
        pixel_values=inputs["two_images.pixel_values"],
        max_new_tokens=4,
        do_sample=False,
        eos_token_id=EOS,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    assert out.sequences[:, ids.shape[1] :].tolist() == expected["two_images.generate_new_token_ids"].tolist()
    assert max_diff(torch.stack(out.logits, dim=1), expected["two_images.generate_step_logits"]) <= ATOL


def test_generate_does_not_mask_token_id_0(model, inputs, expected):
    """Documented deviation: the original's generate passes pad_token_id=0 without a mask, so transformers masks
    every id-0 token ("!" here); ours keeps them, so its first step equals the plain forward (the golden logits)."""
    ids, pixel_values = inputs["dogiqa_single.input_ids"], inputs["dogiqa_single.pixel_values"]
    assert (ids == 0).sum() == 7
    out = model.generate(
        input_ids=ids,
        pixel_values=pixel_values,
        max_new_tokens=1,
        do_sample=False,
        pad_token_id=0,
        output_logits=True,
        return_dict_in_generate=True,
    )
    assert max_diff(out.logits[0], expected["dogiqa_single.logits"][:, -1]) <= ATOL
    assert max_diff(out.logits[0], expected["dogiqa_single.generate_step_logits"][:, 0]) > 1e-2


# ---- batching --------------------------------------------------------------------------------------------------
def test_left_padded_batch_equals_one_by_one(model, inputs, expected):
    rows = [inputs[f"{case}.input_ids"][0] for case in CASES]
    ids, mask = left_pad(rows)
    pixel_values = torch.cat([inputs[f"{case}.pixel_values"] for case in CASES])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_values).logits
    for index, case in enumerate(CASES):
        assert max_diff(logits[index, ids.shape[1] - len(rows[index]) :], expected[f"{case}.logits"][0]) <= ATOL

    batched = model.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixel_values,
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=0,
    )[:, ids.shape[1] :]
    for index, case in enumerate(CASES):
        single = model.generate(
            input_ids=rows[index][None],
            pixel_values=inputs[f"{case}.pixel_values"],
            max_new_tokens=3,
            do_sample=False,
            pad_token_id=0,
        )[:, len(rows[index]) :]
        assert torch.equal(batched[index], single[0])


def test_cached_prefix_with_inner_padding(model, inputs, expected):
    """[prefix | pad.. | rest] with the prefix from a KV cache (the Dog-IQA prefix-cache layout) == one-by-one."""
    rows = [inputs[f"{case}.input_ids"][0] for case in CASES]
    prefix_length = 16  # the shared ChatML header "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n"
    assert torch.equal(rows[0][:prefix_length], rows[1][:prefix_length])
    with torch.no_grad():
        prefix = rows[0][None, :prefix_length]
        cache = getattr(model(input_ids=prefix, use_cache=True), CACHE_NAME)
    rests = [row[prefix_length:] for row in rows]
    rest_ids, rest_mask = left_pad(rests)
    mask = torch.cat([torch.ones(2, prefix_length, dtype=torch.long), rest_mask], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_length:]
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(2)
    with torch.no_grad():
        logits = model(
            input_ids=rest_ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            pixel_values=torch.cat([inputs[f"{case}.pixel_values"] for case in CASES]),
            logits_to_keep=1,
        ).logits
    for index, case in enumerate(CASES):
        assert max_diff(logits[index, -1], expected[f"{case}.logits"][0, -1]) <= ATOL


def test_bfloat16_forward(model, inputs, expected):
    assert default_dtype("cuda") == torch.bfloat16 and default_dtype("cpu") == torch.float32
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        logits = bf16(
            input_ids=inputs["two_images.input_ids"], pixel_values=inputs["two_images.pixel_values"], logits_to_keep=1
        ).logits
    assert logits.dtype == torch.bfloat16
    assert max_diff(logits[0, -1], expected["two_images.logits"][0, -1]) < 0.1


# ---- loading and key names -------------------------------------------------------------------------------------
def test_published_7b_key_names_and_shapes():
    manifest = read_json("published_7b_manifest.json")
    with torch.device("meta"):
        model = MplugOwl3ForConditionalGeneration(MplugOwl3Config(**manifest["published_config_used"]))
    ours = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    published = {entry["name"]: entry["shape"] for entry in manifest["parameters"]}
    assert sorted(ours) == sorted(published)
    assert ours == published
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


def test_published_layout_loads_through_auto_class(tmp_path, inputs, expected):
    """A folder like the published repo (its config.json with the remote-code auto_map, model.safetensors) loads
    into our classes without trust_remote_code and without missing/unexpected keys."""
    register_mplug_owl3()
    shutil.copy(FIXTURE_DIR / "config.json", tmp_path)
    shutil.copy(FIXTURE_DIR / "model.safetensors", tmp_path)
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, MplugOwl3ForConditionalGeneration)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    model.config.image_token_id = IMAGE_TOKEN_ID
    with torch.no_grad():
        logits = model(input_ids=inputs["two_images.input_ids"], pixel_values=inputs["two_images.pixel_values"]).logits
    assert max_diff(logits, expected["two_images.logits"]) <= ATOL

    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    auto_map = json.loads((saved / "config.json").read_text())["auto_map"]
    assert all("_mplugowl3." not in target for target in auto_map.values())  # the original's remote code is gone
    assert auto_map["AutoModelForCausalLM"] == "modeling_mplug_owl3.MplugOwl3ForConditionalGeneration"


def test_remote_code_loads_without_hf_iqa(tmp_path, model, without_hf_iqa):
    register_mplug_owl3()
    model.save_pretrained(tmp_path)
    MplugOwl3ImageProcessor(size={"height": 56, "width": 56}).save_pretrained(tmp_path)
    stdout = without_hf_iqa(
        f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoImageProcessor, AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        inputs = load_file({str(FIXTURE_DIR / "inputs.safetensors")!r})
        expected = load_file({str(FIXTURE_DIR / "expected.safetensors")!r})
        with torch.no_grad():
            logits = model(input_ids=inputs["two_images.input_ids"], pixel_values=inputs["two_images.pixel_values"]).logits
        print(type(model).__module__.startswith("transformers_modules"), type(processor).__name__)
        print((logits - expected["two_images.logits"]).abs().max().item())
        """
    )
    flag, processor_name, diff = stdout.split()
    assert flag == "True" and processor_name == "MplugOwl3ImageProcessor"
    assert float(diff) <= ATOL


def test_quantization_config(monkeypatch):
    import importlib.util

    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        quantization_config(3)
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ImportError, match="bitsandbytes"):
            quantization_config(8)
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: object() if name == "bitsandbytes" else real_find_spec(name, *a),
        )
    config8, config4 = quantization_config(8), quantization_config(4)
    assert config8.load_in_8bit and config4.load_in_4bit and config4.bnb_4bit_quant_type == "nf4"
    assert (
        config4.llm_int8_skip_modules == QUANTIZATION_SKIP_MODULES == ["vision_model", "vision2text_model", "lm_head"]
    )


def test_bad_inputs_have_clear_errors(model, inputs):
    ids, pixel_values = inputs["two_images.input_ids"], inputs["two_images.pixel_values"]
    with pytest.raises(ValueError, match=r"11 <\|image\|> tokens .* but 10 image tiles"):
        model(input_ids=ids, pixel_values=pixel_values[:10])
    no_token = MplugOwl3ForConditionalGeneration(MplugOwl3Config.from_json_file(FIXTURE_DIR / "config.json"))
    with pytest.raises(ValueError, match="image_token_id is not set"):
        no_token(input_ids=ids, pixel_values=pixel_values)
    with pytest.raises(ValueError, match="1-based"):
        MplugOwl3Config(num_hidden_layers=4, hyper_layers=[0, 2])


# ---- image processor and processor -----------------------------------------------------------------------------
def test_anchor_selection_table():
    table = read_json("image_processor_expected.json")["anchor_selection_table_image_size_384"]
    assert len(table) == 38
    for row in table:
        assert list(select_grid(*row["size_wh"], tile_size=384)) == row["grid_rows_cols"], row


@pytest.mark.parametrize("name", ["img_500x300", "img_300x900", "img_1200x1200"])
def test_image_processor_reproduces_original_tiles(name):
    info = read_json("image_processor_expected.json")["images"][name]
    variant = info["pillow_ge_13_variant"]
    reference = info if PILLOW_MAJOR < 13 or variant["identical"] else variant
    out = MplugOwl3ImageProcessor()(Image.open(FIXTURE_DIR / info["file"]).convert("RGB"), return_tensors="pt")
    pixel_values = out["pixel_values"]
    assert pixel_values.dtype == torch.float32 and list(pixel_values.shape) == info["pixel_values_shape"]
    assert max_diff(pixel_values, tiles_from_png(reference["tiles_png"])) == 0.0
    sha = hashlib.sha256(pixel_values.numpy().astype("<f4").tobytes()).hexdigest()
    assert sha == reference["pixel_values_sha256_le_f32"]
    assert out["image_grids"].tolist() == [info["grid_rows_cols"]]
    assert placeholder_text(*info["grid_rows_cols"]) == info["placeholder_text_for_one_<|image|>"]
    single = MplugOwl3ImageProcessor()(Image.open(FIXTURE_DIR / info["file"]).convert("RGB"), cut_enable=False)
    assert list(single["pixel_values"].shape) == info["cut_enable_False_pixel_values_shape"]
    assert single["image_grids"].tolist() == [[0, 0]]


@pytest.mark.parametrize("case", CASES)
def test_processor_end_to_end_at_tile_56(inputs, case):
    """Prompt rendering, placeholder expansion, tokenization and tiles == the original processor's output."""
    info = read_json("inputs.json")["cases"][case]
    processor = MplugOwl3Processor(MplugOwl3ImageProcessor(size={"height": 56, "width": 56}), byte_tokenizer())
    images = [Image.open(FIXTURE_DIR / image["file"]).convert("RGB") for image in info["images"]]
    out = processor(info["messages_as_passed_to_processor"], images=images)
    assert torch.equal(out["input_ids"], inputs[f"{case}.input_ids"]) and out["attention_mask"].all()
    pillow13 = f"{case}.pixel_values_pillow13"
    reference = inputs[pillow13] if PILLOW_MAJOR >= 13 and pillow13 in inputs else inputs[f"{case}.pixel_values"]
    assert max_diff(out["pixel_values"], reference) == 0.0
    assert out["image_grids"].tolist() == [image["grid_rows_cols_at_tile_56"] for image in info["images"]]
    rendered = render_chat(info["messages_as_passed_to_processor"])
    pieces = rendered.split("<|image|>")
    grids = iter(out["image_grids"].tolist())
    expanded = pieces[0] + "".join(placeholder_text(*next(grids)) + piece for piece in pieces[1:])
    assert expanded == info["rendered_text"]


def test_processor_batches_left_padded(inputs):
    processor = MplugOwl3Processor(MplugOwl3ImageProcessor(size={"height": 56, "width": 56}), byte_tokenizer())
    cases = read_json("inputs.json")["cases"]
    conversations = [cases[case]["messages_as_passed_to_processor"] for case in CASES]
    images = [[Image.open(FIXTURE_DIR / i["file"]).convert("RGB") for i in cases[case]["images"]] for case in CASES]
    out = processor(conversations, images=images)
    ids, mask = left_pad([inputs[f"{case}.input_ids"][0] for case in CASES], pad_id=processor.image_token_id * 0)
    assert torch.equal(out["attention_mask"], mask)
    assert torch.equal(out["input_ids"][mask.bool()], ids[mask.bool()])
    assert out["pixel_values"].shape[0] == 11 + 5
    with pytest.raises(ValueError, match="2 <\\|image\\|> placeholders but 1 images"):
        processor(conversations[0], images=images[0][:1])
