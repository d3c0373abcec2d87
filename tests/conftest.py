"""Shared test fixtures. Nothing here touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import signal  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.testing_utils import load_openai_clip_module, random_image, run_without_hf_iqa  # noqa: E402


@pytest.fixture(scope="session")
def openai_clip_model():
    """The `clip.model` module of the openai-clip package (CLIP, ModifiedResNet, VisionTransformer, build_model)."""
    return load_openai_clip_module("model")


@pytest.fixture(scope="session")
def openai_simple_tokenizer():
    return load_openai_clip_module("simple_tokenizer").SimpleTokenizer()


@pytest.fixture
def make_image():
    return random_image


@pytest.fixture
def fresh_accelerate_state():
    """For tests that build `Accelerator`s (the training loop): accelerate's process-wide singletons reset before and
    after, and one torch thread, because on a loaded shared CPU two spinning OpenMP threads made tiny trainings
    10-20x slower. Use with `pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")`."""
    from accelerate.state import AcceleratorState, GradientState

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def without_hf_iqa():
    return run_without_hf_iqa


# ---------------------------------------------------------------------------------------------------------------
# Processes: every process a test starts runs in a process group of its own, and whatever is still running in that
# group when the test ends (a torchrun worker after a timeout, a server after a failure) is killed with it; at the
# end of the session, any child process still alive fails the run, naming it.
# ---------------------------------------------------------------------------------------------------------------

_STARTED: list[int] = []
_popen_init = subprocess.Popen.__init__


def _popen_in_own_group(self, *args, **kwargs):
    kwargs.setdefault("start_new_session", True)
    _popen_init(self, *args, **kwargs)
    _STARTED.append(self.pid)


subprocess.Popen.__init__ = _popen_in_own_group


@pytest.fixture(autouse=True)
def _kill_process_groups_of_the_test():
    first = len(_STARTED)
    yield
    for pid in _STARTED[first:]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _living_children(parent: int) -> list[str]:
    """Descendants of `parent` that are still running (zombies waiting to be reaped do not count), from /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append((int(entry), name))
    found, stack = [], [parent]
    while stack:
        for pid, name in children.get(stack.pop(), []):
            found.append(f"{pid} ({name})")
            stack.append(pid)
    return found


def pytest_sessionfinish(session, exitstatus):
    if not os.path.isdir("/proc"):
        return
    left = _living_children(os.getpid())
    if left:
        print(f"\ntests left {len(left)} process(es) running: {', '.join(left[:10])}")
        session.exitstatus = 1
