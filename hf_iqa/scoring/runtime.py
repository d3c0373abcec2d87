"""What every run shares whatever it scores: the usage error, the dtype table, device resolution, the process
group of torchrun/accelerate, and Ctrl-C/SIGTERM. No torch at module level (help and `hf-iqa list` stay fast)."""

from __future__ import annotations

import os
import signal
from typing import Any

DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}  # fmt: skip
DEFAULT_DTYPE = "auto"
"""The one default precision of every loader and command: the model's own, i.e. its released protocol (transformers'
`dtype="auto"`): the CLIP models as saved, float32; Dog-IQA's MLLM as the released code ran it (float16 on GPU,
float32 on CPU)."""
DEVICE_HELP = "auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N, mps"


class UsageError(ValueError):
    """A problem the user caused and can fix (bad option, unavailable device, existing output): one line, exit 2."""


def silence_bomb_warning() -> None:
    """hf_iqa's own size check (`hf_iqa.io`, `max_pixels` passed to the reader) decides and reports each file, so
    Pillow's process-wide decompression-bomb warning is silenced for a command."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def torch_dtype(word: str) -> Any:
    """`auto` or a torch dtype for a `--dtype` word."""
    if word not in DTYPES:
        raise UsageError(f"--dtype must be one of {sorted(DTYPES)}, got {word!r}")
    if DTYPES[word] == "auto":
        return "auto"
    import torch

    return getattr(torch, DTYPES[word])


def resolve_device(word: str | None, local_rank: int | None = None) -> str:
    """The torch device for a `--device` word; an unavailable device is a `UsageError`. Under torchrun/accelerate
    `auto` and a bare `cuda` mean this process's GPU (LOCAL_RANK)."""
    import torch

    word = (word or "auto").strip().lower()
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world_size() > 1 else 0
    if word == "auto":
        if torch.cuda.is_available():
            return f"cuda:{local_rank % torch.cuda.device_count()}"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind, _, number = word.partition(":")
    if kind == "cpu" and not number:
        return "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {word}: CUDA is not available on this machine (torch {torch.__version__})")
        index = int(number) if number.isdigit() else local_rank
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {word}: only {torch.cuda.device_count()} CUDA device(s) here")
        return f"cuda:{index}"
    if kind == "mps" and not number:
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise UsageError("--device mps: MPS is not available on this machine")
        return "mps"
    raise UsageError(f"--device must be one of: {DEVICE_HELP}; got {word!r}")


def disable_progress_bars() -> None:
    """`--no-progress`: also transformers' "Loading weights" and huggingface_hub's download bars."""
    from huggingface_hub.utils import disable_progress_bars as hub_disable
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    hub_disable()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def barrier() -> None:
    """Wait for every process (a gloo group, joined on first use); a no-op for a single process."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    dist.barrier()


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a run, with how far it got."""

    def __init__(self, scored: int, total: int | None):
        self.scored, self.total = scored, total
        of = f" of {total}" if total is not None else ""
        super().__init__(f"interrupted after {scored}{of} images; rerun with --resume")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def handle_sigterm() -> None:
    """SIGTERM (a scheduler's stop, `kill`) stops a run the same way as Ctrl-C."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
