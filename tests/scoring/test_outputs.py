"""Outputs of hf_iqa.scoring (issue 24 items 2-4, issue 25's new-user list): resume across process counts and
across a crash in the merge, writes never through links, and the usage errors said before the model loads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_iqa import scoring
from tests.test_engine import all_images, driver_command, read_csv, score, subprocess_env
from tests.test_evaluation import save_image, save_tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("outputs")
    for i in range(10):
        save_image(base / "photos" / ("a" if i < 5 else "b") / f"img{i:02d}.png", 40 + i)
    return {"base": base, "photos": base / "photos", "model": save_tiny_model(base / "model", seed=5)}


def parts_from(rows: list[dict], parts: Path, world: int = 2) -> None:
    """The parts a `world`-process run leaves behind, made from finished rows."""
    parts.mkdir()
    for rank in range(world):
        with open(parts / f"rank-{rank}-of-{world}.jsonl", "w") as handle:
            for number, row in enumerate(rows):
                if number % world == rank:
                    record = {"path": row["path"], "key": row["path"], "score": float(row["score"]), "_n": [0, number]}
                    handle.write(json.dumps(record) + "\n")


def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the usage error")

    monkeypatch.setattr(scoring, "load_pipeline", refuse)
    monkeypatch.setattr(scoring, "load_scorer", refuse)


def test_torchrun_killed_then_resumed_by_one_process_has_every_row_once(setup, tmp_path):
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += driver_command(tmp_path)[1:]
    command += ["score", "--model", setup["model"], str(setup["photos"]), "-o", str(out), "-b", "1",
                "--workers", "1", "--no-progress", "--device", "cpu"]  # fmt: skip
    env = subprocess_env(TINY_DELAY="0.4", ACCELERATE_USE_CPU="true")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        parts = tmp_path / "out.csv.parts"
        while time.monotonic() < deadline and process.poll() is None:
            written = sum(p.read_text().count("\n") for p in parts.glob("rank-*.jsonl")) if parts.is_dir() else 0
            if written >= 3:
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert parts.is_dir() and not out.exists(), "the run was not killed half-way"
    assert score(setup, str(setup["photos"]), "-o", str(out), "--resume") == 0
    rows = read_csv(out)
    assert sorted(r["path"] for r in rows) == [str(p) for p in all_images(setup)]
    assert not parts.exists()


@pytest.mark.parametrize("crash", ["while writing", "before the rename", "before the parts are removed"])
def test_a_crash_in_the_merge_then_resume_gives_every_row_once(setup, tmp_path, monkeypatch, crash):
    from hf_iqa.scoring import outputs, writers

    finished = tmp_path / "finished.csv"
    assert score(setup, str(setup["photos"]), "-o", str(finished)) == 0
    rows = read_csv(finished)
    out = tmp_path / "out.csv"
    parts_from(rows[:7], tmp_path / "out.csv.parts")
    shutil.copy(tmp_path / "finished.csv.meta.json", tmp_path / "out.csv.meta.json")  # a run records itself first
    count = {"rows": 0}
    real_write = writers.TextWriter.write

    def write_then_die(self, row):
        count["rows"] += 1
        if count["rows"] == 5:
            raise RuntimeError("killed")
        real_write(self, row)

    def die(*args, **kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        if crash == "while writing":
            patch.setattr(writers.TextWriter, "write", write_then_die)
        elif crash == "before the rename":
            patch.setattr(outputs, "replace_durably", die)
        else:
            patch.setattr(outputs.shutil, "rmtree", die)
        with pytest.raises(RuntimeError, match="killed"):
            score(setup, str(setup["photos"]), "-o", str(out), "--resume")
    assert score(setup, str(setup["photos"]), "-o", str(out), "--resume") == 0
    again = read_csv(out)
    assert sorted(r["path"] for r in again) == [str(p) for p in all_images(setup)]  # each input exactly once
    assert not (tmp_path / "out.csv.parts").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]  # no temporary left visible


def test_duplicate_tar_members_killed_and_resumed_are_each_scored_once(setup, tmp_path):
    import tarfile

    shard = tmp_path / "dup.tar"
    with tarfile.open(shard, "w") as archive:
        for path in all_images(setup)[:3]:
            archive.add(path, arcname="same.png")
    out = tmp_path / "out.csv"
    assert score(setup, str(shard), "-o", str(out)) == 0
    rows = read_csv(out)
    assert len(rows) == 3 and len({r["key"] for r in rows}) == 3
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]))  # killed after the first row
    assert score(setup, str(shard), "-o", str(out), "--resume") == 0
    assert read_csv(out) == rows


def test_output_through_a_dangling_link_is_refused(setup, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere" / "target.csv"
    elsewhere.parent.mkdir()
    link = tmp_path / "out.csv"
    link.symlink_to(elsewhere)
    no_model_load(monkeypatch)
    assert score(setup, str(setup["photos"]), "-o", str(link), "--overwrite") == 2
    err = capsys.readouterr().err
    assert "symbolic link to a missing file" in err and err.count("\n") == 1
    assert not elsewhere.exists()


def test_planted_links_at_predictable_names_redirect_nothing(setup, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out.parquet"
    (tmp_path / ".out.parquet.tmp").symlink_to(victim)  # the temporary name of earlier versions
    assert score(setup, str(setup["photos"]), "-o", str(out)) == 0
    assert victim.read_text() == "precious\n" and out.stat().st_size > 0
    journal = tmp_path / "j.parquet.journal.jsonl"
    journal.symlink_to(victim)
    assert score(setup, str(setup["photos"]), "-o", str(tmp_path / "j.parquet")) == 2  # exists: not replaced
    capsys.readouterr()
    resume = ("--resume", "--trust-unrecorded")  # past the record check (the planted journal has no record)
    assert score(setup, str(setup["photos"]), "-o", str(tmp_path / "j.parquet"), *resume) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "symbolic link" in errors[0]
    assert victim.read_text() == "precious\n"


def test_usage_errors_come_before_the_model_loads(setup, tmp_path, monkeypatch, capsys):
    no_model_load(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        score(setup, str(setup["photos"]), "-b", "0")
    assert stop.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    assert score(setup, str(tmp_path / "photoz")) == 2
    assert "photoz: no such file or folder" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert score(setup, str(setup["photos"]), "-o", str(tmp_path / "s.parquet")) == 2
    err = capsys.readouterr().err
    assert "pip install pyarrow" in err and err.count("\n") == 1
    assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "s.parquet.journal.jsonl").exists()


def test_warnings_are_summarised_and_the_counts_add_up(setup, tmp_path, monkeypatch, capsys):
    import warnings

    real = scoring.PipelineScorer.prepare

    def warn_then_prepare(self, item):
        warnings.warn(f"image of {len(item.key)}x7 is small", UserWarning, stacklevel=1)
        return real(self, item)

    monkeypatch.setattr(scoring.PipelineScorer, "prepare", warn_then_prepare)
    (tmp_path / "bad.png").write_bytes(b"junk")
    assert score(setup, str(setup["photos"]), str(tmp_path / "bad.png"), "-o", str(tmp_path / "o.csv")) == 1
    err = capsys.readouterr().err
    assert err.count("is small") == 1 and "warning (11x): UserWarning: image of NxN is small" in err
    assert "11 input(s) seen: 0 already done, 11 row(s) written now, 1 of 11 failed" in err


def test_the_model_is_loaded_once(setup, monkeypatch):
    from transformers import AutoConfig, AutoImageProcessor

    calls = {"config": 0, "processor": 0}
    config_load, processor_load = AutoConfig.from_pretrained.__func__, AutoImageProcessor.from_pretrained.__func__

    def counted_config(cls, *args, **kwargs):
        calls["config"] += 1
        return config_load(cls, *args, **kwargs)

    def counted_processor(cls, *args, **kwargs):
        calls["processor"] += 1
        return processor_load(cls, *args, **kwargs)

    monkeypatch.setattr(AutoConfig, "from_pretrained", classmethod(counted_config))
    monkeypatch.setattr(AutoImageProcessor, "from_pretrained", classmethod(counted_processor))
    image = str(all_images(setup)[0])
    assert score(setup, image, "--model-arg", "hidden_size=8", "--processor-arg", "do_resize=true") == 0
    assert calls == {"config": 1, "processor": 1}


def test_a_closed_stdout_ends_quietly(setup, tmp_path):
    command = [*driver_command(tmp_path), "score", "--model", setup["model"], str(setup["photos"]), "-b", "1",
               "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    try:
        process.stdout.readline()
        process.stdout.close()  # `| head -1`
        err = process.stderr.read().decode()
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "Traceback" not in err and "Broken pipe" not in err and code in (0, 141)


def test_an_output_written_before_the_key_column_resumes_by_name(setup, tmp_path):
    import tarfile

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as archive:
        for path in all_images(setup)[:3]:
            archive.add(path, arcname=path.name)
    out = tmp_path / "out.csv"
    assert score(setup, str(shard), "-o", str(out)) == 0
    rows = read_csv(out)
    lines = ["path,score,error\n", *(f"{r['path']},{r['score']},\n" for r in rows[:2])]
    out.write_text("".join(lines))  # an earlier version's output, killed after two rows
    assert score(setup, str(shard), "-o", str(out), "--resume") == 0
    assert [r["path"] for r in read_csv(out)] == [r["path"] for r in rows]
