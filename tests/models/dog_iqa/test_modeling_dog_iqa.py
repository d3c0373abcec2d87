"""Dog-IQA end to end on tiny random SAM2 / Qwen2-VL / Idefics3 models (offline, CPU)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoTokenizer

import hf_iqa.models
from hf_iqa.models.dog_iqa import DogIqaConfig, DogIqaImageProcessor, DogIqaModel, aggregate_scores
from hf_iqa.models.dog_iqa.modeling_dog_iqa import split_loader_options
from tests.models.dog_iqa.tiny_models import save_tiny_models
from tests.testing_utils import random_image

hf_iqa.models.register_all()

# Settings that make the tiny random SAM2 keep a mask (its predicted IoUs are all ~0.5) on 96 x 64 images;
# a 4 x 4 grid keeps the tests fast.
TINY = dict(pred_iou_thresh=0.0, min_region_area=200, points_per_side=4)


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    return save_tiny_models(str(tmp_path_factory.mktemp("dog_iqa_tiny")))


def make_model(paths, family="qwen2_vl", **overrides) -> DogIqaModel:
    config = DogIqaConfig(
        segmenter_name_or_path=paths["sam2"], mllm_name_or_path=paths[family], **{**TINY, **overrides}
    )
    return DogIqaModel.from_pretrained("unused", config=config)


def images(n=3):
    return [random_image(96, 64, seed) for seed in range(n)]


def reference_view_logits(model: DogIqaModel, view: np.ndarray, region: bool = False) -> torch.Tensor:
    """The next-token logits of one view from a plain, unpadded, uncached forward of the MLLM (`region`: with the
    region views' prompt)."""
    backbone = model.region_backbone if region else model.backbone
    inputs = backbone.full_inputs(Image.fromarray(view))  # Qwen2-VL computes its own M-RoPE positions
    with torch.no_grad():
        return model.mllm(**inputs).logits[0, -1].float()


def test_from_pretrained_loads_both_sub_models_and_saves_config_and_code_only(tiny_paths, tmp_path):
    config = DogIqaConfig(segmenter_name_or_path=tiny_paths["sam2"], mllm_name_or_path=tiny_paths["qwen2_vl"], **TINY)
    config.save_pretrained(tmp_path / "dog")
    model = AutoModel.from_pretrained(str(tmp_path / "dog"), aggregation="released_code")
    assert isinstance(model, DogIqaModel) and model.config.aggregation == "released_code"
    reference = AutoModelForImageTextToText.from_pretrained(tiny_paths["qwen2_vl"])
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.mllm.state_dict()[name], tensor, rtol=0, atol=0)
    sam = AutoModel.from_pretrained(tiny_paths["sam2"])
    torch.testing.assert_close(model.segmenter.state_dict(), sam.state_dict(), rtol=0, atol=0)

    model.save_pretrained(tmp_path / "saved")
    files = sorted(os.listdir(tmp_path / "saved"))
    assert not any(f.endswith(".safetensors") for f in files)
    for code in ("modeling_dog_iqa.py", "configuration_dog_iqa.py", "segmentation_dog_iqa.py", "backbones_dog_iqa.py"):
        assert code in files
    assert DogIqaConfig.from_pretrained(tmp_path / "saved").auto_map["AutoModel"].endswith("DogIqaModel")


def test_from_parts_equals_from_pretrained_and_loaded_parts_are_reused(tiny_paths):
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging

    loaded = make_model(tiny_paths, "qwen2_vl")
    expected = loaded(images=images(1)).scores
    config = DogIqaConfig(segmenter_name_or_path=tiny_paths["sam2"], mllm_name_or_path=tiny_paths["qwen2_vl"], **TINY)
    built = DogIqaModel.from_parts(config, loaded.segmenter, loaded.mllm)
    assert built.mllm is loaded.mllm and built.base_model is loaded.mllm
    assert built.backbone.prefix_ids == loaded.backbone.prefix_ids
    torch.testing.assert_close(built(images=images(1)).scores, expected, rtol=0, atol=0)
    with CaptureLogger(logging.get_logger("hf_iqa.models.dog_iqa.modeling_dog_iqa")) as captured:
        reused = DogIqaModel.from_pretrained("unused", config=DogIqaConfig(**config.to_diff_dict()), variant="fp16",
                                             segmenter=loaded.segmenter, mllm=loaded.mllm, seg_lambda=0.2)  # fmt: skip
    assert "ignoring keyword arguments ['variant']" in captured.out
    assert reused.mllm is loaded.mllm and reused.segmenter is loaded.segmenter and reused.config.seg_lambda == 0.2
    assert float(reused(images=images(1)).scores) > float(expected)  # paper aggregation: + (0.2 - 0.1) c / 2


