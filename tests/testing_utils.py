"""Helpers shared by test modules (import them from here; `conftest.py` holds only fixtures and hooks)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
FIXTURES_DIR = TESTS_DIR / "fixtures"


def load_openai_clip_module(name: str):
    """Load a file of the `openai-clip` PyPI package (e.g. "model") without importing `clip/__init__.py`,
    which needs torchvision and pkg_resources. This is the parity oracle: code this project did not write."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the parity oracle `openai-clip` is not installed (pip install -e '.[test]')")
    path = os.path.join(spec.submodule_search_locations[0], f"{name}.py")
    module_name = f"_openai_clip_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    file_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[module_name] = module
    file_spec.loader.exec_module(module)
    return module


def random_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic, textured synthetic picture (smooth gradients + noise), so features are not degenerate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            127 + 100 * np.sin(xx / (7 + seed % 5)) * np.cos(yy / 11),
            127 + 100 * np.cos((xx + yy) / 13),
            127 + 60 * np.sin(yy / 5),
        ],
        axis=-1,
    )
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB").convert(mode)


def run_without_hf_iqa(code: str, timeout: float = 600) -> str:
    """Run `code` in a fresh Python where `import hf_iqa` fails (as for a user with only transformers installed)
    and return its stdout. Used to prove that Hub folders load with `trust_remote_code=True`."""
    import subprocess
    import textwrap

    prelude = "import sys\nsys.modules['hf_iqa'] = None  # import hf_iqa -> ImportError\n"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def run_command(args: list[str], *, timeout: float, env: dict | None = None, cwd: str | None = None, input=None):
    """`subprocess.run(args, capture_output=True, text=True)` in a process group of its own: on a timeout (or any
    failure while waiting) the whole group is killed, so that nothing a test started outlives it."""
    import signal
    import subprocess

    process = subprocess.Popen(
        args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(input, timeout=timeout)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
