"""The rough edges a new user hits on the command line (issue 25): subcommand usage on a flag typo, a quiet end
on a closed pipe, the full `hf-iqa list`, converters' usage lines, one-line model-name errors without network
retries, the progress switch's words and when the `image-quality` task is registered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_iqa.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_process(args: list[str], cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.Popen:
    """Start `args` in its own process group with this checkout first on the path, offline."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env}
    return subprocess.Popen(
        args,
        cwd=cwd or ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def hf_iqa(*args: str, cwd: Path | None = None, **env: str) -> tuple[int, str, str]:
    process = run_process([sys.executable, "-m", "hf_iqa.cli", *args], cwd=cwd, **env)
    out, err = finish(process)
    return process.returncode, out, err


# ---------------------------------------------------------------------------------------------------------------
# 1. a flag typo after a subcommand
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "usage"),
    [(["list", "--jsn"], "usage: hf-iqa list"), (["score", "-m", "liqe", "--modle", "x"], "usage: hf-iqa score")],
)
def test_flag_typo_prints_the_subcommand_usage(argv, usage, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert "unrecognized arguments: " + argv[-2 if argv[0] == "score" else -1] in err


# ---------------------------------------------------------------------------------------------------------------
# 2. stdout closed early (`hf-iqa list | head -1`)
# ---------------------------------------------------------------------------------------------------------------
def test_closed_stdout_ends_quietly():
    # `hf-iqa list` again and again: the reader is gone long before the output ends
    code = "import sys\nfrom hf_iqa.cli import main\nfor _ in range(2000):\n    status = main(['list'])\n"
    code += "    if status:\n        sys.exit(status)\n"
    process = run_process([sys.executable, "-c", code])
    try:
        first = process.stdout.readline()
        assert first.strip()
        process.stdout.close()
        err = process.stderr.read()
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "Traceback" not in err and "Exception ignored" not in err and "Broken pipe" not in err, err
    assert err == ""
    assert process.returncode == 141  # hf_iqa.cli.BROKEN_PIPE_STATUS


# ---------------------------------------------------------------------------------------------------------------
# 3. `hf-iqa list`: full licences, aliases, at most 119 columns
# ---------------------------------------------------------------------------------------------------------------
def test_list_shows_full_licences_and_aliases_within_119_columns():
    from hf_iqa.zoo import list_models

    status, out, err = hf_iqa("list", COLUMNS="200")
    assert status == 0, err
    assert max(len(line) for line in out.splitlines()) <= 119
    flat = " ".join(out.split())
    for entry in list_models():
        assert " ".join(entry["weights_license"].split()) in flat
        for alias in entry["aliases"]:
            assert alias in flat
    assert "liqe-koniq" in flat


def test_list_json_has_aliases(capsys):
    assert main(["list", "--json"]) == 0
    models = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)["models"]}
    assert "liqe-koniq" in models["liqe"]["aliases"]


