"""The zoo cache under concurrency, kills, replaced or broken originals and no network; converters that replace
only their own files. The Hub is mocked (a random-weight tiny original served by a fake `hf_hub_download`)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hf_iqa import zoo
from hf_iqa.cli import main as hf_iqa_main
from tests.models.liqe.test_modeling_liqe import make_openai_clip
from tests.testing_utils import REPO_ROOT, random_image


def cli(argv: list[str]) -> int:
    """`hf-iqa ...` in-process; its exit status (converters exit through SystemExit)."""
    try:
        return hf_iqa_main(argv)
    except SystemExit as stop:
        return stop.code


def save_original(openai_clip_model, path: Path, seed: int = 5) -> Path:
    """A random-weight file in pyiqa's liqe_*.pt layout."""
    state = make_openai_clip(openai_clip_model, seed=seed).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": {"clip_model." + k: v for k, v in state.items()}}, path)
    return path


@pytest.fixture
def original(openai_clip_model, tmp_path):
    return save_original(openai_clip_model, tmp_path / "download" / "liqe_koniq.pt")


@pytest.fixture
def hub(monkeypatch, tmp_path, original):
    """No converted repo; `hf_hub_download` serves whatever file `served["path"]` names."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_IQA_NO_PROGRESS", "1")
    served = {"path": original}

    def fake_download(repo_id, filename, **kwargs):
        return str(served["path"])

    def no_snapshot(repo_id, **kwargs):
        raise LocalEntryNotFoundError(f"{repo_id} not cached")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    monkeypatch.setattr("huggingface_hub.snapshot_download", no_snapshot)
    return served


def staging_folders(cache: Path) -> list[Path]:
    converted = cache / "converted"
    return sorted(p for p in converted.iterdir() if p.name.startswith(".")) if converted.is_dir() else []


# ----------------------------------------------------------------------------------------------------------------
# Concurrency and kills (real processes)
# ----------------------------------------------------------------------------------------------------------------
CHILD = r"""
import sys, time
from pathlib import Path
import huggingface_hub
from huggingface_hub.errors import LocalEntryNotFoundError

original, work, mode, index = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
huggingface_hub.hf_hub_download = lambda repo_id, filename, **kw: original
def no_snapshot(repo_id, **kw):
    raise LocalEntryNotFoundError(repo_id)
huggingface_hub.snapshot_download = no_snapshot

import hf_iqa.converters.liqe as liqe
from hf_iqa import zoo

real_convert = liqe.convert
def convert(checkpoint, variant, output_dir, **kwargs):
    with open(work / "conversions.log", "a") as log:
        log.write(index + "\n")
    if mode == "killed":  # write part of the folder, then hang until killed
        (Path(output_dir) / "model.safetensors").write_bytes(b"half written")
        (work / "halfway").touch()
        time.sleep(600)
    result = real_convert(checkpoint, variant, output_dir, **kwargs)
    time.sleep(1.0)  # a slow finish widens the window in which others could race
    return result
liqe.convert = convert

(work / f"ready-{index}").touch()
while not (work / "go").exists():
    time.sleep(0.02)