def test_loader_options_go_to_their_part():
    options = split_loader_options(dict(
        dtype=torch.bfloat16, segmenter_dtype=torch.float32, device_map="cpu", revision="v1", cache_dir="/c",
        trust_remote_code=True, attn_implementation="eager", load_in_4bit=True, aggregation="global",
        adapter_kwargs={}, _from_auto=True, variant="fp16",
    ))  # fmt: skip
    assert options["repo"] == {"cache_dir": "/c", "revision": "v1"}
    assert options["segmenter"] == {"cache_dir": "/c", "dtype": torch.float32, "device_map": "cpu"}
    mllm = options["mllm"]
    assert mllm.pop("quantization_config").load_in_4bit
    assert mllm == {"cache_dir": "/c", "dtype": torch.bfloat16, "device_map": "cpu", "trust_remote_code": True,
                    "attn_implementation": "eager"}  # fmt: skip
    assert options["mllm_files"] == {"cache_dir": "/c", "trust_remote_code": True}
    assert options["config"] == {"aggregation": "global", "variant": "fp16"}  # variant: ignored with a warning
    assert split_loader_options({"torch_dtype": torch.float16})["segmenter"]["dtype"] == torch.float16


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_whole_path_expected_mode_equals_plain_forward(tiny_paths, family):
    model = make_model(tiny_paths, family, crop_mode="masked", score_mode="expected")
    batch = images(3)
    processor = DogIqaImageProcessor()
    out = model(**processor(batch, return_tensors="pt"))
    assert list(out.keys())[0] == "scores" and out.scores.shape == (3,)
    assert torch.all(out.num_regions >= 2)  # one SAM2 mask + the leftover region on these images
    torch.testing.assert_close(out.level_probs.sum(-1), torch.ones(3))
    levels = torch.arange(1, 8, dtype=torch.float64)
    digit_ids = model.backbone.score_token_ids
    for i, image in enumerate(batch):
        array = np.asarray(image)
        probs = reference_view_logits(model, array)[digit_ids].double().softmax(-1)
        assert float(out.global_score[i]) == pytest.approx(float((probs * levels).sum()), abs=1e-5)
        regions = model.segment([array])[0]
        for r in range(int(out.num_regions[i])):
            x0, y0, x1, y1 = out.region_boxes[i, r].tolist()
            crop = np.where(regions.masks[r][:, :, None], array, 0).astype(np.uint8)[y0:y1, x0:x1]
            probs = reference_view_logits(model, crop, region=True)[digit_ids].double().softmax(-1)
            torch.testing.assert_close(out.region_level_probs[i, r].double(), probs, atol=1e-5, rtol=0)
    assert torch.isnan(out.region_scores[out.num_regions[:, None] <= torch.arange(out.region_scores.shape[1])]).all()


def test_generate_mode_equals_greedy_generate(tiny_paths):
    model = make_model(tiny_paths, "qwen2_vl", score_mode="generate", crop_mode="masked")
    batch = images(2)
    out = model(images=batch)
    for i, image in enumerate(batch):
        inputs = model.backbone.full_inputs(image)
        with torch.no_grad():
            token = model.mllm.generate(**inputs, max_new_tokens=1, do_sample=False)[0, -1]
        text = model.backbone.tokenizer.decode([int(token)])
        assert text.isdigit()  # the boosted digit rows make greedy decoding answer with a digit
        assert float(out.global_score[i]) == float(int(text))
    assert torch.all(out.region_scores[~torch.isnan(out.region_scores)] % 1 == 0)


