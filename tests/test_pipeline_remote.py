"""The `image-quality` task as Hub remote code: every saved hf_iqa folder carries the flat pipeline file and
`custom_pipelines`, so a user with only torch/transformers/pillow/safetensors gets the package's exact results;
with the package installed every call form keeps using the package's own classes."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import pipeline as transformers_pipeline

import hf_iqa
from hf_iqa import io as hf_io
from hf_iqa import pipeline_image_quality as flat
from hf_iqa.converters import uniqa as uniqa_conversion
from hf_iqa.converters.liqe import convert as convert_liqe
from hf_iqa.models.qualiclip import QualiClipImageProcessor
from hf_iqa.pipelines import CUSTOM_PIPELINES, PIPELINE_FILE
from tests.models.dog_iqa.test_pipeline_dog_iqa import dog_dir  # noqa: F401  (fixture: a tiny Dog-IQA folder)
from tests.models.liqe.test_modeling_liqe import make_openai_clip
from tests.models.qualiclip.test_modeling_qualiclip import (
    make_oracle_resnet,
    qualiclip_from_oracle,
    random_text_features,
)
from tests.models.uniqa.test_modeling_uniqa import make_openai_clip as make_uniqa_clip
from tests.testing_utils import random_image

ALLOWED_IMPORTS = {"torch", "numpy", "PIL", "transformers"}


@pytest.fixture(scope="module")
def folders(openai_clip_model, tmp_path_factory, dog_dir):  # noqa: F811
    """One saved folder per model: LIQE and UniQA through their converters, QualiCLIP through save_pretrained."""
    root = tmp_path_factory.mktemp("remote")
    torch.save(make_openai_clip(openai_clip_model, seed=3).state_dict(), root / "LIQE.pt")
    liqe = convert_liqe(root / "LIQE.pt", "mix", root / "liqe").output_dir
    torch.save(make_uniqa_clip(openai_clip_model, "vit", seed=1).state_dict(), root / "UniQA.pt")
    assert uniqa_conversion.main(["--checkpoint", str(root / "UniQA.pt"), "--output-dir", str(root / "uniqa")]) == 0
    qualiclip = qualiclip_from_oracle(make_oracle_resnet(openai_clip_model), random_text_features())
    qualiclip.save_pretrained(root / "qualiclip")
    QualiClipImageProcessor().save_pretrained(root / "qualiclip")
    return {"liqe": str(liqe), "uniqa": str(root / "uniqa"), "qualiclip": str(root / "qualiclip"),
            "dog_iqa": str(dog_dir / "dog")}  # fmt: skip


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three files of different sizes (QualiCLIP groups sizes inside a batch)."""
    root = tmp_path_factory.mktemp("remote_images")
    paths = []
    for i, (w, h) in enumerate([(96, 64), (70, 60), (96, 64)]):
        paths.append(str(root / f"img{i}.png"))
        random_image(w, h, seed=20 + i).save(paths[-1])
    return paths


def test_every_saved_folder_carries_the_pipeline(folders, tmp_path):
    for name, folder in folders.items():
        config = json.loads(open(f"{folder}/config.json").read())
        assert config["custom_pipelines"] == CUSTOM_PIPELINES, name
        assert open(f"{folder}/{PIPELINE_FILE.name}").read() == PIPELINE_FILE.read_text(), name
    # a loaded model saved again still carries it, and saving leaves the in-memory config as it was
    model = hf_iqa.load(folders["qualiclip"])
    before = model.config.to_dict()
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["custom_pipelines"] == CUSTOM_PIPELINES
    assert (tmp_path / "again" / PIPELINE_FILE.name).is_file()
    assert model.config.to_dict() == before
    fresh = hf_iqa.models.qualiclip.QualiClipConfig()
    fresh.save_pretrained(tmp_path / "config_only")
    assert not hasattr(fresh, "custom_pipelines")


def test_package_call_forms_use_the_package_classes(folders, images):
    """The trap: transformers demands trust_remote_code for any task in `custom_pipelines`, even when hf_iqa has
    registered it. With hf_iqa imported, every form below must work and run the package's own code."""
    folder = folders["liqe"]
    expected = hf_iqa.pipeline(model=folder)(images[0])
    pipes = [
        transformers_pipeline("image-quality", model=folder),
        transformers_pipeline(model=folder),
        transformers_pipeline("image-quality", model=folder, trust_remote_code=True),
        transformers_pipeline(model=folder, trust_remote_code=True),
    ]
    for pipe in pipes:
        assert type(pipe) is hf_iqa.ImageQualityPipeline
        assert type(pipe.model).__module__.startswith("hf_iqa.models.liqe.")
        assert pipe(images[0]) == expected
    with pytest.raises(hf_iqa.ImageLoadError, match="nowhere.png"):  # the package's loader, the package's error
        pipes[0]("/nowhere.png")


def test_without_hf_iqa_the_remote_pipeline_returns_the_same_dicts(folders, images, without_hf_iqa):
    expected = {}
    for name, folder in folders.items():  # one fresh pipeline per call, as below (Dog-IQA keeps a prefix KV cache)
        single = hf_iqa.pipeline(model=folder)(images, batch_size=1)
        expected[name] = {"single": single, "batched": hf_iqa.pipeline(model=folder)(images, batch_size=3)}
    code = f"""
        import json
        from transformers import pipeline
        results = {{}}
        for name, folder in {folders!r}.items():
            named = pipeline("image-quality", model=folder, trust_remote_code=True)
            inferred = pipeline(model=folder, trust_remote_code=True)
            for pipe in (named, inferred):
                assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
                assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
            results[name] = {{"single": named({images!r}, batch_size=1), "batched": inferred({images!r}, batch_size=3)}}
        try:
            pipeline("image-quality", model={folders["liqe"]!r})
        except ValueError as error:
            results["untrusted"] = str(error)
        print("\\nRESULTS " + json.dumps(results))  # after the prompt transformers prints without a newline
    """
    remote = json.loads(without_hf_iqa(code).split("\nRESULTS ", 1)[1])
    assert "trust_remote_code" in remote.pop("untrusted")
    assert remote.keys() == expected.keys()
    for name in expected:
        assert remote[name] == json.loads(json.dumps(expected[name])), name  # same dicts, same floats
        assert {"score"} <= set(remote[name]["single"][0])
    assert {"region_scores", "num_regions"} <= set(remote["dog_iqa"]["single"][0])
    assert {"level_probs", "scene", "distortion"} <= set(remote["liqe"]["single"][0])


def test_flat_files_import_only_what_remote_code_may():
    """The pipeline file and the loader it imports (`io.py`) travel into saved folders: torch, numpy, PIL,
    transformers, the standard library and each other only."""
    for path in (PIPELINE_FILE, Path(hf_io.__file__)):
        tree = ast.parse(path.read_text())
        third_party, relative = set(), set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    relative.add(node.module)
                else:
                    third_party.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                third_party.update(alias.name.split(".")[0] for alias in node.names)
        assert relative <= {"io"}, path.name
        assert third_party - set(sys.stdlib_module_names) <= ALLOWED_IMPORTS, path.name


def test_saved_folder_carries_the_package_loader(folders):
    """The remote pipeline reads images with the very file `hf_iqa.io` is, not a copy that could drift."""
    for name, folder in folders.items():
        assert (Path(folder) / "io.py").read_text() == Path(hf_io.__file__).read_text(), name
    assert flat.load_image is hf_io.load_image  # in the package, the pipeline uses hf_iqa.io itself
