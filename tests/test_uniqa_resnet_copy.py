"""The CLIP ResNet tower is shared by QualiCLIP and UniQA by copying (model folders are flat Hub units). These tests
fail when the copy in models/uniqa drifts from the original in models/qualiclip."""

from __future__ import annotations

import ast
import inspect

import pytest

from hf_iqa.models.qualiclip import configuration_qualiclip, modeling_qualiclip
from hf_iqa.models.uniqa import configuration_uniqa, modeling_uniqa

PAIRS = [(configuration_qualiclip, configuration_uniqa), (modeling_qualiclip, modeling_uniqa)]
END_MARKER = "# --- end of the copied block"


def copied_block(module) -> str:
    """The text between the '... copied verbatim into models/uniqa ...' marker line and the end marker."""
    source = inspect.getsource(module)
    start = source.index("copied verbatim into models/uniqa")
    start = source.rindex("\n", 0, start) + 1
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


@pytest.mark.parametrize("original, copy", PAIRS, ids=["configuration", "modeling"])
def test_copied_block_is_identical(original, copy):
    assert copied_block(copy) == copied_block(original)


@pytest.mark.parametrize("original, copy", PAIRS, ids=["configuration", "modeling"])
def test_every_shared_definition_is_identical(original, copy):
    names = top_level_names(copied_block(original))
    assert names, "the QualiCLIP block defines nothing"
    for name in names:
        ours, theirs = getattr(copy, name), getattr(original, name)
        if inspect.isclass(theirs) or inspect.isfunction(theirs):
            assert inspect.getsource(ours) == inspect.getsource(theirs), f"{name} drifted from models/qualiclip"
        else:
            assert ours == theirs, f"{name} drifted from models/qualiclip"