# ---------------------------------------------------------------------------------------------------------------
# 4. converters' usage lines
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["liqe", "qualiclip", "uniqa"])
def test_convert_help_names_the_command(method, capsys):
    with pytest.raises(SystemExit):
        main(["convert", method, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: hf-iqa convert {method} ")


def test_conversion_script_help_names_the_script():
    process = run_process([sys.executable, "conversion/convert_liqe.py", "--help"])
    out, err = finish(process)
    assert process.returncode == 0, err
    assert out.startswith("usage: convert_liqe.py "), out


# ---------------------------------------------------------------------------------------------------------------
# 5. model name typos: one line, no network retries
# ---------------------------------------------------------------------------------------------------------------
UNREACHABLE = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "30"}


def test_unknown_zoo_name_suggests_the_closest_names(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    started = time.monotonic()
    status, out, err = hf_iqa("score", "-m", "liqe-tinny", "a.png", cwd=tmp_path, **UNREACHABLE)
    assert status == 2
    assert err.splitlines() == [
        "hf-iqa score: error: unknown model 'liqe-tinny'; did you mean: liqe-mix, liqe-koniq, liqe?"
    ]
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("name", ["out/liqe-tinny", "./x", "../nowhere/x", "~/no-such-hf-iqa-model"])
def test_missing_local_folder_is_one_line(name, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "a.png").write_bytes(b"")
    status, out, err = hf_iqa("score", "-m", name, "a.png", cwd=tmp_path, **UNREACHABLE)
    assert status == 2
    assert err.splitlines() == [f"hf-iqa score: error: {name}: no such model folder"]


def test_offline_hub_id_not_in_cache_is_one_line(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    status, out, err = hf_iqa("score", "-m", "some-org/no-such-model", "a.png", cwd=tmp_path, HF_HOME=str(tmp_path))
    assert status == 2
    assert len(err.splitlines()) == 1 and "not in the local Hugging Face cache" in err, err


def test_resolve_keeps_its_api(tmp_path, monkeypatch):
    from hf_iqa import zoo

    monkeypatch.chdir(tmp_path)
    with pytest.raises(zoo.ModelNotAvailableError, match="did you mean: liqe-mix"):
        zoo.resolve("liqe-mi")
    assert issubclass(zoo.UnknownModelError, zoo.ModelNotAvailableError)
    assert zoo.resolve(str(tmp_path)) == str(tmp_path)
    assert "liqe-koniq" in zoo.known_names()


# ---------------------------------------------------------------------------------------------------------------
# 7. one progress switch
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, True), ("", True), ("0", True), ("false", True), ("No", True), (" off ", True), ("OFF", True)]
    + [("1", False), ("true", False), ("yes", False), ("on", False), ("anything", False)],
)
def test_progress_switch_words(value, shown, monkeypatch):
    from hf_iqa.converters import _support
    from hf_iqa.progress import NO_PROGRESS_ENV, progress_enabled

    if value is None:
        monkeypatch.delenv(NO_PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(NO_PROGRESS_ENV, value)
    assert progress_enabled() is shown
    assert progress_enabled(True) is True and progress_enabled(False) is False
    assert _support.progress_enabled is progress_enabled


def test_zoo_uses_the_one_progress_switch():
    from hf_iqa import progress, zoo

    assert zoo.progress_enabled is progress.progress_enabled


# ---------------------------------------------------------------------------------------------------------------
# 6. when the `image-quality` task is registered
# ---------------------------------------------------------------------------------------------------------------
def test_readme_says_registration_needs_import_hf_iqa():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "With hf_iqa installed, every form" not in readme
    assert "In a process that has run `import hf_iqa` (before or after importing transformers), every form" in readme
    assert "Installing hf_iqa alone registers nothing" in readme


REGISTRATION = """
import sys
{imports}
from transformers import pipeline
try:
    pipe = pipeline("image-quality", model=sys.argv[1])
except Exception as error:
    print("failed:", type(error).__name__)
else:
    print(type(pipe).__module__ + '.')
"""


@pytest.mark.parametrize(
    ("imports", "expected"),
    [
        ("", "failed: ValueError"),
        ("import hf_iqa", "hf_iqa."),
        ("import transformers\nimport hf_iqa", "hf_iqa."),
    ],
)
def test_image_quality_task_exists_only_after_import_hf_iqa(imports, expected, tmp_path):
    from hf_iqa.models.liqe import LiqeConfig, LiqeImageProcessor, LiqeModel
    from tests.models.liqe.test_modeling_liqe import tiny_clip_config

    folder = tmp_path / "tiny"
    LiqeModel(LiqeConfig(clip_config=tiny_clip_config())).save_pretrained(folder)
    LiqeImageProcessor().save_pretrained(folder)
    process = run_process([sys.executable, "-c", REGISTRATION.format(imports=imports), str(folder)])
    out, err = finish(process)
    assert process.returncode == 0, err
    assert expected in out.strip().splitlines()[-1], (out, err)
