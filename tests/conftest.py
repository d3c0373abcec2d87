"""Shared test fixtures. Nothing here touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
