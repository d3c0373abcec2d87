"""Dog-IQA through the user-facing paths: image-quality pipeline, visualization, CLI, remote code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import hf_iqa
from hf_iqa.cli import main
from hf_iqa.models.dog_iqa import DogIqaConfig, DogIqaImageProcessor, DogIqaModel
from tests.models.dog_iqa.test_modeling_dog_iqa import TINY
from tests.models.dog_iqa.tiny_models import save_tiny_models
from tests.testing_utils import random_image


@pytest.fixture(scope="module")
def dog_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dog_pipe")
    paths = save_tiny_models(str(root / "subs"), families=("qwen2_vl",))
    config = DogIqaConfig(segmenter_name_or_path=paths["sam2"], mllm_name_or_path=paths["qwen2_vl"], **TINY)
    model = DogIqaModel.from_pretrained("unused", config=config)
    model.save_pretrained(root / "dog")
    DogIqaImageProcessor().save_pretrained(root / "dog")
    for seed in range(2):
        random_image(96, 64, seed).save(root / f"img{seed}.png")
    return root


def test_pipeline_returns_regions_and_visualization(dog_dir):
    pipe = hf_iqa.pipeline(model=str(dog_dir / "dog"))
    result = pipe(str(dog_dir / "img0.png"), return_visualization=True)
    assert {"score", "global_score", "local_score", "num_regions", "level_probs", "level"} <= set(result)
    count = result["num_regions"]
    assert count >= 1 and len(result["region_scores"]) == count and len(result["region_boxes"]) == count
    assert all(len(box) == 4 for box in result["region_boxes"])
    assert isinstance(result["visualization"], Image.Image) and result["visualization"].size == (96, 64)
    batched = pipe([str(dog_dir / "img0.png"), str(dog_dir / "img1.png")], batch_size=2)
    assert batched[0]["score"] == pytest.approx(result["score"], abs=1e-5)
    assert "visualization" not in batched[0]


def test_cli_saves_visualizations(dog_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    status = main(["score", "-m", str(dog_dir / "dog"), str(dog_dir / "img0.png"), str(dog_dir / "img1.png"),
                   "-o", str(out), "--save-visualizations", str(tmp_path / "viz"), "--no-progress"])  # fmt: skip
    assert status == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Image.open(r["visualization"]).size for r in rows] == [(96, 64), (96, 64)]
    # pictures keep the input's path under the folder, so two inputs never share a picture name
    saved = sorted(p.relative_to(tmp_path / "viz") for p in (tmp_path / "viz").rglob("*.png"))
    expected = [Path(str(dog_dir / f"img{i}.png_regions.png").lstrip("/")) for i in range(2)]
    assert saved == expected and [Path(r["visualization"]) for r in rows] == [tmp_path / "viz" / e for e in expected]


def test_remote_code_without_hf_iqa(dog_dir, without_hf_iqa):
    folder = dog_dir / "dog"
    with torch.no_grad():
        expected = hf_iqa.load(str(folder))(images=[Image.open(dog_dir / "img0.png").convert("RGB")]).scores
    code = f"""
        import json, torch
        from PIL import Image
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model(images=[Image.open({str(dog_dir / "img0.png")!r}).convert("RGB")])
        print(json.dumps(out.scores.tolist()))
    """
    remote = torch.tensor(json.loads(without_hf_iqa(code).strip().splitlines()[-1]))
    torch.testing.assert_close(remote, expected, atol=1e-6, rtol=0)


def test_pipeline_keeps_one_cache_so_the_prompt_prefix_is_encoded_once(dog_dir):
    pipe = hf_iqa.pipeline(model=str(dog_dir / "dog"))
    prefix_passes = []  # MLLM passes without an image: the prompt prefix's KV cache being computed
    pipe.model.mllm.register_forward_pre_hook(
        lambda _, args, kwargs: prefix_passes.append("pixel_values" not in kwargs), with_kwargs=True
    )
    attributes = set(vars(pipe.model))
    files = [str(dog_dir / f"img{i}.png") for i in range(2)]
    first = pipe(files, batch_size=1)
    second = pipe(files[::-1], batch_size=1, return_visualization=True)
    # once per prompt (global, region) for the pipeline, not once per call or batch
    assert sum(prefix_passes) == 2 and len(prefix_passes) > 2
    assert set(vars(pipe.model)) == attributes  # the cache lives in the pipeline, not on the model
    assert [r["score"] for r in second[::-1]] == [r["score"] for r in first]
