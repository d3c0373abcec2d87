"""LIQE: parity with the OpenAI CLIP code (openai-clip on PyPI) + an independent LIQE head written here,
conversion of both checkpoint layouts, remote code, protocols and edge cases."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import hf_iqa
from hf_iqa.converters.common import ConversionError, ParityError
from hf_iqa.converters.liqe import convert
from hf_iqa.models.liqe import LiqeImageProcessor, LiqeModel
from hf_iqa.models.liqe.configuration_liqe import DISTORTIONS, QUALITY_LEVELS, SCENES
from tests.testing_utils import random_image

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def make_openai_clip(openai_clip_model, seed=0, **overrides):
    """A random OpenAI-format ViT CLIP built by the openai-clip package (all weights perturbed, so that zero
    initialisations do not hide mapping mistakes)."""
    kwargs = dict(
        embed_dim=16, image_resolution=224, vision_layers=2, vision_width=64, vision_patch_size=32,
        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2,
    )  # fmt: skip
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = openai_clip_model.CLIP(**kwargs)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "logit_scale":
                param.add_(torch.randn_like(param) * 0.05)
        model.logit_scale.fill_(float(np.log(100.0)))  # what trained OpenAI/LIQE checkpoints carry
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# An independent LIQE implementation (spec liqe.md §2): materialise every window like pyiqa does, pick
# indices 0, s, 2s, ..., encode with the OpenAI CLIP code, average logits, softmax, marginals.
# --------------------------------------------------------------------------------------------------------------
def reference_windows(image: Image.Image, protocol: str) -> torch.Tensor:
    if protocol == "official":
        width, height = image.size
        if min(width, height) >= 768:  # torchvision Resize(768) on a PIL image: short side 768, bilinear
            size = (768, int(768 * height / width)) if width <= height else (int(768 * width / height), 768)
            image = image.resize(size, Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255.0
    x = (x - MEAN) / STD
    height, width = x.shape[1:]
    stride = 48 if protocol == "official" and max(height, width) >= 1024 else 32
    windows = x.unfold(1, 224, stride).unfold(2, 224, stride)  # (3, rows, cols, 224, 224)
    windows = windows.permute(1, 2, 0, 3, 4).reshape(-1, 3, 224, 224)
    count = min(15, windows.shape[0])
    step = max(1, windows.shape[0] // count)
    return windows[torch.arange(count) * step]


def reference_liqe(oa_model, tokenizer, images, protocol, multitask=True):
    if multitask:
        template = "a photo of a {} with {} artifacts, which is of {} quality"
        prompts = [template.format(s, d, q) for q, s, d in itertools.product(QUALITY_LEVELS, SCENES, DISTORTIONS)]
    else:
        prompts = [f"a photo with {q} quality" for q in QUALITY_LEVELS]
    tokens = torch.zeros(len(prompts), 77, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids = [49406] + tokenizer.encode(prompt) + [49407]
        tokens[i, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        text = oa_model.encode_text(tokens)
        text = text / text.norm(dim=-1, keepdim=True)
        scores, quality, scenes, distortions, all_logits = [], [], [], [], []
        for image in images:
            feats = oa_model.encode_image(reference_windows(image, protocol))
            feats = feats / feats.norm(dim=-1, keepdim=True)
            logits = (oa_model.logit_scale.exp() * feats @ text.t()).mean(0)
            all_logits.append(logits)
            probs = logits.softmax(-1)
            if multitask:
                probs = probs.view(5, 9, 11)
                q, s, d = probs.sum((1, 2)), probs.sum((0, 2)), probs.sum((0, 1))
                scenes.append(s)
                distortions.append(d)
            else:
                q = probs
            quality.append(q)
            scores.append((q * torch.arange(1, 6)).sum())
    result = {"scores": torch.stack(scores), "level_probs": torch.stack(quality), "logits": torch.stack(all_logits)}
    if multitask:
        result["scene_probs"], result["distortion_probs"] = torch.stack(scenes), torch.stack(distortions)
    return result


IMAGE_SIZES = [(512, 384), (384, 512), (500, 500), (1024, 768), (800, 1100), (240, 260)]


@pytest.fixture(scope="module")
def oa_clip(openai_clip_model):
    return make_openai_clip(openai_clip_model)


@pytest.fixture(scope="module")
def converted(oa_clip, tmp_path_factory):
    """The tiny OpenAI checkpoint converted in both on-disk layouts."""
    root = tmp_path_factory.mktemp("liqe")
    state = oa_clip.state_dict()
    torch.save(state, root / "LIQE.pt")
    torch.save({"params": {"clip_model." + k: v for k, v in state.items()}}, root / "liqe_koniq.pt")
    mix = convert(root / "LIQE.pt", "mix", root / "liqe-mix")
    koniq = convert(root / "liqe_koniq.pt", "koniq", root / "liqe-koniq", protocol="pyiqa")
    return {"mix": mix, "koniq": koniq, "root": root}


@pytest.fixture(scope="module")
def images():
    return [random_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGE_SIZES)]


@pytest.mark.parametrize("protocol", ["official", "pyiqa"])
def test_mix_parity_with_openai_clip(converted, oa_clip, openai_simple_tokenizer, images, protocol):
    model = LiqeModel.from_pretrained(converted["mix"].output_dir).eval()
    processor = LiqeImageProcessor(protocol=protocol)
    with torch.no_grad():
        ours = model(**processor(images, return_tensors="pt"))
    expected = reference_liqe(oa_clip, openai_simple_tokenizer, images, protocol)
    for field in ("scores", "level_probs", "scene_probs", "distortion_probs"):
        torch.testing.assert_close(getattr(ours, field), expected[field], atol=1e-5, rtol=0)
    # logits carry the factor exp(logit_scale) = 100: compare at the same relative precision
    torch.testing.assert_close(ours.logits / 100, expected["logits"] / 100, atol=1e-5, rtol=0)
    assert expected["logits"].std() > 0.1  # the random model is not degenerate


def test_koniq_parity_with_openai_clip(converted, oa_clip, openai_simple_tokenizer, images):
    model = hf_iqa.models.liqe.LiqeModel.from_pretrained(converted["koniq"].output_dir).eval()
    assert not model.config.multitask and model.prompt_text_features.shape[0] == 5
    processor = LiqeImageProcessor.from_pretrained(converted["koniq"].output_dir)
    assert processor.protocol == "pyiqa"
    with torch.no_grad():
        ours = model(**processor(images, return_tensors="pt"))
    expected = reference_liqe(oa_clip, openai_simple_tokenizer, images, "pyiqa", multitask=False)
    torch.testing.assert_close(ours.scores, expected["scores"], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.logits / 100, expected["logits"] / 100, atol=1e-5, rtol=0)
    assert ours.scene_probs is None


def test_protocols_differ_on_large_images(converted, images):
    """official != pyiqa for images >= 1024 px; equal for small ones (spec liqe.md §12.2)."""
    model = LiqeModel.from_pretrained(converted["mix"].output_dir).eval()
    with torch.no_grad():
        official = model(**LiqeImageProcessor(protocol="official")(images, return_tensors="pt")).scores
        pyiqa = model(**LiqeImageProcessor(protocol="pyiqa")(images, return_tensors="pt")).scores
    small = [i for i, (w, h) in enumerate(IMAGE_SIZES) if max(w, h) < 1024 and min(w, h) < 768]
    large = [i for i, (w, h) in enumerate(IMAGE_SIZES) if max(w, h) >= 1024]
    torch.testing.assert_close(official[small], pyiqa[small], atol=1e-6, rtol=0)
    assert (official[large] - pyiqa[large]).abs().min() > 1e-5


def test_mapping_mistakes_break_parity(converted, oa_clip, openai_simple_tokenizer, images):
    """The parity test can fail: swapped q/k and the HF default logit scale each move the logits (and so the
    compared outputs) far past the 1e-5 tolerance."""
    expected = reference_liqe(oa_clip, openai_simple_tokenizer, images[:2], "official")["logits"] / 100
    inputs = LiqeImageProcessor()(images[:2], return_tensors="pt")

    swapped = LiqeModel.from_pretrained(converted["mix"].output_dir).eval()
    attention = swapped.clip.vision_model.encoder.layers[0].self_attn
    with torch.no_grad():
        q, k = attention.q_proj.weight.clone(), attention.k_proj.weight.clone()
        attention.q_proj.weight.copy_(k)
        attention.k_proj.weight.copy_(q)
        assert (swapped(**inputs).logits / 100 - expected).abs().max() > 1e-3

    wrong_scale = LiqeModel.from_pretrained(converted["mix"].output_dir).eval()
    with torch.no_grad():
        wrong_scale.clip.logit_scale.fill_(2.6592)  # transformers' default init instead of the checkpoint's
        assert (wrong_scale(**inputs).logits / 100 - expected).abs().max() > 1e-3


def test_converted_folder_contents(converted):
    folder = converted["mix"].output_dir
    expected = {
        "README.md", "config.json", "configuration_liqe.py", "image_processing_liqe.py", "model.safetensors",
        "modeling_liqe.py", "fast_liqe.py", "pipeline_image_quality.py", "io.py", "preprocessor_config.json", "tokenizer.json",
        "tokenizer_config.json",
    }  # fmt: skip
    assert set(converted["mix"].files) == expected
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_liqe.LiqeConfig",
        "AutoModel": "modeling_liqe.LiqeModel",
    }
    assert config["model_type"] == "hf_iqa_liqe" and config["score_range"] == [1.0, 5.0]
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_liqe.LiqeImageProcessor"}
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    card = (folder / "README.md").read_text()
    assert "library_name: transformers" in card and "1 (bad) to 5 (perfect)" in card and "{{" not in card
    assert converted["mix"].layout == "openai" and converted["koniq"].layout == "pyiqa"
    assert max(converted["mix"].max_differences.values()) <= 1e-5


def test_stored_prompt_features_match_tokenizer_in_folder(converted):
    """The saved tokenizer reproduces the stored prompt embeddings (users who edit prompts rely on it)."""
    from transformers import AutoTokenizer

    folder = converted["mix"].output_dir
    model = LiqeModel.from_pretrained(folder).eval()
    stored = model.prompt_text_features.clone()
    recomputed = model.compute_prompt_text_features(AutoTokenizer.from_pretrained(folder))
    torch.testing.assert_close(recomputed, stored, atol=1e-6, rtol=0)


def test_folder_with_the_old_buffer_name_is_refused(converted, tmp_path):
    """A folder saved when the prompt embeddings were called `text_embeds` fails loudly instead of scoring against
    zero features; a bad setting given to `from_pretrained` is refused too."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "old"
    LiqeModel.from_pretrained(converted["koniq"].output_dir).save_pretrained(folder)
    state = load_file(folder / "model.safetensors")
    state["text_embeds"] = state.pop("prompt_text_features")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"no stored prompt features \(prompt_text_features\).*text_embeds"):
        LiqeModel.from_pretrained(folder)
    # the CLI says it in one line naming the folder (transformers' pipeline wraps it in a traceback dump)
    random_image(64, 48).save(tmp_path / "a.png")
    result = subprocess.run(
        [sys.executable, "-m", "hf_iqa", "score", "--model", str(folder), str(tmp_path / "a.png"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(folder) in lines[0] and "text_embeds" in lines[0], result.stderr
    with pytest.raises(ValueError, match="LiqeConfig.num_patches"):
        LiqeModel.from_pretrained(converted["koniq"].output_dir, num_patches=0)


def test_converter_refuses_to_save_on_mismatch(oa_clip, tmp_path, monkeypatch):
    import hf_iqa.converters.liqe as liqe_conversion

    torch.save(oa_clip.state_dict(), tmp_path / "LIQE.pt")
    original = liqe_conversion.convert_openai_clip_state_dict

    def swap_qk(state, **kwargs):
        converted = original(state, **kwargs)
        key = "vision_model.encoder.layers.1.self_attn."
        converted[key + "q_proj.weight"], converted[key + "k_proj.weight"] = (
            converted[key + "k_proj.weight"], converted[key + "q_proj.weight"],
        )  # fmt: skip
        return converted

    monkeypatch.setattr(liqe_conversion, "convert_openai_clip_state_dict", swap_qk)
    with pytest.raises(ParityError, match="not saving"):
        convert(tmp_path / "LIQE.pt", "mix", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_converter_rejects_unknown_layout_and_bad_files(tmp_path):
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConversionError, match="not a LIQE checkpoint"):
        convert(tmp_path / "other.pt", "mix", tmp_path / "out")
    with pytest.raises(ConversionError, match="not found"):
        convert(tmp_path / "missing.pt", "mix", tmp_path / "out")
    (tmp_path / "garbage.pt").write_bytes(b"not a pickle")
    with pytest.raises(ConversionError, match="cannot load checkpoint safely"):
        convert(tmp_path / "garbage.pt", "mix", tmp_path / "out")


def test_cli_convert_matches_script(oa_clip, tmp_path):
    from hf_iqa.cli import main

    torch.save(oa_clip.state_dict(), tmp_path / "LIQE.pt")
    args = ["--checkpoint", str(tmp_path / "LIQE.pt"), "--variant", "koniq", "--output-dir", str(tmp_path / "o")]
    assert main(["convert", "liqe", *args]) == 0
    assert (tmp_path / "o" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):  # non-empty output folder without --overwrite
        main(["convert", "liqe", *args])


def test_remote_code_without_hf_iqa(converted, without_hf_iqa, images):
    folder = converted["mix"].output_dir
    model = LiqeModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = model(**LiqeImageProcessor()(images[:3], return_tensors="pt")).scores
    code = f"""
        import json, numpy as np, torch
        from PIL import Image
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        images = [Image.open(p) for p in {[str(converted["root"] / f"img{i}.png") for i in range(3)]!r}]
        with torch.no_grad():
            print(json.dumps(model(**processor(images, return_tensors="pt")).scores.tolist()))
    """
    for i, image in enumerate(images[:3]):
        image.save(converted["root"] / f"img{i}.png")
    remote = torch.tensor(json.loads(without_hf_iqa(code).strip().splitlines()[-1]))
    torch.testing.assert_close(remote, expected, atol=0, rtol=0)


def test_auto_classes_and_processor_kwargs(converted):
    from transformers import AutoImageProcessor, AutoModel

    folder = converted["mix"].output_dir
    assert isinstance(AutoModel.from_pretrained(folder), LiqeModel)
    processor = AutoImageProcessor.from_pretrained(folder, protocol="pyiqa")
    assert isinstance(processor, LiqeImageProcessor) and processor.protocol == "pyiqa"


def test_bf16_inference_close_to_fp32(converted, images):
    folder = converted["mix"].output_dir
    inputs = LiqeImageProcessor()(images[:2], return_tensors="pt")
    with torch.no_grad():
        fp32 = LiqeModel.from_pretrained(folder).eval()(**inputs).scores
        model = LiqeModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
        assert model.clip.vision_model.embeddings.patch_embedding.weight.dtype == torch.bfloat16
        assert model.prompt_text_features.dtype == model.clip.logit_scale.dtype == torch.float32  # kept exact
        bf16 = model(pixel_values=inputs["pixel_values"].bfloat16(), patch_mask=inputs["patch_mask"]).scores
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() < 0.1


def test_plain_clip_checkpoint_initialises_backbone(tmp_path):
    """base_model_prefix="clip": a transformers CLIP checkpoint loads into LiqeModel (training from CLIP)."""
    from transformers import CLIPModel

    from hf_iqa.models.liqe import LiqeConfig

    config = LiqeConfig(clip_config=tiny_clip_config())
    clip = CLIPModel(config.clip_config)
    clip.save_pretrained(tmp_path)
    model = LiqeModel.from_pretrained(tmp_path, config=config)
    torch.testing.assert_close(model.clip.visual_projection.weight, clip.visual_projection.weight)


def tiny_clip_config():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         hidden_act="quick_gelu", eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           patch_size=32, hidden_act="quick_gelu"),
        projection_dim=16, logit_scale_init_value=4.6052,
    )  # fmt: skip


def test_full_size_vit_b32_parity(openai_clip_model, openai_simple_tokenizer, tmp_path):
    """One real-size ViT-B/32 (151 M parameters, random weights), KonIQ variant to keep it fast."""
    oa = openai_clip_model.CLIP(
        embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
        context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12,
    ).eval()  # fmt: skip
    torch.save(oa.state_dict(), tmp_path / "liqe_full.pt")
    result = convert(tmp_path / "liqe_full.pt", "koniq", tmp_path / "out")
    assert max(result.max_differences.values()) <= 1e-5
    model = LiqeModel.from_pretrained(tmp_path / "out").eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in oa.parameters())
    image = random_image(512, 384, seed=7)
    with torch.no_grad():
        ours = model(**LiqeImageProcessor()(image, return_tensors="pt")).scores
    expected = reference_liqe(oa, openai_simple_tokenizer, [image], "official", multitask=False)["scores"]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "size, protocol, resized, stride, windows, step",
    [  # liqe.md §2.3, verified counts
        ((1024, 768), "official", (1024, 768), 48, 12 * 17, 13),
        ((1024, 768), "pyiqa", (1024, 768), 32, 18 * 26, 31),
        ((1920, 1080), "official", (1365, 768), 48, 12 * 24, 19),
        ((1920, 1080), "pyiqa", (1920, 1080), 32, 27 * 54, 97),
        ((512, 512), "official", (512, 512), 32, 100, 6),
    ],
)
def test_window_grid_matches_spec(size, protocol, resized, stride, windows, step):
    from hf_iqa.models.liqe.image_processing_liqe import select_windows, window_grid

    processor = LiqeImageProcessor(protocol=protocol)
    array = np.zeros((3, size[1], size[0]), dtype=np.uint8)
    image, got_stride = processor.prepare_image(array, protocol, 224)
    assert (image.shape[2], image.shape[1]) == resized and got_stride == stride
    rows, cols = window_grid(image.shape[1], image.shape[2], 224, stride)
    assert rows * cols == windows
    corners = select_windows(image.shape[1], image.shape[2], 224, stride, 15)
    assert len(corners) == 15 and corners[1] == (step // cols * stride, step % cols * stride)


def test_small_images_are_upsampled_and_masked(converted):
    model = LiqeModel.from_pretrained(converted["mix"].output_dir).eval()
    processor = LiqeImageProcessor()
    with pytest.warns(UserWarning, match="smaller than a 224px window"):
        inputs = processor([random_image(150, 100), random_image(512, 384)], return_tensors="pt")
    assert inputs["pixel_values"].shape == (2, 15, 3, 224, 224)
    assert inputs["patch_mask"].sum(1).tolist() == [4, 15]  # 336x224 -> 1 row x 4 columns of windows
    with torch.no_grad():
        batched = model(**inputs).scores
        with pytest.warns(UserWarning, match="smaller than"):
            alone = model(**processor(random_image(150, 100), return_tensors="pt")).scores
    assert torch.isfinite(batched).all()
    torch.testing.assert_close(batched[:1], alone, atol=1e-6, rtol=0)  # padding windows change nothing


def test_random_patch_sampling_is_seeded():
    processor = LiqeImageProcessor(patch_sampling="random", num_patches=3, seed=1)
    image = random_image(512, 384)
    first = processor(image, return_tensors="pt")["pixel_values"]
    again = processor(image, return_tensors="pt")["pixel_values"]
    other = processor(image, seed=2, return_tensors="pt")["pixel_values"]
    assert first.shape == (1, 3, 3, 224, 224) and torch.equal(first, again) and not torch.equal(first, other)


def test_bad_processor_settings_are_clear():
    with pytest.raises(ValueError, match="protocol must be"):
        LiqeImageProcessor(protocol="fast")
    with pytest.raises(ValueError, match="pixel_values of shape"):
        LiqeModel(hf_iqa.models.liqe.LiqeConfig(clip_config=tiny_clip_config()))(pixel_values=torch.zeros(3, 224))
