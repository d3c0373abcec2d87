"""UniQA: parity with the OpenAI CLIP code (openai-clip package) for ViT and ResNet backbones, upstream's crop
protocol, fp16 rounding, deterministic crops, conversion, Auto classes, remote code, task heads and adapters.

Everything runs on tiny random CLIPs built with the openai-clip package's `CLIP` class; its state dict is the
original-format checkpoint.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoImageProcessor, AutoModel

import hf_iqa
from hf_iqa.converters import uniqa as uniqa_conversion
from hf_iqa.converters.common import ConversionError
from hf_iqa.models.uniqa import UniQaImageProcessor, UniQaModel
from hf_iqa.models.uniqa.image_processing_uniqa import crop_positions
from hf_iqa.openai_clip import build_clip_tokenizer

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
QUALITY_PROMPTS = ["bad image", "poor image", "fair image", "good image", "perfect image"]
AESTHETICS_PROMPTS = [p.replace(" image", " aesthetic image") for p in QUALITY_PROMPTS]
LEVELS = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0])
# tiny OpenAI CLIPs: (image_resolution, vision_layers, vision_width, vision_patch_size)
BACKBONES = {"vit": (32, 2, 128, 16), "resnet": (64, (1, 1, 1, 1), 16, None)}


# ----------------------------------------------------------------------------------------------------------------
# The oracle: openai-clip's CLIP with random weights, and upstream's scoring written against it
# ----------------------------------------------------------------------------------------------------------------
def make_openai_clip(module, backbone: str, seed: int = 0):
    resolution, layers, width, patch = BACKBONES[backbone]
    torch.manual_seed(seed)
    model = module.CLIP(32, resolution, layers, width, patch, 77, 49408, 128, 2, 2)
    with torch.no_grad():  # move every tensor off its structured init (zero BN gammas, unit LayerNorms, ...)
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
        model.logit_scale.fill_(3.3)  # exp = 27: a trained, non-default scale
    return model.eval()


def openai_token_ids(tokenizer, prompts: list[str]) -> torch.Tensor:
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    ids = torch.zeros(len(prompts), 77, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tokens = [sot] + tokenizer.encode(prompt) + [eot]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids


def to_tensor(image) -> torch.Tensor:
    """torchvision's ToTensor: (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float().div(255)


@torch.no_grad()
def upstream_scores(clip_model, tokenizer, images, prompts, size, seed, levels=LEVELS, adapter=None, num_crops=10):
    """`UniQA_Adapter_Patchtest.random_crop_test` on a batch of same-size images: after `torch.manual_seed(seed)`
    the global RNG draws each crop's top then left offset; the same crop is cut from every image; CLIP mean/std;
    adapter residual on the unnormalised embedding; softmax over the prompts; expected level; mean over crops."""
    batch = torch.stack([to_tensor(image) for image in images])
    height, width = batch.shape[-2:]
    torch.manual_seed(seed)
    crops = []
    for _ in range(num_crops):
        i = torch.randint(0, height - size + 1, size=(1,)).item()
        j = torch.randint(0, width - size + 1, size=(1,)).item()
        crops.append(batch[:, :, i : i + size, j : j + size])
    crops = (torch.cat(crops) - CLIP_MEAN) / CLIP_STD
    image_features = clip_model.encode_image(crops).float()
    text_features = clip_model.encode_text(openai_token_ids(tokenizer, prompts)).float()
    if adapter is not None:
        image_features = image_features + torch.relu(torch.relu(image_features @ adapter[0].t()) @ adapter[1].t())
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    probs = (clip_model.logit_scale.exp() * image_features @ text_features.t()).softmax(dim=-1)
    return (probs * levels).sum(dim=-1).reshape(num_crops, len(images)).mean(dim=0)


def upstream_fp16_model(openai_clip_model, clip_model):
    """What upstream's loader runs: OpenAI `convert_weights` (fp16), then `.float()`."""
    rounded = copy.deepcopy(clip_model)
    openai_clip_model.convert_weights(rounded)
    return rounded.float().eval()


# ----------------------------------------------------------------------------------------------------------------
# Fixtures (module scope: each tiny model is built and converted once)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module", params=sorted(BACKBONES))
def backbone(request):
    return request.param


@pytest.fixture(scope="module")
def clip_pair(backbone, openai_clip_model, hf_tokenizer):
    """(openai CLIP, converted UniQaModel in zero-shot mode, crop size) for one backbone."""
    clip_model = make_openai_clip(openai_clip_model, backbone)
    state = uniqa_conversion.openai_state_dict(clip_model.state_dict(), "test")
    model = uniqa_conversion.build_model(state, uniqa_conversion.detect_backbone(state))
    model.compute_prompt_text_features(hf_tokenizer)
    return clip_model, model, BACKBONES[backbone][0]


@pytest.fixture(scope="module")
def converted_vit(openai_clip_model, tmp_path_factory):
    """A ViT checkpoint file converted through `main` (fp16 round trip by default), and its openai-clip source."""
    clip_model = make_openai_clip(openai_clip_model, "vit", seed=1)
    root = tmp_path_factory.mktemp("uniqa_vit")
    torch.save(clip_model.state_dict(), root / "UniQA_weight.pt")
    output = root / "converted"
    code = uniqa_conversion.main(["--checkpoint", str(root / "UniQA_weight.pt"), "--output-dir", str(output)])
    assert code == 0
    return clip_model, output


