"""README.md is true: every file, folder, script, `hf-iqa` subcommand and option, extra, `hf_iqa.` name and model
reference it shows exists or works here, and no Hub repo appears unless hf_iqa's zoo says it is published."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import shlex
from pathlib import Path

import pytest

from hf_iqa import zoo
from hf_iqa.cli import SUBCOMMANDS, main
from tests.testing_utils import REPO_ROOT

ROOT = REPO_ROOT
README = (ROOT / "README.md").read_text(encoding="utf-8")
CODE_BLOCKS = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
INLINE_CODE = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", README, flags=re.S))
# repository paths: start with a top-level folder or file of this repository
TOP_LEVEL = sorted(p.name for p in ROOT.iterdir() if not p.name.startswith(".git"))
TOP_LEVEL_ALTERNATIVES = "|".join(re.escape(name) for name in TOP_LEVEL)
PATH = re.compile(rf"(?<![\w/.-])((?:{TOP_LEVEL_ALTERNATIVES})(?:/[\w.<>*-]+)*/?)")


def readme_paths() -> list[str]:
    found = set()
    for text in CODE_BLOCKS + INLINE_CODE:
        for match in PATH.finditer(text):
            path = match.group(1)
            if path.rstrip("/") in ("hf_iqa", "tests", "bench") and "/" not in path.rstrip("/"):
                found.add(path)
            elif "/" in path or "." in Path(path).name:
                found.add(path)
    return sorted(found)


def test_readme_names_paths():
    """The path extraction finds what the README is known to show (so the existence test below cannot pass
    vacuously)."""
    paths = readme_paths()
    assert {"hf_iqa/zoo.py", "examples/training/liqe_koniq.yaml", "conversion/convert_liqe.py", ".ci/run"} <= set(
        paths
    )


@pytest.mark.parametrize("path", readme_paths())
def test_every_path_in_readme_exists(path):
    parts = path.rstrip("/").split("/")
    if any("<" in part or "*" in part for part in parts):  # a pattern such as hf_iqa/models/<model>/
        prefix = ROOT.joinpath(*[p for p in parts if "<" not in p and "*" not in p][:1])
        assert prefix.exists(), path
        return
    assert (ROOT / path).exists(), f"README.md names {path}, which does not exist"


def commands(program: str) -> list[list[str]]:
    """Each line of a README code block that runs `program`, split like a shell would (comments dropped)."""
    found = []
    for block in CODE_BLOCKS:
        for line in block.replace("\\\n", " ").splitlines():  # continued lines joined, as a shell does
            for command in re.split(r"&&|\|", line.split("  #")[0]):
                words = shlex.split(command, comments=True)
                if words and words[0] == program:
                    found.append(words[1:])
    return found


HF_IQA_COMMANDS = commands("hf-iqa")


def test_readme_shows_hf_iqa_commands():
    assert {argv[0] for argv in HF_IQA_COMMANDS} >= {"score", "convert", "list"}


@pytest.mark.parametrize("argv", HF_IQA_COMMANDS, ids=lambda argv: " ".join(argv)[:60])
def test_every_hf_iqa_command_in_readme_parses(argv, capsys):
    """The subcommand exists and its `--help` lists every option the README gives it (bracketed parts included);
    `convert` and `train` take the model or recipe first and are asked `hf-iqa convert <model> --help`."""
    argv = [word.strip("[]") for word in argv]
    assert argv[0] in SUBCOMMANDS, f"README shows `hf-iqa {argv[0]}`, which is not a subcommand"
    prefix = argv[:2] if argv[0] in ("convert", "train") else argv[:1]
    with pytest.raises(SystemExit) as exit:
        main([*prefix, "--help"])
    assert exit.value.code in (0, None)
    help_text = capsys.readouterr().out
    for word in argv[len(prefix) :]:
        if word.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(word.split('=')[0])}(?![\w-])", help_text), (
                f"`hf-iqa {' '.join(prefix)}` has no option {word}"
            )


def test_scripts_in_readme_exist():
    scripts = [argv[0] for argv in commands("python") if argv and argv[0].endswith(".py")]
    assert scripts, "the README shows no python script (the extraction is broken)"
    for script in scripts:
        assert (ROOT / script).is_file(), script


def test_extras_in_readme_are_declared():
    declared = set(importlib.metadata.metadata("hf-iqa").get_all("Provides-Extra"))
    extras = set(re.findall(r'pip install -e "\.\[(\w+)\]"', README))
    assert extras and extras <= declared, extras - declared


def test_hf_iqa_names_in_readme_exist():
    names = set(re.findall(r"\bhf_iqa(?:\.[A-Za-z_]\w*)+", README))
    assert "hf_iqa.pipeline" in names
    for name in sorted(names):
        parts = name.split(".")
        obj = importlib.import_module("hf_iqa")
        for index, part in enumerate(parts[1:], start=1):
            if not hasattr(obj, part):
                obj = importlib.import_module(".".join(parts[: index + 1]))
            else:
                obj = getattr(obj, part)


# Hub repos that exist. `hf_iqa/zoo.py` names the repos conversions are meant for (tried first, then the
# originals), none of which is published yet: add a repo here once it is on the Hub.
PUBLISHED_REPOS: set[str] = set()


def test_model_references_are_zoo_names_folders_or_published_repos():
    """`model=...`, `from_pretrained(...)`, `load(...)` and `--model` in the README name a zoo model, a local
    folder, or a published Hub repo; an unpublished repo id would give users a 404."""
    names = {entry["name"] for entry in zoo.list_models()}
    references = re.findall(r"""(?:model=|from_pretrained\(|load\()["']([^"']+)["']""", README)
    references += [argv[argv.index("--model") + 1] for argv in HF_IQA_COMMANDS if "--model" in argv]
    assert len(references) >= 5, references
    for reference in references:
        local = reference.endswith("/") or reference.startswith(("out/", "./", "/"))
        assert reference in names or local or reference in PUBLISHED_REPOS, f"README uses unpublished {reference!r}"
    zoo_repos = {entry["hub_repo"] for entry in zoo.list_models() if entry["hub_repo"]}
    for repo in sorted(zoo_repos - PUBLISHED_REPOS):
        assert repo not in README, f"README names the unpublished Hub repo {repo}"
