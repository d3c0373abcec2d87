"""Code shared between model folders is copied (model folders are flat Hub units), each copy marked
`# Copied from <source>` and kept equal to its source by `utils/check_copies.py`: the CLIP ResNet tower and its
config from QualiCLIP into UniQA, the fast CLIP vision loop from LIQE into UniQA, BatchNorm folding from QualiCLIP
into UniQA, the memory-map release from LIQE into QualiCLIP and UniQA. CI runs the check through this file."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.testing_utils import REPO_ROOT

REPO = REPO_ROOT
SCRIPT = REPO / "utils" / "check_copies.py"

# Every block known to be shared, by the file holding the copy: the definitions that must carry a marker.
FAST_CLIP = ["ONEDNN_LINEAR", "QUICK_GELU_ALPHA", "linear", "clip_mlp_residual", "split_heads"]
FAST_CLIP += ["clip_vision_embeddings", "clip_vision_features"]
RESNET = ["ClipResNetDownsample", "ClipResNetBottleneck", "ClipResNetAttentionPool", "ClipResNetPreTrainedModel"]
RESNET += ["ClipResNetVisionModel"]
EXPECTED_COPIES = {
    "hf_iqa/models/uniqa/fast_uniqa.py": {f"hf_iqa.models.liqe.fast_liqe.{name}" for name in FAST_CLIP}
    | {f"hf_iqa.models.qualiclip.fast_qualiclip.{n}" for n in ("fold_batch_norm", "conv_batch_norm")}
    | {"hf_iqa.models.qualiclip.fast_qualiclip.forget_folded_weights"}
    | {"hf_iqa.models.liqe.fast_liqe.own_unconverted_tensors"},
    "hf_iqa/models/qualiclip/fast_qualiclip.py": {"hf_iqa.models.liqe.fast_liqe.own_unconverted_tensors"},
    "hf_iqa/models/uniqa/modeling_uniqa.py": {f"hf_iqa.models.qualiclip.modeling_qualiclip.{n}" for n in RESNET}
    | {"hf_iqa.models.liqe.modeling_liqe.LiqePreTrainedModel.dtype"},
    "hf_iqa/models/qualiclip/modeling_qualiclip.py": {
        "hf_iqa.models.liqe.modeling_liqe.LiqePreTrainedModel.from_pretrained",
        "hf_iqa.models.liqe.modeling_liqe.LiqePreTrainedModel.dtype",
    },
    "hf_iqa/models/uniqa/configuration_uniqa.py": {
        "hf_iqa.models.qualiclip.configuration_qualiclip.POSITION_EMBEDDING_MODES",
        "hf_iqa.models.qualiclip.configuration_qualiclip.ClipResNetConfig",
    },
}


@pytest.fixture(scope="module")
def check_copies():
    spec = importlib.util.spec_from_file_location("check_copies", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_copies"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_every_copy_in_the_repository_equals_its_source():
    """What CI checks: `python utils/check_copies.py` exits 0."""
    result = run_script()
    assert result.returncode == 0, result.stdout + result.stderr


def test_known_shared_blocks_are_marked_and_sources_are_not(check_copies):
    """A copy that loses its marker would drift unnoticed; a source with a marker would make it unclear which side
    to edit."""
    for relative, expected in EXPECTED_COPIES.items():
        path = REPO / relative
        copies, problems = check_copies.find_copies(path, path.read_text())
        assert not problems
        assert expected <= {copy.target for copy in copies}, f"{relative}: unmarked copies"
    for target in {target for targets in EXPECTED_COPIES.values() for target in targets}:
        path, name = check_copies.resolve(target, REPO)
        text = path.read_text()
        start, _ = check_copies.definitions(ast.parse(text))[name]
        above = text.splitlines()[start - 1].strip()
        assert not above.startswith("# Copied from"), f"the source {target} carries a marker: {above}"


def copy_model_folders(tmp_path: Path) -> Path:
    for folder in ("liqe", "qualiclip", "uniqa"):
        shutil.copytree(REPO / "hf_iqa" / "models" / folder, tmp_path / "hf_iqa" / "models" / folder)
    return tmp_path


def test_fix_restores_a_corrupted_copy(tmp_path):
    root = copy_model_folders(tmp_path)
    copy = root / "hf_iqa/models/uniqa/fast_uniqa.py"
    pristine = copy.read_text()
    corrupted = pristine.replace("hidden = hidden + linear(attended,", "hidden = hidden - linear(attended,", 1)
    corrupted = corrupted.replace(
        "    return x.view(batch, tokens", "    # a local edit\n    return x.view(batch, tokens", 1
    )
    assert corrupted.count("\n") == pristine.count("\n") + 1
    copy.write_text(corrupted)

    result = run_script("--root", str(root))
    assert result.returncode == 1
    assert (
        "fast_uniqa.py" in result.stdout and "differs from hf_iqa.models.liqe.fast_liqe.split_heads" in result.stdout
    )
    assert "differs from hf_iqa.models.liqe.fast_liqe.clip_vision_features" in result.stdout
    assert "+        hidden = hidden - linear(attended," in result.stdout  # the diff shows the drift

    result = run_script("--root", str(root), "--fix")
    assert result.returncode == 0, result.stdout + result.stderr
    assert copy.read_text() == pristine
    assert run_script("--root", str(root)).returncode == 0


def test_fix_propagates_an_edit_of_the_source_to_every_copy(tmp_path):
    root = copy_model_folders(tmp_path)
    source = root / "hf_iqa/models/liqe/fast_liqe.py"
    edited = source.read_text().replace("Give the tensors", "Give the tensors (edited)", 1)
    source.write_text(edited)
    assert run_script("--root", str(root)).returncode == 1
    assert run_script("--root", str(root), "--fix").returncode == 0
    for copy in ("qualiclip/fast_qualiclip.py", "uniqa/fast_uniqa.py"):
        assert "Give the tensors (edited)" in (root / "hf_iqa/models" / copy).read_text()


def write(root: Path, relative: str, code: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


SOURCE = """
    LIMIT = 3


    class Foo:
        def scale(self, x):
            return x * LIMIT

        @property
        def name(self):
            return "Foo"
