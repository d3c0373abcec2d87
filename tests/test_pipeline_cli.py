"""The image-quality pipeline and `hf-iqa score` on a tiny converted LIQE model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import hf_iqa
from hf_iqa.cli import main
from hf_iqa.converters.liqe import convert
from tests.models.liqe.test_modeling_liqe import make_openai_clip
from tests.testing_utils import random_image


@pytest.fixture(scope="module")
def liqe_dir(openai_clip_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    torch.save(make_openai_clip(openai_clip_model, seed=3).state_dict(), root / "LIQE.pt")
    return convert(root / "LIQE.pt", "mix", root / "liqe-mix").output_dir


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i, (w, h) in enumerate([(512, 384), (300, 260), (640, 480)]):
        random_image(w, h, seed=10 + i).save(root / f"photo{i}.jpg", quality=95)
    return root


def test_pipeline_inputs_agree(liqe_dir, photo_dir):
    from PIL import Image
    from transformers import pipeline

    pipe = pipeline("image-quality", model=str(liqe_dir))
    assert isinstance(pipe, hf_iqa.ImageQualityPipeline)
    path = photo_dir / "photo0.jpg"
    pil = Image.open(path)
    from_path = pipe(str(path))
    assert pipe(pil)["score"] == pytest.approx(from_path["score"], abs=1e-6)
    assert pipe(np.asarray(pil))["score"] == pytest.approx(from_path["score"], abs=1e-6)
    assert 1.0 <= from_path["score"] <= 5.0
    assert set(from_path) == {
        "score", "level", "level_probs", "scene", "scene_probs", "distortion", "distortion_probs",
    }  # fmt: skip
    assert list(from_path["scene_probs"]) == hf_iqa.models.liqe.LiqeConfig().scenes
    assert sum(from_path["distortion_probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert from_path["scene"] == max(from_path["scene_probs"], key=from_path["scene_probs"].get)


def test_pipeline_batching_matches_single(liqe_dir, photo_dir):
    pipe = hf_iqa.pipeline(model=liqe_dir)
    paths = sorted(str(p) for p in photo_dir.glob("*.jpg"))
    single = [pipe(p)["score"] for p in paths]
    batched = [r["score"] for r in pipe(paths, batch_size=3)]
    assert batched == pytest.approx(single, abs=1e-5)
    generated = [r["score"] for r in pipe((p for p in paths), batch_size=2)]
    assert generated == pytest.approx(single, abs=1e-5)


def test_pipeline_processor_kwargs_and_dtype(liqe_dir, photo_dir):
    big = photo_dir.parent / "big.png"
    random_image(1100, 800, seed=4).save(big)
    official = hf_iqa.pipeline(model=liqe_dir)(str(big))["score"]
    pyiqa = hf_iqa.pipeline(model=liqe_dir, processor_kwargs={"protocol": "pyiqa"})(str(big))["score"]
    assert abs(official - pyiqa) > 1e-6
    bf16 = hf_iqa.pipeline(model=liqe_dir, dtype=torch.bfloat16)(str(big))["score"]
    assert abs(bf16 - official) < 0.1


def test_pipeline_bad_input_names_the_file(liqe_dir, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(hf_iqa.ImageLoadError, match="bad.jpg"):
        hf_iqa.pipeline(model=liqe_dir)(str(tmp_path / "bad.jpg"))


def test_cli_score_csv_with_bad_files(liqe_dir, photo_dir, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in photo_dir.glob("*.jpg"):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "zero.png").write_bytes(b"")
    out = tmp_path / "scores.csv"
    status = main(["score", "--model", str(liqe_dir), str(folder), "--output", str(out), "-b", "2", "--no-progress"])
    assert status == 1  # some files failed
    rows = list(csv.DictReader(out.open()))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["broken.jpg", "photo0.jpg", "photo1.jpg", "photo2.jpg",
                                                           "zero.png"]  # fmt: skip
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in rows}
    assert "corrupt" in by_name["broken.jpg"]["error"] and "empty" in by_name["zero.png"]["error"]
    pipe = hf_iqa.pipeline(model=liqe_dir)
    for name in ("photo0.jpg", "photo1.jpg", "photo2.jpg"):
        assert float(by_name[name]["score"]) == pytest.approx(pipe(str(folder / name))["score"], abs=1e-5)
        assert by_name[name]["scene"] and by_name[name]["error"] == ""
        assert float(by_name[name]["level_probs.perfect"]) >= 0
    assert "2 of 5" in capsys.readouterr().err


def test_cli_score_jsonl_all_good(liqe_dir, photo_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    status = main(["score", "-m", str(liqe_dir), str(photo_dir / "photo0.jpg"), str(photo_dir / "photo1.jpg"),
                   "-o", str(out), "--no-progress", "--processor-arg", "protocol=pyiqa"])  # fmt: skip
    assert status == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all("score" in r and "scene_probs" in r for r in rows)


def test_cli_score_stdout_and_missing(liqe_dir, photo_dir, capsys):
    status = main(["score", "-m", str(liqe_dir), str(photo_dir / "photo0.jpg"), "/nonexistent.jpg", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1
    assert "photo0.jpg\t" in captured.out and "/nonexistent.jpg\tERROR\tno such file" in captured.err


def test_cli_help_and_list(capsys):
    assert main([]) == 0
    assert main(["list"]) == 0
    assert "liqe" in capsys.readouterr().out


def test_cli_model_that_cannot_be_loaded_is_a_clear_error(photo_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as constants

    image = str(photo_dir / "photo0.jpg")
    assert main(["score", "--model", str(tmp_path / "missing-folder"), image, "--no-progress"]) == 2
    assert "missing-folder: no such model folder" in capsys.readouterr().err

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "converted"))
    assert main(["score", "--model", "liqe-mix", image, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "hf-iqa score: error:" in err and "hf-iqa convert liqe" in err and "Traceback" not in err


def test_cli_rejected_model_or_processor_argument_is_a_clear_error(liqe_dir, photo_dir, capsys):
    image = str(photo_dir / "photo0.jpg")
    assert main(["score", "--model", str(liqe_dir), image, "--processor-arg", "protocol=nope", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "cannot load" in error and "protocol" in error and "Traceback" not in error


def test_cli_unknown_model_or_processor_key_is_an_error_not_ignored(liqe_dir, photo_dir, capsys):
    image = str(photo_dir / "photo0.jpg")
    assert main(["score", "--model", str(liqe_dir), image, "--processor-arg", "crop_mode=grid", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert (
        error == f"hf-iqa score: error: --processor-arg crop_mode: not a setting of LiqeImageProcessor ({liqe_dir})\n"
    )
    assert main(["score", "--model", str(liqe_dir), image, "--model-arg", "prompt_scale=5", "--no-progress"]) == 2
    assert "--model-arg prompt_scale: not a setting of LiqeConfig" in capsys.readouterr().err
