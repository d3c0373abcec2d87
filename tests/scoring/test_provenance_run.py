"""Provenance in `hf-iqa score` outputs (issue 26 item 3): every output says what produced it, and `--resume`
refuses, before the model loads and without touching the file, to append rows of another model, other weights or
other settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hf_iqa import provenance
from tests.scoring.test_outputs import no_model_load
from tests.test_engine import score
from tests.test_evaluation import save_image, save_tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("provenance")
    for i in range(4):
        save_image(base / "photos" / f"img{i}.png", 60 + i)
    return {"photos": base / "photos", "model": save_tiny_model(base / "model", seed=7),
            "other": save_tiny_model(base / "other", seed=8)}  # fmt: skip


def interrupted_run(setup, out, *extra):
    """A finished output cut back to its header and first row, as a kill leaves it."""
    assert score(setup, str(setup["photos"]), "-o", str(out), *extra) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]))
    return out.read_bytes()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_output_records_what_produced_it(setup, tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    assert score(setup, str(setup["photos"]), "-o", str(out), "--model-arg", "score_range=[0,2]") == 0
    record = provenance.read_record(out)
    weights = next(Path(setup["model"]).glob("*.safetensors"))
    assert record["comparable"]["model"]["files"][weights.name] == provenance.file_sha256(weights)
    assert record["comparable"]["model_args"] == {"score_range": [0, 2]}
    assert record["comparable"]["dtype"] == "auto"  # the model's released precision (--dtype default)
    assert record["info"]["model"] == str(setup["model"])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        stored = pq.read_schema(out).metadata[provenance.PARQUET_KEY]
        assert json.loads(stored)["comparable"] == record["comparable"]


def test_resume_with_another_model_is_refused_and_the_file_untouched(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "scores.csv"
    before = interrupted_run(setup, out)
    no_model_load(monkeypatch)  # refused before any model is loaded
    capsys.readouterr()
    assert score({**setup, "model": setup["other"]}, str(setup["photos"]), "-o", str(out), "--resume") == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == before


def test_resume_with_another_model_arg_is_refused(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "scores.csv"
    before = interrupted_run(setup, out)
    no_model_load(monkeypatch)
    capsys.readouterr()
    assert score(setup, str(setup["photos"]), "-o", str(out), "--resume", "--model-arg", "score_range=[0,2]") == 2
    assert "--model-arg" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_resume_after_the_weights_changed_is_refused(setup, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    local = {**setup, "model": str(model)}
    out = tmp_path / "scores.csv"
    before = interrupted_run(local, out)
    weights = next(model.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of one tensor
    weights.write_bytes(bytes(data))
    no_model_load(monkeypatch)
    capsys.readouterr()
    assert score(local, str(setup["photos"]), "-o", str(out), "--resume") == 2
    assert weights.name in capsys.readouterr().err
    assert out.read_bytes() == before


def test_resume_with_the_same_settings_goes_on(setup, tmp_path):
    out = tmp_path / "scores.csv"
    interrupted_run(setup, out)
    assert score(setup, str(setup["photos"]), "-o", str(out), "--resume") == 0
    assert out.read_text().count("\n") == 5  # header + 4 images, each once


def test_an_output_without_record_is_resumed_only_when_trusted(setup, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    before = interrupted_run(setup, out)
    provenance.sidecar_path(out).unlink()  # an output of an older hf_iqa
    capsys.readouterr()
    assert score(setup, str(setup["photos"]), "-o", str(out), "--resume") == 2
    assert "--trust-unrecorded" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert score(setup, str(setup["photos"]), "-o", str(out), "--resume", "--trust-unrecorded") == 0
    assert provenance.read_record(out) is not None  # recorded from now on


def test_benchmark_records_what_produced_each_run(tmp_path):
    from hf_iqa.cli import main
    from tests.test_evaluation import make_folder_dataset

    make_folder_dataset(tmp_path / "mine", count=6)
    model = save_tiny_model(tmp_path / "model", seed=3)
    arguments = ["benchmark", "--model", model, "--dataset", "folder", "--data-root", str(tmp_path / "mine"),
                 "--split", "all", "--output-dir", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(arguments) == 0
    run_dir = tmp_path / "out" / "model" / "mine-all"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    weights = next(Path(model).glob("*.safetensors"))
    assert metrics["provenance"]["comparable"]["model"]["files"][weights.name] == provenance.file_sha256(weights)
    assert provenance.read_record(run_dir / "scores.csv")["comparable"] == metrics["provenance"]["comparable"]