class CallCounter:
    """Counts calls of the MLLM and of SAM2's image encoder (forward pre-hooks: the model keeps no statistics)."""

    def __init__(self, model: DogIqaModel) -> None:
        self.mllm = self.segmenter = 0
        model.mllm.register_forward_pre_hook(lambda *_: self._add("mllm"))
        model.segmenter.vision_encoder.register_forward_pre_hook(lambda *_: self._add("segmenter"))

    def _add(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)

    def take(self) -> tuple[int, int]:
        counts, self.mllm, self.segmenter = (self.mllm, self.segmenter), 0, 0
        return counts


def test_aggregations_match_hand_computation_and_reuse_the_cache(tiny_paths):
    model = make_model(tiny_paths, "idefics3", crop_mode="masked", score_mode="expected")
    calls = CallCounter(model)
    batch = images(2)
    cache = model.make_cache()
    paper = model(images=batch, cache=cache)
    assert calls.take()[0] > 0
    released = model(images=batch, aggregation="released_code", cache=cache)
    assert calls.take() == (0, 0)  # views and segmentations from the cache
    for i in range(2):
        c = int(paper.num_regions[i])
        s = paper.region_scores[i, :c].tolist()
        a = paper.region_areas[i, :c].tolist()
        assert len(set(round(v, 6) for v in s)) == c  # distinct region scores: the area weighting matters
        s_aw = sum(ai * si for ai, si in zip(a, s)) / sum(a)
        g = float(paper.global_score[i])
        assert float(paper.scores[i]) == pytest.approx((g + s_aw + 0.1 * c) / 2, abs=1e-5)
        assert float(released.scores[i]) == pytest.approx(s_aw + 0.1 * c + 0.5 * g, abs=1e-5)
        assert float(paper.local_score[i]) == pytest.approx(s_aw, abs=1e-5)
    generate = model(images=batch, score_mode="generate", cache=cache)  # same forward passes give the digits too
    assert calls.take() == (0, 0)
    assert torch.all(generate.global_score % 1 == 0)
    again = model(images=batch, aggregation="released_code")  # no cache: everything recomputed, same numbers
    assert calls.take()[0] > 0
    torch.testing.assert_close(again.scores, released.scores, rtol=0, atol=0)


def test_model_keeps_no_state_between_calls(tiny_paths):
    model = make_model(tiny_paths, "qwen2_vl")
    before = {name: set(vars(obj)) for name, obj in (("model", model), ("backbone", model.backbone))}
    calls = CallCounter(model)
    first = model(images=images(2))
    counts = calls.take()
    second = model(images=images(2))
    assert calls.take() == counts  # nothing reused from the first call: the model keeps no cache
    after = {name: set(vars(obj)) for name, obj in (("model", model), ("backbone", model.backbone))}
    assert after == before
    for name in ("last_stats", "segmentation_cache", "view_cache"):
        assert not hasattr(model, name)
    assert not any("cache" in name for name in vars(model.backbone))
    for field in ("scores", "level_probs", "region_level_probs"):
        torch.testing.assert_close(second[field], first[field], rtol=0, atol=0, equal_nan=True)
    other = make_model(tiny_paths, "qwen2_vl")
    with pytest.raises(ValueError, match="another DogIqaModel"):
        other(images=images(1), cache=model.make_cache())


def test_a_cache_encodes_the_prompt_prefix_once_across_calls(tiny_paths):
    model = make_model(tiny_paths, "qwen2_vl", crop_mode="masked", view_batch_size=8)
    calls = CallCounter(model)
    batch = images(3)
    alone = [model(images=[image]) for image in batch]
    without = calls.take()[0]
    cache = model.make_cache()
    shared = [model(images=[image], cache=cache) for image in batch]
    # two prefixes (global and region prompt) once instead of once per call, the same view passes
    assert calls.take()[0] == without - 4
    for one, other in zip(alone, shared):
        torch.testing.assert_close(other.scores, one.scores, rtol=0, atol=0)