print(zoo.resolve("liqe"))
"""


def start_children(tmp_path: Path, original: Path, mode: str, count: int) -> list[subprocess.Popen]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "HF_IQA_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_IQA_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(original), str(work), mode, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(count)
    ]
    deadline = time.monotonic() + 600
    while len(list(work.glob("ready-*"))) < count:
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
        assert time.monotonic() < deadline, "children did not start"
        time.sleep(0.1)
    (work / "go").touch()
    return children


def test_processes_resolving_the_same_entry_at_once_all_succeed_and_convert_once(original, tmp_path):
    children = start_children(tmp_path, original, "normal", 3)
    results = [child.communicate(timeout=600) for child in children]
    for child, (_out, err) in zip(children, results):
        assert child.returncode == 0, err[-3000:]
    folders = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert len((tmp_path / "work" / "conversions.log").read_text().split()) == 1  # the lock: one converts
    assert staging_folders(tmp_path / "cache") == []


def test_conversion_killed_half_way_is_cleaned_up_and_retried(original, tmp_path, hub):
    cache = tmp_path / "cache"
    (child,) = start_children(tmp_path, original, "killed", 1)
    deadline = time.monotonic() + 600
    while not (tmp_path / "work" / "halfway").exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    left = staging_folders(cache)
    assert len(left) == 1 and (left[0] / "model.safetensors").read_bytes() == b"half written"
    assert not [p for p in (cache / "converted").iterdir() if not p.name.startswith(".")]  # nothing published

    folder = Path(zoo.resolve("liqe"))  # the killed process's lock died with it
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").stat().st_size > 1000
    assert staging_folders(cache) == []  # the stale staging folder is gone


def test_stale_staging_of_another_folder_is_removed_only_when_its_lock_is_free(hub, tmp_path):
    converted = tmp_path / "cache" / "converted"
    busy = converted / ".staging-qualiclip-0123456789abcdef-busy01"
    stale = converted / ".staging-uniqa-0123456789abcdef-stale1"
    for folder in (busy, stale):
        folder.mkdir(parents=True)
        (folder / "part").write_bytes(b"x")
    lock = zoo._lock(converted / "qualiclip-0123456789abcdef")
    lock.acquire()
    try:
        zoo.resolve("liqe")
    finally:
        lock.release()
    assert busy.is_dir() and not stale.exists()


# ----------------------------------------------------------------------------------------------------------------
# Trust on first use, broken originals
# ----------------------------------------------------------------------------------------------------------------
def test_replaced_original_is_refused(hub, openai_clip_model, tmp_path, capsys):
    first = Path(zoo.resolve("liqe"))
    records = list((tmp_path / "cache" / "trusted").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["filename"] == "liqe_koniq.pt"
    assert Path(zoo.resolve("liqe")) == first  # same bytes: accepted

    save_original(openai_clip_model, hub["path"], seed=6)  # different bytes under the same name
    with pytest.raises(zoo.ModelNotAvailableError, match="refusing .*liqe_koniq.pt.*sha256") as info:
        zoo.resolve("liqe")
    assert str(records[0]) in str(info.value)

    image = tmp_path / "photo.png"
    random_image(64, 48).save(image)
    capsys.readouterr()
    assert cli(["score", "--model", "liqe", str(image), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refusing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    records[0].unlink()  # the message's way out: trust the new file
    assert Path(zoo.resolve("liqe")) != first


def test_checkpoint_that_fails_to_convert_is_one_line_and_not_trusted(hub, tmp_path, original, capsys):
    broken = tmp_path / "download" / "broken.pt"
    torch.save({"params": {"clip_model.visual.conv1.weight": torch.zeros(2, 3, 4, 4)}}, broken)
    hub["path"] = broken
    with pytest.raises(zoo.ModelNotAvailableError, match="cannot convert .*broken.pt") as info:
        zoo.resolve("liqe")
    assert "\n" not in str(info.value)
    image = tmp_path / "photo.png"
    random_image(64, 48).save(image)
    capsys.readouterr()
    assert cli(["score", "--model", "liqe", str(image)]) == 2
    err = capsys.readouterr().err
    assert "cannot convert" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert staging_folders(tmp_path / "cache") == []
    assert not (tmp_path / "cache" / "trusted").exists()  # a file that never converted is not recorded

    hub["path"] = original  # a good download afterwards is not refused
    assert (Path(zoo.resolve("liqe")) / "config.json").is_file()


def test_first_use_shows_stages_unless_progress_is_off(hub, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("HF_IQA_NO_PROGRESS")
    image = tmp_path / "photo.png"
    random_image(64, 48).save(image)
    assert cli(["score", "--model", "liqe", str(image), "-o", str(tmp_path / "s.csv"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "first use" not in err and "convert liqe" not in err  # --no-progress reaches the zoo's conversion
    assert "HF_IQA_NO_PROGRESS" not in os.environ  # and is not left behind
    folder = zoo.resolve("liqe-mix")
    err = capsys.readouterr().err
    assert "liqe-mix: first use: converting liqe_koniq.pt" in err and f"ready ({folder})" in err
    assert "convert liqe (mix)" in err and "prompt embeddings (495 prompts) [8/8]" in err  # the stage bar
    assert zoo.resolve("liqe-mix", progress=False) == folder and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------------------------------------------
# No network
# ----------------------------------------------------------------------------------------------------------------
def test_offline_message_commands_work_as_printed(monkeypatch, tmp_path, openai_clip_model, capsys):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_IQA_NO_PROGRESS", "1")
    image = tmp_path / "photo.png"
    random_image(96, 64).save(image)
    assert cli(["score", "--model", "liqe-mix", str(image)]) == 2
    message = capsys.readouterr().err
    assert "Traceback" not in message and "Retrying" not in message and len(message.splitlines()) <= 5
    commands = [shlex.split(line) for line in message.splitlines() if line.startswith("  ")]
    assert commands[0] == ["hf", "download", "chaofengc/IQA-PyTorch-Weights", "liqe_mix.pt", "--local-dir", "."]
    assert commands[1][:2] == ["hf-iqa", "convert"] and len(commands) == 2

    work = tmp_path / "work"
    monkeypatch.chdir(save_original(openai_clip_model, work / "liqe_mix.pt").parent)  # stands in for `hf download`
    assert cli(commands[1][1:]) == 0  # exactly as printed
    assert "--model ./liqe-mix" in message
    assert cli(["score", "--model", "./liqe-mix", str(image), "-o", str(tmp_path / "s.csv"), "--no-progress"]) == 0
    assert "liqe_mix.pt" in (work / "liqe-mix" / "README.md").read_text()


def test_unreachable_hub_fails_without_retries(monkeypatch, tmp_path, caplog):
    """A Hub that refuses connections (a closed local port): one probe, then the local caches only."""
    import huggingface_hub.constants as constants
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(zoo, "_PROBES", {})

    def no_sleep(seconds):
        raise AssertionError(f"a retry would wait {seconds}s")

    monkeypatch.setattr(hf_http.time, "sleep", no_sleep)
    with pytest.raises(zoo.ModelNotAvailableError, match="not reachable") as info:
        zoo.resolve("liqe-mix")
    assert "hf-iqa convert liqe --checkpoint liqe_mix.pt --variant mix" in str(info.value)
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


def test_dog_iqa_without_its_checkpoints_is_one_line(monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_IQA_CACHE", str(tmp_path / "cache"))
    image = tmp_path / "photo.png"
    random_image(64, 48).save(image)
    assert cli(["score", "--model", "dog-iqa", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "hf download facebook/sam2-hiera-large" in err and "hf download mPLUG/mPLUG-Owl3-7B-240728" in err


# ----------------------------------------------------------------------------------------------------------------
# Converters replace only their own files
# ----------------------------------------------------------------------------------------------------------------
def test_overwrite_keeps_files_the_converter_did_not_write(openai_clip_model, tmp_path, capsys):
    checkpoint = save_original(openai_clip_model, tmp_path / "liqe_koniq.pt")
    out = tmp_path / "out"
    args = ["convert", "liqe", "--checkpoint", str(checkpoint), "--variant", "koniq", "--output-dir", str(out),
            "--no-progress"]  # fmt: skip
    assert cli(args) == 0
    assert capsys.readouterr().err == ""  # --no-progress: no stage bar, no transformers bars
    manifest = json.loads((out / ".hf_iqa_manifest.json").read_text())["files"]
    assert "model.safetensors" in manifest and "config.json" in manifest
    (out / "precious.txt").write_text("mine")
    (out / "src").mkdir()
    (out / "src" / "train.py").write_text("print('mine')")

    assert cli(args) == 2  # an earlier conversion: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    (out / "model.safetensors").write_bytes(b"stale")
    assert cli([*args, "--overwrite"]) == 0
    assert (out / "precious.txt").read_text() == "mine" and (out / "src" / "train.py").read_text() == "print('mine')"
    assert (out / "model.safetensors").stat().st_size > 1000  # the converter's own file was replaced
    assert not [p for p in out.iterdir() if p.name.startswith(".hf_iqa_staging")]


def test_foreign_folder_is_refused_even_with_overwrite(openai_clip_model, tmp_path, capsys):
    checkpoint = save_original(openai_clip_model, tmp_path / "liqe_koniq.pt")
    out = tmp_path / "project"
    (out / "src").mkdir(parents=True)
    (out / "precious.txt").write_text("mine")
    args = ["convert", "liqe", "--checkpoint", str(checkpoint), "--variant", "koniq", "--output-dir", str(out),
            "--overwrite", "--no-progress"]  # fmt: skip
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert "not written by an hf_iqa converter" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt", "src"]


def test_publish_never_touches_foreign_files(tmp_path):
    from hf_iqa.converters._support import MANIFEST, OutputFolderError, staged_output_dir

    out = tmp_path / "out"
    with staged_output_dir(out, overwrite=False) as staging:
        (staging / "config.json").write_text("{}")
        (staging / "README.md").write_text("card")
    assert json.loads((out / MANIFEST).read_text())["files"] == ["README.md", "config.json"]

    (tmp_path / "outside.txt").write_text("keep")  # a crafted manifest must not reach outside the folder
    (out / MANIFEST).write_text(json.dumps({"files": ["../outside.txt", "/etc/hostname", "config.json"]}))
    (out / "notes.md").write_text("mine")
    with staged_output_dir(out, overwrite=True) as staging:
        (staging / "config.json").write_text('{"new": 1}')
    assert (tmp_path / "outside.txt").read_text() == "keep" and (out / "notes.md").read_text() == "mine"
    assert (out / "config.json").read_text() == '{"new": 1}'
    assert (out / "README.md").exists()  # not in the crafted manifest: not ours to delete

    with pytest.raises(OutputFolderError, match="notes.md"):  # the new conversion would overwrite a foreign file
        with staged_output_dir(out, overwrite=True) as staging:
            (staging / "notes.md").write_text("generated")
    assert (out / "notes.md").read_text() == "mine"
