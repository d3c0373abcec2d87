"""Fast start: `import hf_iqa`, `hf-iqa --help`, `hf-iqa <command> --help` and `hf-iqa list` import neither torch
nor transformers, and a plain `import hf_iqa` still registers the Auto classes and the pipeline task on first use.

Each check runs in a fresh interpreter (this test process has long imported torch). Timing is in
bench/bench_startup.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hf_iqa.cli import SUBCOMMANDS
from tests.testing_utils import REPO_ROOT

ROOT = REPO_ROOT
HEAVY = ("torch", "transformers")


def run_python(code: str, timeout: float = 600) -> str:
    """stdout of `code` in a fresh interpreter that imports this checkout's hf_iqa."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def heavy_modules_after(code: str) -> list[str]:
    """Which of HEAVY are in sys.modules after running `code` (its stdout is discarded)."""
    body = textwrap.indent(textwrap.dedent(code).strip(), "    ")
    out = run_python(
        "import contextlib, io, json, sys\nwith contextlib.redirect_stdout(io.StringIO()):\n"
        + body
        + f"\nprint(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))\n"
    )
    return json.loads(out.strip().splitlines()[-1])


CLI_CALLS = [[], ["--help"], ["list"], ["list", "--json"]] + [[name, "--help"] for name in SUBCOMMANDS]


@pytest.mark.parametrize("argv", CLI_CALLS, ids=lambda argv: " ".join(argv) or "no-args")
def test_cli_help_and_list_import_neither_torch_nor_transformers(argv):
    code = f"""
    from hf_iqa.cli import main
    try:
        main({argv!r})
    except SystemExit as exit:
        assert exit.code in (0, None), exit.code
    """
    assert heavy_modules_after(code) == []


def test_import_hf_iqa_is_light_and_lazy_names_resolve():
    code = """
    import hf_iqa
    assert hf_iqa.list_models() and issubclass(hf_iqa.ModelNotAvailableError, Exception)
    assert callable(hf_iqa.resolve) and callable(hf_iqa.load)
    """
    assert heavy_modules_after(code) == []


def test_every_subcommand_is_checked():
    """A new subcommand is covered by the parametrisation above, not forgotten."""
    assert {argv[0] for argv in CLI_CALLS if argv and argv[0] != "--help"} >= set(SUBCOMMANDS)


@pytest.fixture(scope="module")
def tiny_liqe_dir(tmp_path_factory):
    from hf_iqa.models.liqe import LiqeConfig, LiqeImageProcessor, LiqeModel
    from tests.models.liqe.test_modeling_liqe import tiny_clip_config

    folder = tmp_path_factory.mktemp("tiny_liqe")
    LiqeModel(LiqeConfig(clip_config=tiny_clip_config())).save_pretrained(folder)
    LiqeImageProcessor().save_pretrained(folder)
    return folder


# The ways a user reaches transformers after a plain `import hf_iqa` (or before it).
ORDERS = {
    "hf_iqa first": "import hf_iqa\nfrom transformers import AutoImageProcessor, AutoModel, pipeline",
    "transformers first": "import transformers\nimport hf_iqa\nfrom transformers import AutoImageProcessor, AutoModel, "
    "pipeline",
    "auto classes first": "from transformers import AutoImageProcessor, AutoModel, pipeline\nimport hf_iqa",
}


@pytest.mark.parametrize("order", ORDERS)
def test_plain_import_registers_auto_classes_and_pipeline_task(tiny_liqe_dir, order):
    """`AutoModel`, `AutoImageProcessor` and `pipeline("image-quality")` load a saved folder with this package's
    classes (not remote code) after `import hf_iqa`, in whichever order transformers is imported."""
    code = ORDERS[order] + textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        from PIL import Image

        folder = {str(tiny_liqe_dir)!r}
        model = AutoModel.from_pretrained(folder)
        processor = AutoImageProcessor.from_pretrained(folder)
        pipe = pipeline("image-quality", model=folder)
        score = pipe(Image.fromarray(np.full((64, 80, 3), 128, dtype=np.uint8)))["score"]
        print(json.dumps([type(model).__module__, type(processor).__module__, type(pipe).__module__, score]))
        """
    )
    model_module, processor_module, pipeline_module, score = json.loads(run_python(code).strip().splitlines()[-1])
    assert model_module == "hf_iqa.models.liqe.modeling_liqe"
    assert processor_module == "hf_iqa.models.liqe.image_processing_liqe"
    assert pipeline_module == "hf_iqa.pipeline_image_quality"  # the package registers the flat pipeline file itself
    assert 1.0 <= score <= 5.0


def test_hf_iqa_pipeline_stays_the_function_after_its_module_is_imported():
    code = """
    import hf_iqa
    import hf_iqa.pipelines
    from hf_iqa.pipelines import ImageQualityPipeline
    assert callable(hf_iqa.pipeline) and hf_iqa.pipeline.__name__ == "pipeline", hf_iqa.pipeline
    assert hf_iqa.ImageQualityPipeline is ImageQualityPipeline
    """
    run_python(code)


@pytest.mark.parametrize("transformers_first", [False, True], ids=["transformers-later", "transformers-imported"])
@pytest.mark.parametrize("flag", [[], ["--no-progress"]], ids=["bars", "no-progress"])
def test_no_progress_hides_transformers_and_hub_bars(transformers_first, flag):
    """`--no-progress` on any subcommand also hides transformers' "Loading weights" and huggingface_hub's bars,
    and only while the command runs."""
    code = f"""
    import sys, types
    if {transformers_first!r}:
        import transformers.utils.logging
    from hf_iqa import cli

    def shown():
        from huggingface_hub.utils import are_progress_bars_disabled
        from transformers.utils import logging
        print(logging.is_progress_bar_enabled(), not are_progress_bars_disabled())

    def run(args):
        shown()
        return 0

    command = types.ModuleType("fake_command")
    command.add_arguments = lambda parser: parser.add_argument("--no-progress", action="store_true")
    command.run = run
    sys.modules["fake_command"] = command
    cli.SUBCOMMANDS["fake"] = ("fake_command", "a command with --no-progress")
    assert cli.main(["fake", *{flag!r}]) == 0
    shown()
    """
    during = str(not flag)
    assert run_python(code).split() == [during, during, "True", "True"]