def test_cache_memory_is_bounded_in_bytes_whatever_the_image_size(tiny_paths, monkeypatch):
    """Segmentations hold full-resolution masks: the cache keeps at most SEGMENTATION_CACHE_BYTES of them, so a long
    run over big pictures does not grow without bound; results are the same with or without the cache."""
    import hf_iqa.models.dog_iqa.modeling_dog_iqa as dog

    model = make_model(tiny_paths, "qwen2_vl", crop_mode="masked", view_batch_size=8)
    batch = images(3)
    one = model.segment([np.asarray(batch[0])])[0]
    monkeypatch.setattr(dog, "SEGMENTATION_CACHE_BYTES", int(one.masks.nbytes * 1.5))  # room for one, not two
    cache = model.make_cache()
    shared = [model(images=[image], cache=cache) for image in batch]
    assert len(cache.segmentations) < len(batch)  # older entries dropped to stay under the byte budget
    assert cache.segmentations.total_bytes == sum(r.masks.nbytes for r in cache.segmentations.values())
    assert cache.segmentations.total_bytes <= dog.SEGMENTATION_CACHE_BYTES
    for image, result in zip(batch, shared):
        torch.testing.assert_close(model(images=[image]).scores, result.scores, rtol=0, atol=0)


def test_aggregate_scores_on_padded_values():
    global_score = torch.tensor([4.0, 2.0])
    region_scores = torch.tensor([[3.0, 6.0, float("nan")], [5.0, float("nan"), float("nan")]])
    region_areas = torch.tensor([[1000.0, 3000.0, 0.0], [6000.0, 0.0, 0.0]])
    num_regions = torch.tensor([2, 1])
    paper = aggregate_scores(global_score, region_scores, region_areas, num_regions, "paper")
    # image 0: s_aw = (3 * 1000 + 6 * 3000) / 4000 = 5.25 -> (4 + 5.25 + 0.2) / 2; image 1: (2 + 5 + 0.1) / 2
    torch.testing.assert_close(paper, torch.tensor([4.725, 3.55]))
    released = aggregate_scores(global_score, region_scores, region_areas, num_regions, "released_code")
    torch.testing.assert_close(released, torch.tensor([5.25 + 0.2 + 2.0, 5.0 + 0.1 + 1.0]))
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_scores(global_score, region_scores, region_areas, num_regions, "mean")


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_batched_equals_one_by_one(tiny_paths, family):
    batch = images(2)
    batched = make_model(tiny_paths, family, crop_mode="masked", view_batch_size=8)(images=batch)
    single = make_model(tiny_paths, family, crop_mode="masked", view_batch_size=1, dedup_views=False,
                        reuse_prefix_cache=False)  # fmt: skip
    for i, image in enumerate(batch):
        one = single(images=[image])
        torch.testing.assert_close(batched.scores[i : i + 1], one.scores, atol=1e-5, rtol=0)
        c = int(one.num_regions[0])
        torch.testing.assert_close(batched.region_level_probs[i, :c], one.region_level_probs[0, :c], atol=1e-5, rtol=0)


def test_dedup_and_prefix_reuse_change_nothing(tiny_paths):
    batch = images(2) + [images(1)[0]]  # a repeated image
    results, passes = {}, {}
    for dedup in (True, False):
        for prefix in (True, False):
            model = make_model(tiny_paths, "qwen2_vl", dedup_views=dedup, reuse_prefix_cache=prefix, view_batch_size=4)
            rows = passes[dedup, prefix] = []
            model.mllm.register_forward_pre_hook(lambda _, args, kwargs, rows=rows: rows.append(len(kwargs["input_ids"])),
                                                 with_kwargs=True)  # fmt: skip
            results[dedup, prefix] = model(images=batch)
    for out in results.values():
        for field in ("scores", "level_probs", "region_level_probs"):
            torch.testing.assert_close(out[field], results[False, False][field], atol=1e-5, rtol=0, equal_nan=True)
    # 9 views; bbox crops of the mask and of the leftover region span the whole frame here: one unique view per image
    # (the crops equal the whole image, but the region prompt differs: scored again, as the released code does)
    assert sum(passes[True, False]) == 4 and sum(passes[False, False]) == 9
    # each prompt's prefix (batch 1) once, then the same view batches
    assert passes[True, True] == [1, passes[True, False][0], 1, passes[True, False][1]]


