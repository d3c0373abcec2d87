"""QualiCLIP / QualiCLIP+ conversion end to end on tiny random checkpoints in the original layouts (built with the
OpenAI CLIP code from the openai-clip package): parity, both scales, the QualiCLIP+ prompt path against the OpenAI
text transformer, layout errors, and loading without hf_iqa (remote code)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard

import hf_iqa
from hf_iqa.converters import qualiclip as converter
from hf_iqa.converters.common import ConversionError, ParityError
from hf_iqa.models.qualiclip import QualiClipModel
from tests.models.qualiclip.test_modeling_qualiclip import (
    make_oracle_resnet,
    pixels,
    reference_scores,
    without_position_embedding,
)

PROMPTS = [
    "Good photo.", "Bad photo.", "Sharp image.", "Blurry image.", "Sharp edges.", "Blurry edges.",
    "High-resolution image.", "Low-resolution image.", "Noise-free image.", "Noisy image.",
    "High-quality image.", "Low-quality image.", "Good picture.", "Bad picture.",
]  # fmt: skip
N_CTX = 16
SMALL_PARITY_SIZES = ((64, 64), (96, 64), (45, 77))  # the tiny test towers are slow at 224 on a shared CPU


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    """OpenAI `clip.tokenize` with the package's own SimpleTokenizer."""
    ids = torch.zeros(len(texts), 77, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [49406, *tokenizer.encode(text), 49407]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids


class Originals:
    """Tiny original checkpoints and the oracle CLIP they came from."""

    def __init__(self, openai_clip_model, tokenizer, folder):
        torch.manual_seed(0)
        clip = openai_clip_model.CLIP(
            embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None,
            context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2,
        )  # fmt: skip
        clip.visual = make_oracle_resnet(openai_clip_model)  # BatchNorm statistics measured on random images
        with torch.no_grad():
            for name, param in clip.named_parameters():
                if not name.startswith("visual."):
                    param.add_(torch.randn_like(param) * 0.05)
            clip.logit_scale.fill_(math.log(100.0))  # what the QualiCLIP checkpoint carries
        self.clip = clip.eval()
        with torch.no_grad():
            self.prompt_features = F.normalize(clip.encode_text(tokenize(tokenizer, PROMPTS)), dim=-1)
        self.full = folder / "qualiclip.pth"
        state = {f"clip_model.{k}": v for k, v in clip.state_dict().items()}
        torch.save({**state, "prompts_features": self.prompt_features}, self.full)

        # pyiqa QualiCLIP+: token embeddings of "X X ... X <prompt>" around the 16 placeholders + learned ctx.
        self.template_ids = tokenize(tokenizer, ["X " * N_CTX + prompt for prompt in PROMPTS])
        with torch.no_grad():
            embeddings = clip.token_embedding(self.template_ids)
        generator = torch.Generator().manual_seed(1)
        self.ctx = torch.randn(14, N_CTX, 64, generator=generator) * 0.5
        self.token_prefix, self.token_suffix = embeddings[:, :1], embeddings[:, 1 + N_CTX :]
        self.plus = folder / "QualiCLIP+_spaq.pth"
        learner = {"ctx": self.ctx, "token_prefix": self.token_prefix, "token_suffix": self.token_suffix}
        torch.save({"params": {f"prompt_learner.{k}": v for k, v in learner.items()}}, self.plus)

    def image_embeds(self, images: list[torch.Tensor]) -> torch.Tensor:
        tower = without_position_embedding(self.clip.visual)
        with torch.no_grad():
            return torch.cat([tower(x[None]) for x in images])

    def plus_prompt_features(self, name_lengths: list[int]) -> torch.Tensor:
        """pyiqa's prompt learner through the OpenAI text transformer: SOS, ctx[:8], words, ctx[8:], EOS + pad."""
        rows = []
        for i, length in enumerate(name_lengths):
            suffix = self.token_suffix[i]
            rows.append(
                torch.cat([self.token_prefix[i], self.ctx[i, :8], suffix[:length], self.ctx[i, 8:], suffix[length:]])
            )
        clip = self.clip
        with torch.no_grad():
            x = torch.stack(rows) + clip.positional_embedding
            x = clip.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            x = clip.ln_final(x)
            x = x[torch.arange(14), self.template_ids.argmax(dim=-1)] @ clip.text_projection
        return F.normalize(x, dim=-1)


@pytest.fixture(scope="module")
def originals(openai_clip_model, openai_simple_tokenizer, tmp_path_factory):
    return Originals(openai_clip_model, openai_simple_tokenizer, tmp_path_factory.mktemp("qualiclip_originals"))


@pytest.fixture(scope="module")
def converted(originals, tmp_path_factory):
    """Folders converted once and shared: official scale, pyiqa scale, QualiCLIP+ (SPAQ) image-only and with text."""
    root = tmp_path_factory.mktemp("qualiclip_converted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(converter, "PARITY_SIZES", SMALL_PARITY_SIZES)
        return {
            "official": converter.convert(originals.full, root / "official"),
            "pyiqa": convert_with_command_line(originals.full, root / "pyiqa", "--protocol", "pyiqa"),
            "plus": converter.convert(originals.plus, root / "plus", base_checkpoint=originals.full),
            "plus_text": converter.convert(
                originals.plus, root / "plus_text", base_checkpoint=originals.full, keep_text_tower=True
            ),
        }


def convert_with_command_line(checkpoint, output_dir, *options) -> converter.ConversionResult:
    """`hf-iqa convert qualiclip` / conversion/convert_qualiclip.py go through `main`; it must reach `convert`."""
    results = []
    original = converter.convert
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(converter, "convert", lambda *a, **k: results.append(original(*a, **k)) or results[-1])
        argv = ["--checkpoint", str(checkpoint), "--output-dir", str(output_dir), *options]
        assert converter.main(argv) == 0
    return results[0]


@pytest.fixture
def small_parity_inputs(monkeypatch):
    monkeypatch.setattr(converter, "PARITY_SIZES", SMALL_PARITY_SIZES)


IMAGES = [pixels(64, 64, 0), pixels(96, 64, 1), pixels(45, 77, 2)]


def load(folder, **kwargs) -> QualiClipModel:
    from transformers import AutoModel

    hf_iqa.register_all()
    return AutoModel.from_pretrained(str(folder), **kwargs).eval()


@pytest.mark.parametrize("name,scale", [("official", 100.0), ("pyiqa", 50.0)])
def test_converted_full_checkpoint_matches_openai_at_both_scales(originals, converted, name, scale):
    result = converted[name]
    assert result.variant == "qualiclip" and result.prompt_logit_scale == scale and result.max_difference <= 1e-5
    model = load(result.output_dir)
    assert isinstance(model, QualiClipModel) and model.config.prompt_logit_scale == scale
    assert model.text_model is None and model.config.text_config is None  # image-only inference checkpoint
    with torch.no_grad():
        scores = model(pixel_values=IMAGES).scores
    embeds = originals.image_embeds(IMAGES)
    torch.testing.assert_close(scores, reference_scores(embeds, originals.prompt_features, scale), atol=1e-5, rtol=0)
    other = reference_scores(embeds, originals.prompt_features, 150.0 - scale)
    assert (scores - other).abs().max() > 1e-4
    torch.testing.assert_close(model.prompt_text_features, originals.prompt_features)  # stored, never re-encoded


def test_scale_override_at_load_reproduces_the_pyiqa_conversion(converted):
    official = load(converted["official"].output_dir, prompt_logit_scale=50.0)
    pyiqa = load(converted["pyiqa"].output_dir)
    with torch.no_grad():
        torch.testing.assert_close(official(pixel_values=IMAGES).scores, pyiqa(pixel_values=IMAGES).scores)


def test_converted_folder_contents_and_card(converted):
    folder = converted["official"].output_dir
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= names
    assert {"configuration_qualiclip.py", "modeling_qualiclip.py", "image_processing_qualiclip.py"} <= names
    assert not any(name.endswith((".bin", ".pth", ".pt")) for name in names)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_qualiclip.QualiClipModel"
    assert config["score_range"] == [0.0, 1.0] and config["higher_is_better"] is True
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and card.data.pipeline_tag == "image-classification"
    assert "{{" not in card.text and "reproduces the official torch.hub model" in card.text
    plus_card = ModelCard.load(converted["plus"].output_dir / "README.md")
    assert plus_card.data.license == "cc-by-nc-sa-4.0" and "qualiclip+-spaq" in plus_card.text


def test_qualiclip_plus_prompt_features_match_openai_text_transformer(originals, converted):
    result = converted["plus"]
    assert result.variant == "qualiclip+" and result.prompt_logit_scale == 50.0  # pyiqa: logit_scale.exp() / 2
    model = load(result.output_dir)
    assert model.config.prompt_token_lengths == [3, 3, 3, 3, 3, 3, 5, 5, 5, 3, 5, 5, 3, 3]
    expected = originals.plus_prompt_features(model.config.prompt_token_lengths)
    torch.testing.assert_close(model.prompt_text_features, expected, atol=1e-5, rtol=0)
    assert (model.prompt_text_features - originals.prompt_features).abs().max() > 1e-2  # learned, not plain prompts
    assert model.text_model is None and model.prompt_learner is None
    with torch.no_grad():
        scores = model(pixel_values=IMAGES).scores
    expected_scores = reference_scores(originals.image_embeds(IMAGES), expected, 50.0)
    torch.testing.assert_close(scores, expected_scores, atol=1e-5, rtol=0)


def test_spaq_processor_resizes_short_side_to_512(converted):
    from transformers import AutoImageProcessor

    hf_iqa.register_all()
    spaq = AutoImageProcessor.from_pretrained(str(converted["plus"].output_dir))
    assert spaq.do_resize and spaq.size["shortest_edge"] == 512
    assert not AutoImageProcessor.from_pretrained(str(converted["official"].output_dir)).do_resize


def test_text_tower_kept_recomputes_the_same_features(originals, converted, openai_simple_tokenizer):
    folder = converted["plus_text"].output_dir
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    model = load(folder)
    assert model.text_model is not None and model.prompt_learner is not None
    stored = model.prompt_text_features.clone()
    with torch.no_grad():
        model.prompt_text_features.zero_()
        recomputed = model.compute_prompt_text_features()
        text = model.get_text_features(tokenize(openai_simple_tokenizer, PROMPTS[:2]))
        expected_text = originals.clip.encode_text(tokenize(openai_simple_tokenizer, PROMPTS[:2]))
    torch.testing.assert_close(recomputed, stored, atol=1e-6, rtol=0)
    torch.testing.assert_close(F.normalize(text, dim=-1), F.normalize(expected_text, dim=-1), atol=1e-5, rtol=0)
    assert model.prompt_learner.ctx.requires_grad  # the prompt context can be retrained


def test_fixed_prompts_recomputed_with_the_tokenizer(originals, converted):
    """Without a prompt learner, `compute_prompt_text_features(tokenizer)` encodes `config.prompts` (OpenAI oracle)."""
    from transformers import AutoTokenizer

    folder = converted["plus_text"].output_dir
    model = load(folder, use_prompt_learner=False)
    assert model.text_model is not None and model.prompt_learner is None
    with pytest.raises(ValueError, match="tokenizer"):
        model.compute_prompt_text_features()
    features = model.compute_prompt_text_features(AutoTokenizer.from_pretrained(folder))
    torch.testing.assert_close(features, originals.prompt_features, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.prompt_text_features, features, atol=0, rtol=0)


def test_layout_errors_are_clear(originals, tmp_path):
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="not a QualiCLIP checkpoint"):
        converter.convert(tmp_path / "other.pth", tmp_path / "out")
    with pytest.raises(ConversionError, match="--base-checkpoint"):
        converter.convert(originals.plus, tmp_path / "out")
    renamed = tmp_path / "prompts.pth"
    renamed.write_bytes(originals.plus.read_bytes())
    with pytest.raises(ConversionError, match="--dataset"):
        converter.convert(renamed, tmp_path / "out", base_checkpoint=originals.full)
    with pytest.raises(ConversionError, match="not found"):
        converter.convert(tmp_path / "missing.pth", tmp_path / "out")


def test_parity_failure_blocks_saving(originals, tmp_path, monkeypatch, small_parity_inputs):
    """A key-map mistake (q and k projections swapped) must stop the conversion before anything is written."""
    original_map = converter.convert_resnet_state_dict

    def swapped(state, prefix="visual."):
        weights = original_map(state, prefix)
        weights["attnpool.q_proj.weight"], weights["attnpool.k_proj.weight"] = (
            weights["attnpool.k_proj.weight"],
            weights["attnpool.q_proj.weight"],
        )
        return weights

    monkeypatch.setattr(converter, "convert_resnet_state_dict", swapped)
    with pytest.raises(ParityError, match="image embeddings"):
        converter.convert(originals.full, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_command_line_reports_errors_without_traceback(originals, converted, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_IQA_NO_PROGRESS", "1")

    def exit_status(argv):
        with pytest.raises(SystemExit) as stop:
            converter.main(argv)
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return stop.value.code, err

    argv = ["--checkpoint", str(originals.full), "--output-dir", str(converted["official"].output_dir)]
    code, err = exit_status(argv)  # an earlier conversion, no --overwrite
    assert code == 2 and "--overwrite" in err
    code, err = exit_status(["--checkpoint", str(originals.plus), "--output-dir", "unused"])
    assert code == 2 and "--base-checkpoint" in err
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(originals.full.read_bytes()[:5000])  # a checkpoint that cannot be loaded
    code, err = exit_status(["--checkpoint", str(truncated), "--output-dir", str(tmp_path / "out")])
    assert code == 2 and "truncated.pth" in err and not (tmp_path / "out").exists()


def test_loads_without_hf_iqa_via_remote_code(converted, without_hf_iqa):
    folder = converted["plus"].output_dir
    code = f"""
    import torch
    from transformers import AutoImageProcessor, AutoModel
    model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert processor.do_resize
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 64, 64, generator=g), torch.randn(3, 45, 77, generator=g)]
    with torch.no_grad():
        print(" ".join(f"{{s:.8f}}" for s in model(pixel_values=images).scores.tolist()))
    """
    remote = torch.tensor([float(s) for s in without_hf_iqa(code).split()])
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 64, 64, generator=generator), torch.randn(3, 45, 77, generator=generator)]
    with torch.no_grad():
        local = load(folder)(pixel_values=images).scores
    torch.testing.assert_close(remote, local, atol=1e-6, rtol=0)


def test_fixture_batch_norm_statistics_are_not_defaults(originals):
    """Guard for the fixtures: identity BatchNorm statistics would hide a dropped or mis-mapped BatchNorm."""
    bn = originals.clip.visual.layer1[0].bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
