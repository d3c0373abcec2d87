"""Code shared between model folders is copied (model folders are flat Hub units): the CLIP ResNet tower from
QualiCLIP into UniQA, the fast CLIP vision inference loop from LIQE into UniQA, and the checkpoint memory-map fix
from LIQE into QualiCLIP and UniQA. These tests fail when a copy drifts from its original."""

from __future__ import annotations

import ast
import inspect

import pytest

from hf_iqa.models.liqe import modeling_liqe
from hf_iqa.models.qualiclip import configuration_qualiclip, modeling_qualiclip
from hf_iqa.models.uniqa import configuration_uniqa, modeling_uniqa

RESNET = "# --- ClipResNet tower"
FAST_VISION = "# --- fast CLIP vision inference"
MEMORY_MAP = "# --- checkpoint memory map"
PAIRS = [
    (configuration_qualiclip, configuration_uniqa, RESNET),
    (modeling_qualiclip, modeling_uniqa, RESNET),
    (modeling_liqe, modeling_uniqa, FAST_VISION),
    (modeling_liqe, modeling_qualiclip, MEMORY_MAP),
    (modeling_liqe, modeling_uniqa, MEMORY_MAP),
]
IDS = ["resnet-configuration", "resnet-modeling", "fast-clip-vision", "memory-map-qualiclip", "memory-map-uniqa"]
END_MARKER = "# --- end of the copied block"


def copied_block(module, marker: str) -> str:
    """The text from the block's marker line ('... copied verbatim into models/...') to the end marker."""
    source = inspect.getsource(module)
    start = source.index(marker)
    assert "copied verbatim into models/" in source[start : source.index("\n", start)]
    return source[start : source.index(END_MARKER, start)]


def top_level_names(block: str) -> list[str]:
    """Classes, functions and constants defined in a block."""
    names = []
    for node in ast.parse(block).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names.extend(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


@pytest.mark.parametrize("original, copy, marker", PAIRS, ids=IDS)
def test_copied_block_is_identical(original, copy, marker):
    assert copied_block(copy, marker) == copied_block(original, marker)


@pytest.mark.parametrize("original, copy, marker", PAIRS, ids=IDS)
def test_every_shared_definition_is_identical(original, copy, marker):
    names = top_level_names(copied_block(original, marker))
    assert names, "the copied block defines nothing"
    for name in names:
        ours, theirs = getattr(copy, name), getattr(original, name)
        if inspect.isclass(theirs) or inspect.isfunction(theirs):
            assert inspect.getsource(ours) == inspect.getsource(theirs), f"{name} drifted from {original.__name__}"
        else:
            assert ours == theirs, f"{name} drifted from {original.__name__}"
