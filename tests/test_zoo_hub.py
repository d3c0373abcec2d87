"""Model names -> weights (zoo) and publishing to the Hub, with the Hub mocked (no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from unittest import mock

import pytest
import torch

import hf_iqa
from hf_iqa import zoo, zoo_entries
from tests.models.liqe.test_modeling_liqe import make_openai_clip
from tests.testing_utils import random_image


@pytest.fixture
def original_liqe(openai_clip_model, tmp_path):
    """A random-weight file in pyiqa's liqe_koniq.pt layout, as `hf_hub_download` would return it."""
    state = make_openai_clip(openai_clip_model, seed=5).state_dict()
    path = tmp_path / "download" / "liqe_koniq.pt"
    path.parent.mkdir()
    torch.save({"params": {"clip_model." + k: v for k, v in state.items()}}, path)
    return path


@pytest.fixture
def hub(monkeypatch, tmp_path, original_liqe):
    """Hub with no converted repo, serving the original checkpoint; counts downloads and conversions."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "cache"))
    calls = {"download": [], "convert": 0}

    def fake_download(repo_id, filename, **kwargs):
        calls["download"].append((repo_id, filename))
        return str(original_liqe)

    def no_snapshot(repo_id, **kwargs):
        raise LocalEntryNotFoundError(f"{repo_id} not cached")

    import hf_iqa.converters.liqe as liqe_conversion

    real_convert = liqe_conversion.convert

    def counting_convert(*args, **kwargs):
        calls["convert"] += 1
        return real_convert(*args, **kwargs)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    monkeypatch.setattr("huggingface_hub.snapshot_download", no_snapshot)
    monkeypatch.setattr(liqe_conversion, "convert", counting_convert)
    return calls


def test_list_models_metadata():
    names = {m["name"]: m for m in hf_iqa.list_models()}
    assert {"liqe", "liqe-mix"} <= set(names)
    assert names["liqe-mix"]["score_range"] == [1.0, 5.0] and names["liqe-mix"]["higher_is_better"]
    assert "cc-by-nc-sa" in names["liqe"]["weights_license"] and names["liqe"]["source"]


def test_name_resolves_via_original_checkpoint_and_is_cached(hub, tmp_path):
    folder = Path(hf_iqa.resolve("liqe"))
    assert hub["download"] == [("chaofengc/IQA-PyTorch-Weights", "liqe_koniq.pt")]
    assert hub["convert"] == 1 and (folder / "model.safetensors").is_file()
    assert folder.parent == tmp_path / "cache" / "converted" and folder.name.startswith("liqe-")
    assert Path(hf_iqa.resolve("liqe_koniq")) == folder  # aliases share the cache
    assert hub["convert"] == 1  # converted once, keyed by the file's hash
    model = hf_iqa.load("liqe")
    assert type(model).__name__ == "LiqeModel" and not model.config.multitask


def test_converted_cache_key_carries_the_format_version(hub, monkeypatch):
    """A folder converted by an hf_iqa with another weight layout (e.g. LIQE's old `text_embeds`) is not reused."""
    folder = Path(hf_iqa.resolve("liqe"))
    monkeypatch.setattr(zoo, "CONVERTED_FORMAT", zoo.CONVERTED_FORMAT + 1)
    assert Path(hf_iqa.resolve("liqe")) != folder and hub["convert"] == 2


def test_name_works_in_pipeline_and_cli(hub, tmp_path):
    from hf_iqa.cli import main

    image = tmp_path / "photo.png"
    random_image(320, 240).save(image)
    score = hf_iqa.pipeline(model="liqe")(str(image))["score"]
    assert 1.0 <= score <= 5.0
    assert main(["score", "--model", "liqe", str(image), "-o", str(tmp_path / "s.csv"), "--no-progress"]) == 0


def test_pinned_hash_mismatch_is_refused(hub, monkeypatch, original_liqe):
    entry = zoo.get_entry("liqe")
    bad = zoo.ZooEntry(**{**entry.__dict__, "originals": (zoo.OriginalFile("r/x", "liqe_koniq.pt", "0" * 64),)})
    monkeypatch.setattr(zoo_entries, "_ENTRIES", [bad])
    with pytest.raises(zoo.ModelNotAvailableError, match="sha256"):
        zoo.resolve("liqe")
    good_digest = hashlib.sha256(original_liqe.read_bytes()).hexdigest()
    good = zoo.ZooEntry(**{**entry.__dict__, "originals": (zoo.OriginalFile("r/x", "liqe_koniq.pt", good_digest),)})
    monkeypatch.setattr(zoo_entries, "_ENTRIES", [good])
    assert Path(zoo.resolve("liqe")).is_dir()


def test_offline_cold_cache_fails_fast_with_instructions(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(zoo.ModelNotAvailableError) as info:  # offline mode raises before any network call
        hf_iqa.resolve("liqe-mix")
    message = str(info.value)
    assert "liqe_mix.pt" in message and "hf-iqa convert liqe" in message


def test_unknown_names_pass_through(tmp_path):
    with mock.patch.object(zoo, "hub_reachable", return_value=True):  # a Hub id goes on to transformers
        assert hf_iqa.resolve("someone/their-model") == "someone/their-model"
    assert hf_iqa.resolve(str(tmp_path)) == str(tmp_path)


def test_hub_id_unreachable_and_not_cached_is_one_error():
    with mock.patch.object(zoo, "hub_reachable", return_value=False):
        with pytest.raises(zoo.ModelNotAvailableError, match="not in the local Hugging Face cache"):
            hf_iqa.resolve("someone/their-model")


def test_push_to_hub_uploads_verified_folder_in_one_commit(openai_clip_model, tmp_path):
    from huggingface_hub import HfApi

    from hf_iqa.converters.liqe import main

    torch.save(make_openai_clip(openai_clip_model).state_dict(), tmp_path / "LIQE.pt")
    with (
        mock.patch.object(HfApi, "create_repo", return_value="https://huggingface.co/org/liqe") as create,
        mock.patch.object(HfApi, "create_branch") as branch,
        mock.patch.object(HfApi, "upload_folder") as upload,
    ):
        status = main(["--checkpoint", str(tmp_path / "LIQE.pt"), "--variant", "mix", "--output-dir",
                       str(tmp_path / "out"), "--push-to-hub", "org/liqe", "--private", "--revision", "v1"])  # fmt: skip
    assert status == 0
    create.assert_called_once_with("org/liqe", private=True, exist_ok=True)
    branch.assert_called_once_with("org/liqe", branch="v1", exist_ok=True)
    upload.assert_called_once()
    kwargs = upload.call_args.kwargs
    assert kwargs["repo_id"] == "org/liqe" and kwargs["revision"] == "v1"
    assert kwargs["ignore_patterns"] == [".hf_iqa_manifest.json"]  # local bookkeeping stays local
    uploaded = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir() if p.name != ".hf_iqa_manifest.json")
    assert uploaded == ["README.md", "config.json", "configuration_liqe.py", "fast_liqe.py", "image_processing_liqe.py",
                        "io.py", "model.safetensors", "modeling_liqe.py", "pipeline_image_quality.py",
                        "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"]  # fmt: skip


def test_push_refused_when_parity_fails(openai_clip_model, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    import hf_iqa.converters.liqe as liqe_conversion

    torch.save(make_openai_clip(openai_clip_model).state_dict(), tmp_path / "LIQE.pt")
    original = liqe_conversion.convert_openai_clip_state_dict

    def broken(state, **kwargs):
        converted = original(state, **kwargs)
        converted["visual_projection.weight"] = converted["visual_projection.weight"].flip(0)
        return converted

    monkeypatch.setattr(liqe_conversion, "convert_openai_clip_state_dict", broken)
    with mock.patch.object(HfApi, "upload_folder") as upload, pytest.raises(SystemExit):
        liqe_conversion.main(["--checkpoint", str(tmp_path / "LIQE.pt"), "--variant", "mix", "--output-dir",
                              str(tmp_path / "out"), "--push-to-hub", "org/liqe"])  # fmt: skip
    upload.assert_not_called()


def test_model_card_has_model_index(openai_clip_model, tmp_path):
    from huggingface_hub import ModelCard

    from hf_iqa.converters.liqe import convert

    torch.save(make_openai_clip(openai_clip_model).state_dict(), tmp_path / "LIQE.pt")
    folder = convert(tmp_path / "LIQE.pt", "mix", tmp_path / "out").output_dir
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "other" and card.data.library_name == "transformers"
    results = {r.dataset_name: r.metric_value for r in card.data.eval_results}
    assert results["AGIQA-3K"] == pytest.approx(0.7212)
    assert all("reported" in r.metric_name for r in card.data.eval_results)


def test_qualiclip_plus_name_combines_two_original_files(monkeypatch, tmp_path, openai_clip_model,
                                                         openai_simple_tokenizer):  # fmt: skip
    """A QualiCLIP+ name downloads the prompt-learner file and the QualiCLIP.pth it sits on, converts both once."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    import hf_iqa.converters.qualiclip as qualiclip_conversion
    from tests.converters.test_converters_qualiclip import SMALL_PARITY_SIZES, Originals

    originals = Originals(openai_clip_model, openai_simple_tokenizer, tmp_path)
    served = {"QualiCLIP.pth": originals.full, "QualiCLIP+_spaq.pth": originals.plus}
    requested = []

    def fake_download(repo_id, filename, **kwargs):
        requested.append(filename)
        return str(served[filename])

    def no_snapshot(repo_id, **kwargs):
        raise LocalEntryNotFoundError(repo_id)

    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    monkeypatch.setattr("huggingface_hub.snapshot_download", no_snapshot)
    monkeypatch.setattr(qualiclip_conversion, "PARITY_SIZES", SMALL_PARITY_SIZES)
    folder = Path(hf_iqa.resolve("qualiclip+-spaq"))
    assert requested == ["QualiCLIP.pth", "QualiCLIP+_spaq.pth"]
    model = hf_iqa.load(str(folder))
    assert type(model).__name__ == "QualiClipModel" and model.prompt_text_features.shape[0] == 14
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.do_resize  # the -spaq prompts were learned on images resized to 512 on the short side
