"""Training checkpoints are data from outside: every file a resume reads is checked before it is used, and a
problem is one `CheckpointError` line naming the file and the field (never a traceback, a hang or a run that
"finishes" having done nothing).

Checked: regular files only (a link to a device or a FIFO is refused before it is opened), a size limit on JSON,
JSON nesting depth, the types and ranges of the loop counters (finite, non-negative integers), and the optimizer's
tensors against the shapes of the parameters they belong to.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 64 << 20
MAX_DEPTH = 64
LOOP_COUNTERS = ("global_step", "epoch", "batches_in_epoch")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from; the message names the file (or folder) and why."""


def _error(message: str) -> CheckpointError:
    return CheckpointError(message)


def check_regular(path: Path) -> None:
    """Refuse anything but a regular file (following links): a FIFO would block the run, a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise _error(f"{path.parent}: {path.name} is missing; the checkpoint is incomplete") from None
    except OSError as error:
        raise _error(f"{path}: cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _error(f"{path}: not a regular file (a device, FIFO, socket or folder); refusing to read it")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, iteratively (deep nesting must not exhaust the stack here either)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of a checkpoint file: a regular file of at most `max_bytes`, nested at most `max_depth`."""
    check_regular(path)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _error(f"{path}: larger than {max_bytes >> 20} MiB; not a checkpoint file hf_iqa wrote")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise _error(f"{path}: nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise _error(f"{path}: unreadable, not valid JSON ({error})") from None
    if _depth(value, max_depth) > max_depth:
        raise _error(f"{path}: nested deeper than {max_depth} levels")
    return value


def _count(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 2**53:
        raise _error(f"{where} must be a whole number >= {low}, got {value!r}")
    return value


def check_trainer_meta(meta: Any, path: Path) -> dict[str, Any]:
    """`trainer_state.json`: process count, accelerate's step and the loop position are finite whole numbers, the
    best metric a number (or -inf before any validation), the tracker position absent or a count."""
    if not isinstance(meta, dict):
        raise _error(f"{path}: expected a JSON object, got {type(meta).__name__}")
    _count(meta.get("num_processes"), f"{path}: num_processes", 1)
    _count(meta.get("accelerator_step"), f"{path}: accelerator_step")
    trainer = meta.get("trainer")
    loop = trainer.get("loop") if isinstance(trainer, dict) else None
    if not isinstance(loop, dict):
        raise _error(f"{path}: trainer.loop must be an object with the loop position")
    for key in LOOP_COUNTERS:
        _count(loop.get(key), f"{path}: trainer.loop.{key}")
    _count(loop.get("best_step"), f"{path}: trainer.loop.best_step", -1)
    best = loop.get("best_metric")
    if isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best) or best == math.inf:
        raise _error(f"{path}: trainer.loop.best_metric must be a number, got {best!r}")
    records = trainer.get("tracker_records")
    if records is not None:
        _count(records, f"{path}: trainer.tracker_records")
    return meta


def check_optimizer_state(state: Any, optimizer: Any, path: Path) -> None:
    """The optimizer state belongs to this model: as many parameter groups and parameters, every per-parameter
    tensor (moments) of its parameter's shape, finite step counts."""
    import torch

    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        raise _error(f"{path}: expected an optimizer state with 'state' and 'param_groups'")
    groups = state.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise _error(f"{path}: param_groups do not match this run's optimizer ({len(optimizer.param_groups)} groups)")
    parameters: dict[Any, Any] = {}
    for saved, group in zip(groups, optimizer.param_groups):
        ids = saved.get("params") if isinstance(saved, dict) else None
        if not isinstance(ids, list) or len(ids) != len(group["params"]):
            raise _error(f"{path}: a parameter group does not match this model's parameters")
        parameters.update(zip(ids, group["params"]))
    for key, values in state["state"].items():
        if key not in parameters or not isinstance(values, dict):
            raise _error(f"{path}: state for unknown parameter {key!r}")
        for name, value in values.items():
            if not torch.is_tensor(value):
                continue
            if value.dim() == 0:
                if not torch.isfinite(value).all() or value.item() < 0:
                    raise _error(f"{path}: state[{key!r}].{name} must be a finite count, got {value.item()!r}")
            elif value.shape != parameters[key].shape:
                raise _error(f"{path}: state[{key!r}].{name} has shape {tuple(value.shape)}, its parameter "
                             f"{tuple(parameters[key].shape)}")  # fmt: skip
