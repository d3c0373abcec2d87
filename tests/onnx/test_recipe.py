"""The torch-free install recipe is one list: README's command, the export card's and CI's are the same, name no
torch, and carry the bounds pyproject.toml declares (core dependencies and the `onnx` extra)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

from hf_iqa.onnx.card import RUNTIME_REQUIREMENTS

ROOT = Path(__file__).resolve().parents[2]


def quoted_requirements(text: str) -> set[str]:
    return set(
        re.findall(
            r'"((?:onnxruntime|transformers|huggingface_hub|numpy|pillow|tqdm|filelock|safetensors)[^"]*)"', text
        )
    )


def test_readme_card_and_ci_install_the_same_requirements():
    card = {item.strip('"') for item in RUNTIME_REQUIREMENTS}
    readme = ROOT.joinpath("README.md").read_text()
    recipe = readme[readme.index("pip install --no-deps -e .") :].split("```")[0]
    ci = ROOT.joinpath(".ci/run").read_text()
    ci_recipe = ci[ci.index('source "$tmp/notorch/bin/activate"') :].split("du -sh")[0]
    assert quoted_requirements(recipe) == card == quoted_requirements(ci_recipe)
    assert not any(item.startswith("torch") for item in card)


def test_recipe_bounds_are_the_declared_ones():
    project = tomllib.loads(ROOT.joinpath("pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"\s*#", item)[0].strip()
        for item in project["dependencies"] + project["optional-dependencies"]["onnx"]
    }
    assert {item.strip('"') for item in RUNTIME_REQUIREMENTS} <= declared