"""


def test_renames_methods_and_any_file_of_the_repository(tmp_path, check_copies):
    """`with A->B` renames; methods, constants and files outside hf_iqa (e.g. a flat pipeline file) work."""
    write(tmp_path, "pkg/base.py", SOURCE)
    write(tmp_path, "flat_pipeline.py", """
        # Copied from pkg.base.LIMIT
        LIMIT = 3


        # Copied from pkg.base.Foo with Foo->Bar
        class Bar:
            def scale(self, x):
                return x * LIMIT

            @property
            def name(self):
                return "Bar"


        class Baz:
            # Copied from pkg.base.Foo.scale
            def scale(self, x):
                return x * LIMIT

            # Copied from pkg.base.Foo.name with Foo->Baz
            @property
            def name(self):
                return "Baz"
    """)  # fmt: skip
    assert check_copies.check_copies(tmp_path) == []
    flat = tmp_path / "flat_pipeline.py"
    flat.write_text(flat.read_text().replace('return "Bar"', 'return "Foo"').replace('return "Baz"', 'return "Foo"'))
    problems = check_copies.check_copies(tmp_path)
    assert {p.line for p in problems} == {6, 21}  # the class and the method (decorated)


def test_false_markers_are_reported(tmp_path):
    write(tmp_path, "pkg/base.py", SOURCE)
    write(tmp_path, "pkg/copy.py", """
        # Copied from pkg.base.Missing
        def missing():
            pass


        # Copied from pkg.nowhere.Foo
        class Foo:
            pass


        # Copied from pkg.base.Foo
        class Foo:
            def scale(self, x):
                return x * 2  # not what the source says


        # Copied from pkg.base.LIMIT

        x = 1
    """)  # fmt: skip
    result = run_script("--root", str(tmp_path))
    assert result.returncode == 1
    out = result.stdout
    assert "pkg/copy.py:2: false marker: pkg.base.Missing: pkg/base.py defines no 'Missing'" in out
    assert "pkg/copy.py:7: false marker: pkg.nowhere.Foo: no file of the repository matches" in out
    assert "pkg/copy.py:12: differs from pkg.base.Foo" in out
    assert "pkg/copy.py:18: '# Copied from' must stand directly above a class, function or assignment" in out
    assert "4 copy problem(s)" in result.stderr

    result = run_script("--root", str(tmp_path), "--fix")  # only the copy that has a source can be fixed
    assert result.returncode == 1
    assert "fixed pkg/copy.py:12 from pkg.base.Foo" in result.stdout
    assert "differs" not in result.stdout and "3 copy problem(s)" in result.stderr
    assert "return x * LIMIT" in (tmp_path / "pkg/copy.py").read_text()