def test_idefics3_image_tokens_match_the_transformers_processor(tiny_paths):
    from transformers import Idefics3Processor

    model = make_model(tiny_paths, "idefics3")
    processor = Idefics3Processor(
        image_processor=AutoImageProcessor.from_pretrained(tiny_paths["idefics3"], backend="pil"),
        tokenizer=AutoTokenizer.from_pretrained(tiny_paths["idefics3"]),
        image_seq_len=model.backbone.image_seq_len,
    )
    for size in ((96, 64), (20, 50)):
        view = random_image(*size, seed=3)
        expected = processor(text=["<image>"], images=[[view]], return_tensors="pt")
        ids, image_inputs = model.backbone.encode_views([view])
        assert ids[0] == expected["input_ids"][0].tolist()
        torch.testing.assert_close(image_inputs["pixel_values"], expected["pixel_values"])


def test_render_regions_draws_on_a_copy(tiny_paths):
    model = make_model(tiny_paths, "qwen2_vl")
    image = images(1)[0]
    cache = model.make_cache()
    out = model(images=[image], cache=cache)
    calls = CallCounter(model)
    picture = model.render_regions(image, out, cache=cache)
    assert isinstance(picture, Image.Image) and picture.size == image.size
    assert calls.take() == (0, 0)  # masks from the cache: no SAM2, no MLLM
    assert np.array_equal(np.asarray(model.render_regions(image, out)), np.asarray(picture))
    assert calls.take() == (0, 1)  # without the cache: SAM2 again, never the MLLM
    assert not np.array_equal(np.asarray(picture), np.asarray(image))


def test_bad_inputs_and_settings_give_clear_errors(tiny_paths):
    with pytest.raises(ValueError, match="aggregation='mean'"):
        DogIqaConfig(aggregation="mean")
    with pytest.raises(ValueError, match="score_mode"):
        DogIqaConfig(score_mode="sample")
    model = make_model(tiny_paths, "qwen2_vl")
    with pytest.raises(TypeError, match=r"pixel_values\[0\]"):
        model(pixel_values=["not an image"])
    with pytest.raises(ValueError, match=r"pixel_values\[0\].*colour channels"):
        model(pixel_values=[np.zeros((10, 10, 5), dtype=np.uint8)])
    with pytest.raises(ValueError, match="no backbone adapter"):
        DogIqaModel.from_pretrained("unused", config=DogIqaConfig(
            segmenter_name_or_path=tiny_paths["sam2"], mllm_name_or_path=tiny_paths["sam2"]))  # fmt: skip


def test_image_processor_passes_native_uint8_pixels():
    image = random_image(33, 17, 5)
    out = DogIqaImageProcessor()([image, image.convert("L")], return_tensors="pt")["pixel_values"]
    assert out[0].dtype == torch.uint8 and out[0].shape == (3, 17, 33)
    assert np.array_equal(out[0].permute(1, 2, 0).numpy(), np.asarray(image))
    assert out[1].shape == (3, 17, 33)


def test_config_names_level_probs_and_reads_the_old_label_key():
    assert DogIqaConfig().output_labels == {"level_probs": DogIqaConfig().level_names}
    old = DogIqaConfig(output_labels={"global_level_probs": list("abcdefg")})  # a config saved before the rename
    assert old.output_labels == {"level_probs": list("abcdefg")}
    with pytest.raises(ValueError, match="view_batch_size must be >= 1"):  # validated at the end of __post_init__
        DogIqaConfig(view_batch_size=0)


def test_defaults_are_the_released_protocol_and_one_switch_sets_the_released_eval():
    default = DogIqaConfig()
    assert default.score_mode == "generate" and default.aggregation == "paper" and default.protocol == "paper"
    assert default.region_user_template != default.user_template  # released region prompt: 24-space indents
    released = DogIqaConfig(
        protocol="released", aggregation="global", score_mode="expected", region_user_template="x{image}"
    )
    assert (released.aggregation, released.score_mode) == ("released_code", "generate")
    assert released.region_user_template == default.region_user_template
    # a config saved before these fields existed still loads (and gets the released region prompt)
    old = {k: v for k, v in default.to_dict().items() if k not in ("protocol", "region_user_template")}
    assert DogIqaConfig(**old).region_user_template == default.region_user_template
    with pytest.raises(ValueError, match="protocol"):
        DogIqaConfig(protocol="paperish")