def processor_for(size: int, **kwargs) -> UniQaImageProcessor:
    return UniQaImageProcessor(crop_size={"height": size, "width": size}, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Parity with the OpenAI CLIP code
# ----------------------------------------------------------------------------------------------------------------
def test_zero_shot_parity_with_openai_clip(clip_pair, openai_simple_tokenizer, make_image):
    clip_model, model, size = clip_pair
    images = [make_image(size * 2 + 7, size + 13, seed) for seed in range(3)]  # upstream batches same-size images
    inputs = processor_for(size, crop_seed=123)(images, return_tensors="pt")
    # upstream's architecture scores the aesthetics head against the quality prompts too (the released default)
    for task, prompts in (("quality", QUALITY_PROMPTS), ("aesthetics", QUALITY_PROMPTS)):
        expected = upstream_scores(clip_model, openai_simple_tokenizer, images, prompts, size, seed=123)
        with torch.no_grad():
            scores = model(**inputs, task=task).scores
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert expected.std() > 1e-4, "degenerate test: the images should score differently"


def test_adapter_head_parity_with_openai_clip(clip_pair, openai_simple_tokenizer, make_image, tmp_path):
    clip_model, zero_shot, size = clip_pair
    model = copy.deepcopy(zero_shot)
    dim = model.config.projection_dim
    generator = torch.Generator().manual_seed(7)
    head = {
        "adapter.fc.0.weight": torch.randn(dim // 2, dim, generator=generator) * 0.3,
        "adapter.fc.2.weight": torch.randn(dim, dim // 2, generator=generator) * 0.3,
        "score_level": torch.tensor([0.1, 0.35, 0.5, 0.9, 1.3]),
    }
    torch.save({"params": head}, tmp_path / "net_g_best.pth")  # pyiqa's training checkpoint layout
    model.load_task_head("quality", tmp_path / "net_g_best.pth")
    images = [make_image(size + 40, size + 3, seed) for seed in (5, 6)]
    adapter = (head["adapter.fc.0.weight"], head["adapter.fc.2.weight"])
    expected = upstream_scores(
        clip_model, openai_simple_tokenizer, images, QUALITY_PROMPTS, size, 0, head["score_level"], adapter
    )
    with torch.no_grad():
        scores = model(**processor_for(size)(images, return_tensors="pt")).scores
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert model.config.adapter_tasks == ["quality"]
    assert model.config.task_score_ranges["quality"] == pytest.approx([0.1, 1.3])
    assert model.config.score_range == pytest.approx([0.1, 1.3])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_fp16_roundtrip_equals_openai_convert_weights(name, openai_clip_model):
    clip_model = make_openai_clip(openai_clip_model, name, seed=3)
    expected = upstream_fp16_model(openai_clip_model, clip_model).state_dict()
    rounded, keys = uniqa_conversion.fp16_roundtrip(clip_model.state_dict())
    assert set(rounded) == set(expected)
    for key, tensor in rounded.items():
        assert torch.equal(tensor.float(), expected[key].float()), key
    changed = {k for k, v in clip_model.state_dict().items() if not torch.equal(v, expected[k].float())}
    assert changed == set(keys)  # exactly the tensors upstream rounds, nothing else
    assert "text_projection" in keys and not any("ln_" in k or "bn" in k or "embedding" in k for k in keys)


def test_backbone_detection_reads_the_checkpoint(openai_clip_model):
    vit = make_openai_clip(openai_clip_model, "vit").state_dict()
    resnet = make_openai_clip(openai_clip_model, "resnet").state_dict()
    assert uniqa_conversion.detect_backbone(vit) == "vit"
    assert uniqa_conversion.detect_backbone(resnet) == "resnet"
    vit_config = uniqa_conversion.build_model(vit, "vit").config
    assert (vit_config.clip_config.vision_config.patch_size, vit_config.image_size) == (16, 32)
    assert vit_config.clip_config.vision_config.num_hidden_layers == 2
    assert vit_config.adapter_hidden_size == 16
    resnet_config = uniqa_conversion.build_model(resnet, "resnet").config.resnet_config
    assert (resnet_config.layers, resnet_config.width, resnet_config.image_size) == ([1, 1, 1, 1], 16, 64)
    broken = {k: v for k, v in vit.items() if k != "visual.proj"}
    with pytest.raises(ConversionError, match="unknown image tower"):
        uniqa_conversion.detect_backbone(broken)


# ----------------------------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------------------------
def test_random_crops_do_not_depend_on_batch_or_global_rng(make_image):
    processor = processor_for(32)
    images = [make_image(90, 60, 0), make_image(45, 120, 1), make_image(70, 70, 2)]
    alone = [processor(image, return_tensors="pt")["pixel_values"][0] for image in images]
    torch.manual_seed(999)  # upstream's crops follow the global RNG; ours must not
    batch = processor(images, return_tensors="pt")["pixel_values"]
    reverse = processor(images[::-1], return_tensors="pt")["pixel_values"]
    assert batch.shape == (3, 10, 3, 32, 32)
    for index in range(3):
        assert torch.equal(batch[index], alone[index])
        assert torch.equal(reverse[2 - index], alone[index])
    other_seed = processor_for(32, crop_seed=1)(images[0], return_tensors="pt")["pixel_values"][0]
    assert not torch.equal(other_seed, alone[0])


def test_scores_do_not_depend_on_batch(clip_pair, make_image):
    _, model, size = clip_pair
    processor = processor_for(size)
    images = [make_image(size * 2, size + 9, 0), make_image(size + 30, size * 3, 1), make_image(size, size, 2)]
    with torch.no_grad():
        single = torch.cat([model(**processor(image, return_tensors="pt")).scores for image in images])
        batched = model(**processor(images, return_tensors="pt")).scores
        reversed_ = model(**processor(images[::-1], return_tensors="pt")).scores
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
    torch.testing.assert_close(reversed_.flip(0), single, atol=1e-6, rtol=0)


def test_grid_crops_are_deterministic_and_span_the_image(make_image):
    assert crop_positions(100, 300, 32, 10, "grid", seed=0) == crop_positions(100, 300, 32, 10, "grid", seed=9)
    wide = crop_positions(100, 300, 32, 10, "grid", seed=0)
    assert len(wide) == 10 and len({top for top, _ in wide}) == 2 and len({left for _, left in wide}) == 5
    assert wide[0] == (0, 0) and wide[-1] == (100 - 32, 300 - 32)
    tall = crop_positions(300, 100, 32, 10, "grid", seed=0)
    assert len({top for top, _ in tall}) == 5 and len({left for _, left in tall}) == 2
    image = make_image(120, 80, 4)
    pixel_values = processor_for(32, crop_mode="grid")(image, return_tensors="pt")["pixel_values"][0]
    top, left = crop_positions(80, 120, 32, 10, "grid", seed=0)[3]
    manual = (to_tensor(image)[None, :, top : top + 32, left : left + 32] - CLIP_MEAN) / CLIP_STD
    torch.testing.assert_close(pixel_values[3], manual[0], atol=1e-6, rtol=0)


def test_small_images_are_upsampled_with_a_warning(make_image):
    with pytest.warns(UserWarning, match="smaller than a 224px crop"):
        pixel_values = UniQaImageProcessor()(make_image(300, 150, 0), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 10, 3, 224, 224)
    with pytest.raises(ValueError, match="crop_mode"):
        UniQaImageProcessor(crop_mode="five")


# ----------------------------------------------------------------------------------------------------------------
# Conversion, Auto classes, remote code, heads
# ----------------------------------------------------------------------------------------------------------------
def test_conversion_with_fp16_roundtrip_reproduces_upstream(
    converted_vit, openai_clip_model, openai_simple_tokenizer, make_image
):
    clip_model, output = converted_vit
    files = {path.name for path in output.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "configuration_uniqa.py", "modeling_uniqa.py"} <= files
    assert "image_processing_uniqa.py" in files and "tokenizer.json" in files
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "hf_iqa_uniqa" and "AutoModel" in config["auto_map"]
    readme = (output / "README.md").read_text()
    assert readme.startswith("---") and "{{" not in readme and "fp16" in readme

    model = AutoModel.from_pretrained(str(output)).eval()
    processor = AutoImageProcessor.from_pretrained(str(output))
    assert isinstance(model, UniQaModel) and isinstance(processor, UniQaImageProcessor)
    images = [make_image(70, 50, seed) for seed in (0, 1)]
    with torch.no_grad():
        scores = model(**processor(images, return_tensors="pt")).scores
    upstream = upstream_fp16_model(openai_clip_model, clip_model)
    expected = upstream_scores(upstream, openai_simple_tokenizer, images, QUALITY_PROMPTS, 32, seed=0)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    unrounded = upstream_scores(clip_model, openai_simple_tokenizer, images, QUALITY_PROMPTS, 32, seed=0)
    assert not torch.equal(scores, unrounded)  # the round trip did change the weights


def test_conversion_refuses_bad_inputs(tmp_path, converted_vit, capsys):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ConversionError, match="bad.pt: not an OpenAI-format CLIP checkpoint"):
        uniqa_conversion.convert(tmp_path / "bad.pt", tmp_path / "out")
    checkpoint, output = str(converted_vit[1].parent / "UniQA_weight.pt"), str(converted_vit[1])
    with pytest.raises(SystemExit) as exit_info:  # a non-empty output folder without --overwrite
        uniqa_conversion.main(["--checkpoint", checkpoint, "--output-dir", output])
    assert exit_info.value.code == 2 and "folder is not empty" in capsys.readouterr().err


def test_task_heads_and_pipeline(converted_vit, make_image):
    _, output = converted_vit
    image = make_image(64, 48, 3)
    quality = AutoModel.from_pretrained(str(output)).eval()
    aesthetics = AutoModel.from_pretrained(str(output), task="aesthetics").eval()
    assert (quality.config.task, aesthetics.config.task) == ("quality", "aesthetics")
    inputs = AutoImageProcessor.from_pretrained(str(output))(image, return_tensors="pt")
    with torch.no_grad():
        q, a = quality(**inputs).scores, aesthetics(**inputs).scores
        torch.testing.assert_close(quality(**inputs, task="aesthetics").scores, a, atol=0, rtol=0)
    # zero-shot heads with the released prompts: the aesthetics head is the quality head until a trained one is loaded
    torch.testing.assert_close(q, a, atol=0, rtol=0)
    quality.load_task_head("aesthetics", {"score_level": torch.tensor([0.0, 0.3, 0.5, 0.7, 1.1])})
    with torch.no_grad():
        assert not torch.allclose(quality(**inputs, task="aesthetics").scores, q)
    for task, expected in (("quality", q), ("aesthetics", a)):
        # transformers.pipeline has its own `task` argument (model_kwargs={"task": ...} clashes) and does not pass
        # `config=` on to from_pretrained, so the head is chosen on the model instance
        model = AutoModel.from_pretrained(str(output), task=task)
        pipe = hf_iqa.pipeline(model=model, image_processor=AutoImageProcessor.from_pretrained(str(output)))
        result = pipe(image)
        assert result["score"] == pytest.approx(float(expected), abs=1e-6)
        assert set(result["level_probs"]) == {"bad", "poor", "fair", "good", "perfect"}
        assert result["level"] in result["level_probs"]
    with pytest.raises(ValueError, match="task must be one of"):
        quality(**inputs, task="beauty")


def test_remote_code_without_hf_iqa(converted_vit, without_hf_iqa, make_image, tmp_path):
    _, output = converted_vit
    make_image(80, 60, 11).save(tmp_path / "image.png")
    stdout = without_hf_iqa(
        f"""
        import json, torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModel
        processor = AutoImageProcessor.from_pretrained({str(output)!r}, trust_remote_code=True)
        inputs = processor(Image.open({str(tmp_path / "image.png")!r}), return_tensors="pt")
        result = {{}}
        for task in ("quality", "aesthetics"):
            model = AutoModel.from_pretrained({str(output)!r}, trust_remote_code=True, task=task).eval()
            with torch.no_grad():
                result[task] = model(**inputs).scores.tolist()
        result["module"] = type(model).__module__
        print(json.dumps(result))
        """
    )
    remote = json.loads(stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules")
    from PIL import Image

    model = AutoModel.from_pretrained(str(output)).eval()
    inputs = AutoImageProcessor.from_pretrained(str(output))(Image.open(tmp_path / "image.png"), return_tensors="pt")
    with torch.no_grad():
        for task in ("quality", "aesthetics"):
            assert remote[task] == model(**inputs, task=task).scores.tolist()


def test_backbone_checkpoint_plus_adapter_head(converted_vit, tmp_path, make_image):
    _, output = converted_vit
    model = UniQaModel.from_pretrained(str(output)).eval()
    dim = model.config.projection_dim
    head = {
        "adapter.fc.0.weight": torch.rand(dim // 2, dim) * 0.2,
        "adapter.fc.2.weight": torch.rand(dim, dim // 2) * 0.2,
        "score_level": torch.tensor([0.0, 0.3, 0.5, 0.7, 1.1]),
    }
    model.load_task_head("aesthetics", head)
    model.save_pretrained(tmp_path / "with_head")
    reloaded, info = UniQaModel.from_pretrained(str(tmp_path / "with_head"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert reloaded.config.adapter_tasks == ["aesthetics"]
    assert reloaded.config.task_score_ranges == {"quality": [0.2, 1.0], "aesthetics": [0.0, 1.1]}
    torch.testing.assert_close(reloaded.heads["aesthetics"].adapter.fc[2].weight, head["adapter.fc.2.weight"])
    inputs = UniQaImageProcessor(crop_size={"height": 32, "width": 32})(make_image(50, 40, 0), return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(
            reloaded.eval()(**inputs, task="aesthetics").scores, model(**inputs, task="aesthetics").scores
        )
        # the quality head is untouched: still the zero-shot one of the backbone checkpoint
        assert torch.equal(reloaded(**inputs).scores, UniQaModel.from_pretrained(str(output))(**inputs).scores)
    with pytest.raises(ValueError, match="unexpected keys"):
        model.load_task_head("quality", {"adapter.fc.1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        model.load_task_head("quality", {"score_level": torch.zeros(4)})


def test_bad_pixel_values_are_rejected(clip_pair):
    _, model, size = clip_pair
    with pytest.raises(ValueError, match="expects pixel_values of shape"):
        model(pixel_values=torch.zeros(1, 2, 3, size + 1, size + 1))


def test_resnet_conversion_with_trained_head(openai_clip_model, openai_simple_tokenizer, make_image, tmp_path):
    clip_model = make_openai_clip(openai_clip_model, "resnet", seed=2)
    torch.save(clip_model.state_dict(), tmp_path / "UniQA_weight.pt")
    generator = torch.Generator().manual_seed(3)
    head = {
        "adapter.fc.0.weight": torch.randn(16, 32, generator=generator) * 0.3,
        "adapter.fc.2.weight": torch.randn(32, 16, generator=generator) * 0.3,
        "score_level": torch.tensor([0.15, 0.4, 0.6, 0.85, 1.05]),
    }
    torch.save({"params": head}, tmp_path / "net_g_koniq.pth")
    result = uniqa_conversion.convert(  # weights as stored: the key mapping alone against the unrounded oracle
        tmp_path / "UniQA_weight.pt", tmp_path / "out", quality_head=tmp_path / "net_g_koniq.pth",
        fp16_roundtrip_weights=False,
    )  # fmt: skip
    assert result.backbone == "resnet" and max(result.max_differences.values()) <= 1e-5
    model = AutoModel.from_pretrained(str(tmp_path / "out")).eval()
    assert model.config.backbone_type == "resnet" and model.config.adapter_tasks == ["quality"]
    images = [make_image(100, 70, seed) for seed in (0, 1)]
    with torch.no_grad():
        scores = model(**AutoImageProcessor.from_pretrained(str(tmp_path / "out"))(images, return_tensors="pt")).scores
    adapter = (head["adapter.fc.0.weight"], head["adapter.fc.2.weight"])
    expected = upstream_scores(
        clip_model, openai_simple_tokenizer, images, QUALITY_PROMPTS, 64, 0, head["score_level"], adapter
    )
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)


def test_conversion_stops_on_a_parity_failure(openai_clip_model, tmp_path, monkeypatch):
    from hf_iqa.converters.common import ParityError

    torch.save(make_openai_clip(openai_clip_model, "resnet").state_dict(), tmp_path / "UniQA_weight.pt")
    mapping = uniqa_conversion.convert_resnet_vision_keys

    def swapped_projections(state):  # a plausible mapping bug: q and k projections exchanged
        converted = mapping(state)
        prefix = "vision_model.attnpool."
        for name in ("weight", "bias"):
            q, k = converted[f"{prefix}q_proj.{name}"], converted[f"{prefix}k_proj.{name}"]
            converted[f"{prefix}q_proj.{name}"], converted[f"{prefix}k_proj.{name}"] = k, q
        return converted

    monkeypatch.setattr(uniqa_conversion, "convert_resnet_vision_keys", swapped_projections)
    with pytest.raises(ParityError, match="image embeddings"):
        uniqa_conversion.convert(tmp_path / "UniQA_weight.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_labels_give_the_mse_training_loss(clip_pair, make_image):
    _, model, size = clip_pair
    inputs = processor_for(size, num_crops=1)(
        [make_image(size + 8, size, 0), make_image(size, size + 8, 1)], return_tensors="pt"
    )
    labels = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        output = model(**inputs, labels=labels)
    torch.testing.assert_close(output.loss, ((output.scores - labels) ** 2).mean())
    assert output.crop_scores.shape == (2, 1) and output.level_probs.shape == (2, 5)


# ----------------------------------------------------------------------------------------------------------------
# Prompt ensembles and five crops (upstream's `..._PromptEs` heads and `random_5crop_test`)
# ----------------------------------------------------------------------------------------------------------------
ENSEMBLE_GROUPS = [  # UniQA_Adapter_Patchtest_PromptEs, verbatim
    QUALITY_PROMPTS,
    ["extremely blurry image", "blurry image", "fair image", "sharp image", "extremely sharp image"],
    ["extremely noisy image", "noisy image", "fair image", "noise-free image", "extremely noise-free image"],
    [
        "extremely low-quality image",
        "low-quality image",
        "fair image",
        "high-quality image",
        "extremely high-quality image",
    ],
]


@torch.no_grad()
def upstream_five_crop_ensemble_scores(clip_model, tokenizer, images, groups, size, levels=LEVELS):
    """`random_5crop_test` + the PromptEs head: centre, top-left, top-right, bottom-left, bottom-right crops (its
    coordinate arithmetic), one softmax per prompt group, expected level per group, mean over groups and crops."""
    batch = torch.stack([to_tensor(image) for image in images])
    height, width = batch.shape[-2:]
    left, upper = (width - size) // 2, (height - size) // 2
    crops = [
        batch[:, :, upper : upper + size, left : left + size],
        batch[:, :, 0:size, 0:size],
        batch[:, :, 0:size, width - size : width],
        batch[:, :, height - size : height, 0:size],
        batch[:, :, height - size : height, width - size : width],
    ]
    crops = (torch.cat(crops) - CLIP_MEAN) / CLIP_STD
    image_features = clip_model.encode_image(crops).float()
    prompts = [prompt for group in groups for prompt in group]
    text_features = clip_model.encode_text(openai_token_ids(tokenizer, prompts)).float()
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = clip_model.logit_scale.exp() * image_features @ text_features.t()
    probs = logits.reshape(len(crops), len(groups), 5).softmax(dim=-1)
    return (probs * levels).sum(dim=-1).mean(dim=-1).reshape(5, len(images)).mean(dim=0)


def test_prompt_ensemble_and_five_crop_parity_with_openai_clip(
    clip_pair, openai_simple_tokenizer, hf_tokenizer, make_image
):
    clip_model, shared_model, size = clip_pair
    model = copy.deepcopy(shared_model)
    features = model.set_prompt_groups("quality", "uniqa", hf_tokenizer)
    assert features.shape[0] == 20 and model.config.prompts("quality")[5:10] == ENSEMBLE_GROUPS[1]
    images = [make_image(size * 2 + 7, size + 13, seed) for seed in range(3)]  # odd sizes: centre rounding shows
    inputs = processor_for(size, crop_mode="five_crop")(images, return_tensors="pt")
    assert inputs["pixel_values"].shape[1] == 5
    expected = upstream_five_crop_ensemble_scores(clip_model, openai_simple_tokenizer, images, ENSEMBLE_GROUPS, size)
    with torch.no_grad():
        output = model(**inputs, task="quality")
    torch.testing.assert_close(output.scores, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(output.level_probs.sum(dim=-1), torch.ones(3))
    single = upstream_five_crop_ensemble_scores(clip_model, openai_simple_tokenizer, images, [QUALITY_PROMPTS], size)
    assert (expected - single).abs().max() > 1e-4, "the ensemble should change the scores"
    with torch.no_grad():  # the aesthetics head keeps its single group
        torch.testing.assert_close(
            model(**inputs, task="aesthetics").scores, shared_model(**inputs, task="aesthetics").scores
        )


def test_prompt_groups_survive_saving_and_can_be_reset(clip_pair, hf_tokenizer, make_image, tmp_path):
    _, shared_model, size = clip_pair
    model = copy.deepcopy(shared_model)
    model.set_prompt_groups("quality", "uniqa_agiqa", hf_tokenizer)
    inputs = processor_for(size, num_crops=2)([make_image(size + 30, size + 9, 0)], return_tensors="pt")
    with torch.no_grad():
        before = model(**inputs).scores
    model.save_pretrained(tmp_path)
    reloaded = UniQaModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.prompt_groups["quality"][1][0] == "bad content"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).scores, before, atol=0, rtol=0)
    with pytest.raises(ValueError, match="one prompt per level"):
        reloaded.set_prompt_groups("quality", [["only", "four", "prompts", "here"]], hf_tokenizer)
    assert len(reloaded.config.prompts("quality")) == 10  # unchanged by the refused call
    with pytest.raises(ValueError, match="unknown ensemble"):
        reloaded.set_prompt_groups("quality", "nope", hf_tokenizer)
    with pytest.raises(ValueError, match="prompt_ensemble"):  # a name reaching a built config: point at the API
        UniQaModel.from_pretrained(tmp_path, prompt_groups={"quality": "uniqa"})
    reloaded.set_prompt_groups("quality", None, hf_tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).scores, shared_model(**inputs).scores, atol=1e-6, rtol=0)


def test_conversion_with_prompt_ensemble(openai_clip_model, openai_simple_tokenizer, make_image, tmp_path):
    clip_model = make_openai_clip(openai_clip_model, "vit", seed=2)
    torch.save(clip_model.state_dict(), tmp_path / "UniQA_weight.pt")
    output = tmp_path / "converted"
    arguments = ["--checkpoint", str(tmp_path / "UniQA_weight.pt"), "--output-dir", str(output), "--no-fp16-roundtrip"]
    assert uniqa_conversion.main([*arguments, "--prompt-ensemble", "uniqa"]) == 0
    config = json.loads((output / "config.json").read_text())
    assert config["prompt_groups"]["quality"] == ENSEMBLE_GROUPS
    assert "extremely noise-free image" in (output / "README.md").read_text()
    model = UniQaModel.from_pretrained(output).eval()
    images = [make_image(70, 45, seed) for seed in range(2)]
    inputs = processor_for(32, crop_mode="five_crop")(images, return_tensors="pt")
    expected = upstream_five_crop_ensemble_scores(clip_model, openai_simple_tokenizer, images, ENSEMBLE_GROUPS, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).scores, expected, atol=1e-5, rtol=0)


def without_vit_positions(clip_model):
    """The OpenAI CLIP with a zero position table: what upstream's `pos_embedding=False` computes."""
    clone = copy.deepcopy(clip_model)
    with torch.no_grad():
        clone.visual.positional_embedding.zero_()
    return clone


def test_vit_without_position_embedding_matches_upstream(openai_clip_model, openai_simple_tokenizer, make_image):
    clip_model = make_openai_clip(openai_clip_model, "vit", seed=3)
    state = uniqa_conversion.openai_state_dict(clip_model.state_dict(), "test")
    model = uniqa_conversion.build_model(state, "vit")
    model.config.use_position_embedding = False
    model.compute_prompt_text_features(build_clip_tokenizer())
    images = [make_image(70, 45, seed) for seed in range(2)]
    inputs = processor_for(32, crop_mode="five_crop")(images, return_tensors="pt")
    oracle = without_vit_positions(clip_model)
    expected = upstream_five_crop_ensemble_scores(oracle, openai_simple_tokenizer, images, [QUALITY_PROMPTS], 32)
    with torch.no_grad():  # the flat inference loop
        fast = model(**inputs).scores
    plain = model(**inputs).scores.detach()  # autograd on: transformers' layers without the position embedding
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=0)
    with_positions = upstream_five_crop_ensemble_scores(
        clip_model, openai_simple_tokenizer, images, [QUALITY_PROMPTS], 32
    )
    assert (expected - with_positions).abs().max() > 1e-4, "the position embedding should matter"


def test_conversion_without_position_embedding(openai_clip_model, openai_simple_tokenizer, make_image, tmp_path):
    clip_model = make_openai_clip(openai_clip_model, "vit", seed=4)
    torch.save(clip_model.state_dict(), tmp_path / "UniQA_weight.pt")
    output = tmp_path / "converted"
    arguments = ["--checkpoint", str(tmp_path / "UniQA_weight.pt"), "--output-dir", str(output), "--no-fp16-roundtrip"]
    assert uniqa_conversion.main([*arguments, "--no-position-embedding", "--prompt-ensemble", "uniqa"]) == 0
    assert "no position embedding" in (output / "README.md").read_text()
    model = UniQaModel.from_pretrained(output).eval()
    assert model.config.use_position_embedding is False
    images = [make_image(64, 40, seed) for seed in range(2)]
    inputs = processor_for(32, crop_mode="five_crop")(images, return_tensors="pt")
    oracle = without_vit_positions(clip_model)
    expected = upstream_five_crop_ensemble_scores(oracle, openai_simple_tokenizer, images, ENSEMBLE_GROUPS, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).scores, expected, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit):  # ResNet backbones take resnet_config.position_embedding_mode instead
        resnet = make_openai_clip(openai_clip_model, "resnet")
        torch.save(resnet.state_dict(), tmp_path / "rn.pt")
        uniqa_conversion.main(["--checkpoint", str(tmp_path / "rn.pt"), "--output-dir", str(tmp_path / "rn"),
                               "--no-position-embedding"])  # fmt: skip


def test_adapter_training_on_the_frozen_backbone_uses_the_fast_loop(
    openai_clip_model, hf_tokenizer, make_image, monkeypatch
):
    from hf_iqa.models.uniqa import modeling_uniqa

    state = uniqa_conversion.openai_state_dict(make_openai_clip(openai_clip_model, "vit", seed=5).state_dict(), "t")
    model = uniqa_conversion.build_model(state, "vit")
    model.compute_prompt_text_features(hf_tokenizer)
    size = model.config.image_size
    inputs = processor_for(size, num_crops=2)([make_image(size + 20, size + 5, 1)], return_tensors="pt")
    model.load_task_head("quality", {"adapter.fc.0.weight": torch.randn(16, 32) * 0.1,
                                     "adapter.fc.2.weight": torch.randn(32, 16) * 0.1})  # fmt: skip
    plain = model(**inputs).scores.detach()  # everything trainable: transformers' layers
    calls = []
    original = modeling_uniqa.clip_vision_features
    monkeypatch.setattr(modeling_uniqa, "clip_vision_features", lambda *a: calls.append(1) or original(*a))
    model.requires_grad_(False)
    model.heads["quality"].requires_grad_(True)  # what hf_iqa.training.uniqa does
    scores = model(**inputs).scores
    scores.sum().backward()
    assert calls, "the frozen backbone should go through the flat loop"
    assert model.heads["quality"].adapter.fc[0].weight.grad is not None
    torch.testing.assert_close(scores.detach(), plain, atol=1e-6, rtol=0)


def test_prompt_ensemble_chosen_at_load_time(
    converted_vit, openai_clip_model, openai_simple_tokenizer, hf_tokenizer, make_image, tmp_path
):
    """`prompt_ensemble` is a config field: `from_pretrained`, `AutoModel`, the pipeline's `model_kwargs` and
    `hf-iqa score --model-arg` all pick an ensemble whose features the conversion stored (no text tower at load)."""
    from hf_iqa.cli import main

    clip_model, folder = converted_vit
    images = [make_image(50, 40, seed) for seed in range(2)]
    inputs = UniQaImageProcessor.from_pretrained(folder, crop_mode="five_crop")(images, return_tensors="pt")
    upstream = upstream_five_crop_ensemble_scores(
        upstream_fp16_model(openai_clip_model, clip_model), openai_simple_tokenizer, images, ENSEMBLE_GROUPS, 32
    )  # the folder was converted with --fp16-roundtrip
    re_encoded = UniQaModel.from_pretrained(folder).eval()
    re_encoded.set_prompt_groups("quality", "uniqa", hf_tokenizer)  # the text tower, run now
    with torch.no_grad():
        plain = UniQaModel.from_pretrained(folder).eval()(**inputs).scores
        target = re_encoded(**inputs).scores
        torch.testing.assert_close(target, upstream, atol=1e-5, rtol=0)
    assert (target - plain).abs().max() > 1e-4, "the ensemble should change the scores"
    for loader in (UniQaModel, AutoModel):
        model = loader.from_pretrained(folder, prompt_ensemble="uniqa").eval()
        assert model.config.prompt_ensemble == "uniqa"
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).scores, target, atol=1e-6, rtol=0)
            torch.testing.assert_close(  # the aesthetics head keeps its own prompts
                model(**inputs, task="aesthetics").scores, re_encoded(**inputs, task="aesthetics").scores
            )
    model.save_pretrained(tmp_path / "saved")  # the choice is saved with the config
    with torch.no_grad():
        again = UniQaModel.from_pretrained(tmp_path / "saved").eval()
        torch.testing.assert_close(again(**inputs).scores, target, atol=1e-6, rtol=0)
    bf16 = UniQaModel.from_pretrained(folder, prompt_ensemble="uniqa", dtype=torch.bfloat16)
    assert bf16.ensembles["uniqa"].prompt_text_features.dtype == torch.float32  # kept exact like the heads'
    single = UniQaImageProcessor.from_pretrained(folder)(images[:1], return_tensors="pt")
    with torch.no_grad():
        expected_single = float(re_encoded(**single).scores[0])
    result = hf_iqa.pipeline(model=str(folder), model_kwargs={"prompt_ensemble": "uniqa"})(images[0])
    assert result["score"] == pytest.approx(expected_single, abs=1e-6)
    images[0].save(tmp_path / "a.png")
    out = tmp_path / "scores.jsonl"
    arguments = ["score", "-m", str(folder), str(tmp_path / "a.png"), "-o", str(out), "--no-progress"]
    assert main([*arguments, "--model-arg", "prompt_ensemble=uniqa"]) == 0
    assert json.loads(out.read_text().splitlines()[0])["score"] == pytest.approx(expected_single, abs=1e-5)
    with pytest.raises(ValueError, match="prompt_ensemble must be one of"):
        UniQaModel.from_pretrained(folder, prompt_ensemble="nope")


def test_checkpoint_without_stored_ensemble_features_is_refused(converted_vit, tmp_path):
    """A folder converted before the ensemble features were stored must not score against zeros."""
    from safetensors.torch import load_file, save_file

    _, folder = converted_vit
    stale = tmp_path / "stale"
    UniQaModel.from_pretrained(folder).save_pretrained(stale)
    state = load_file(stale / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("ensembles.")}, stale / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    with pytest.raises(ValueError, match=r"no stored prompt features \(ensembles\.uniqa\.prompt_text_features"):
        UniQaModel.from_pretrained(stale)


def test_aesthetics_prompts_released_by_default_and_hf_iqa_prompts_as_an_option(
    openai_clip_model, openai_simple_tokenizer, make_image, tmp_path, hf_tokenizer
):
    """Upstream scores its aesthetics head (e.g. the AVA adapter) against 'bad image' ... 'perfect image'; hf_iqa's
    '... aesthetic image' prompts are a named option (`aesthetics_prompts="aesthetic"`), a different model."""
    clip_model = make_openai_clip(openai_clip_model, "vit", seed=4)
    torch.save(clip_model.state_dict(), tmp_path / "UniQA_weight.pt")
    dim = 32
    generator = torch.Generator().manual_seed(11)
    head = {
        "adapter.fc.0.weight": torch.randn(dim // 2, dim, generator=generator) * 0.3,
        "adapter.fc.2.weight": torch.randn(dim, dim // 2, generator=generator) * 0.3,
        "score_level": torch.tensor([0.1, 0.3, 0.55, 0.8, 1.2]),
    }
    save_file(head, tmp_path / "ava_head.safetensors")
    images = [make_image(70, 50, seed) for seed in (0, 1, 2)]
    upstream = upstream_fp16_model(openai_clip_model, clip_model)
    adapter = (head["adapter.fc.0.weight"], head["adapter.fc.2.weight"])
    scores = {}
    for choice, prompts in (("released", QUALITY_PROMPTS), ("aesthetic", AESTHETICS_PROMPTS)):
        argv = ["--checkpoint", str(tmp_path / "UniQA_weight.pt"), "--output-dir", str(tmp_path / choice)]
        argv += ["--aesthetics-head", str(tmp_path / "ava_head.safetensors")]
        argv += [] if choice == "released" else ["--aesthetics-prompts", choice]
        assert uniqa_conversion.main(argv) == 0
        model = AutoModel.from_pretrained(str(tmp_path / choice), task="aesthetics").eval()
        assert model.config.aesthetics_prompts == choice
        assert model.config.prompts("aesthetics") == prompts
        assert f"`{prompts[0]}`" in (tmp_path / choice / "README.md").read_text()
        with torch.no_grad():
            scores[choice] = model(**processor_for(32)(images, return_tensors="pt")).scores
        expected = upstream_scores(
            upstream, openai_simple_tokenizer, images, prompts, 32, 0, head["score_level"], adapter
        )
        torch.testing.assert_close(scores[choice], expected, atol=1e-5, rtol=0)
    assert (scores["released"] - scores["aesthetic"]).abs().max() > 1e-3  # the prompts matter
    with pytest.raises(ValueError, match="aesthetics_prompts='aesthetic'"):  # features stored for the released ones
        AutoModel.from_pretrained(str(tmp_path / "released"), aesthetics_prompts="aesthetic")


def test_configs_saved_before_aesthetics_prompts_keep_their_prompts(tmp_path):
    from hf_iqa.models.uniqa import UniQaConfig

    old = UniQaConfig(aesthetics_prompts="aesthetic").to_dict()
    old.pop("aesthetics_prompts")  # a config written before the field existed: its template says which prompts
    assert old["prompt_templates"]["aesthetics"] == "{} aesthetic image"
    loaded = UniQaConfig.from_dict(old)
    assert loaded.aesthetics_prompts == "aesthetic" and loaded.prompts("aesthetics")[0] == "bad aesthetic image"
    assert UniQaConfig().prompts("aesthetics") == QUALITY_PROMPTS
    custom = UniQaConfig(prompt_templates={"aesthetics": "{} looking photo"})
    assert custom.aesthetics_prompts is None and custom.prompts("aesthetics")[0] == "bad looking photo"
