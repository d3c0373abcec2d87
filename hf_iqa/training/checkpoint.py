"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

accelerate's `save_state`/`load_state` store registered objects in `custom_checkpoint_<i>.pkl` and unpickle them
with arbitrary code allowed (`weights_only` off): a crafted checkpoint folder runs its payload on resume. hf_iqa
therefore writes and reads its checkpoints itself, and never unpickles anything from a checkpoint folder; a folder
that holds pickle files (e.g. one written by an older hf_iqa through accelerate) is refused with one line.

A folder `checkpoint_<step>/` holds
    trainer_state.json                  format marker, loop position (step, epoch, batch in epoch), best metric,
                                        process count, accelerate's micro-step counter, tracker position
    model.safetensors                   the (unwrapped) model's state dict
    optimizer.json + .safetensors       optimizer state: the structure in JSON, the tensors in safetensors
    scheduler.json (+ .safetensors)     learning-rate scheduler state
    scaler.json                         fp16 gradient scaler state (fp16 runs only)
    rank_<r>.json + .safetensors        per process: python/numpy/torch(/cuda) RNG states and the recipe's
                                        `TrainingTask.checkpoint_state` objects (e.g. LIQE's DWA loss averages)

The JSON trees keep what JSON alone would lose (tuples, non-string dict keys, tensors, numpy arrays) with small
tagged objects, so a state dict comes back exactly as it was saved (bit-identical resume).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_iqa.training.checkpoint_schema import (  # noqa: F401 (CheckpointError: raised and imported from here)
    CheckpointError,
    check_optimizer_state,
    check_regular,
    check_trainer_meta,
    read_json,
)

FORMAT = "hf_iqa-training-checkpoint"
VERSION = 1
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
# what torch.save / pickle / joblib write; hf_iqa never loads them from a checkpoint folder
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib")
CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")


# ----------------------------------------------------------------------------------------------------------------
# JSON + safetensors trees
# ----------------------------------------------------------------------------------------------------------------


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if torch.is_tensor(value):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):  # stored as raw bytes: exact for every dtype
        name = str(len(tensors))
        array = np.ascontiguousarray(value)
        tensors[name] = torch.from_numpy(array.view(np.uint8).reshape(-1).copy())
        return {"__ndarray__": name, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    raise TypeError(f"cannot store a {type(value).__name__} in a training checkpoint (JSON and tensors only)")


def _decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        raw = tensors[value["__ndarray__"]].numpy()
        return raw.view(np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_tree(stem: Path, tree: Any) -> None:
    """Write `tree` as `<stem>.json`, its tensors (if any) as `<stem>.safetensors`."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(tree, tensors)
    if tensors:
        save_file(tensors, str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps(encoded), encoding="utf-8")


def load_tree(stem: Path) -> Any:
    """Read what `save_tree` wrote (JSON and safetensors only: nothing in it can run code)."""
    from safetensors.torch import load_file

    json_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    encoded = read_json(json_path)  # a regular file, size and depth bounded
    if os.path.lexists(tensor_path):
        check_regular(tensor_path)
    try:
        tensors = load_file(str(tensor_path)) if tensor_path.is_file() else {}
        return _decode(encoded, tensors)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, AttributeError, IndexError) as error:
        raise CheckpointError(f"{json_path}: unreadable checkpoint state ({error})".splitlines()[0]) from None


# ----------------------------------------------------------------------------------------------------------------
# RNG states of this process
# ----------------------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# folders
# ----------------------------------------------------------------------------------------------------------------


def checkpoint_step(path: Path) -> int | None:
    match = CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(folder: Path) -> list[Path]:
    """`checkpoint_<step>` folders under `folder`, oldest first (staging folders are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def refuse_pickles(folder: Path) -> None:
    """One-line CheckpointError if `folder` holds files a pickle loader would read."""
    pickles = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        shown = ", ".join(pickles[:4]) + (f" and {len(pickles) - 4} more" if len(pickles) > 4 else "")
        raise CheckpointError(
            f"{folder}: refusing to resume from a checkpoint that holds pickle files ({shown}): loading them could "
            "run code. hf_iqa checkpoints are safetensors + JSON only; resume from one written by this version"
        )


def _rank_objects(objects: Mapping[str, Any]) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in objects.items()}


def save_checkpoint(
    accelerator,
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    trainer_state: dict[str, Any],
    objects: Mapping[str, Any],
    total_limit: int | None,
) -> None:
    """Write `folder` (collective: every process calls it). The files go to a hidden staging folder that is renamed
    when complete, so an interrupted save never leaves a `checkpoint_<step>` that `latest` would pick."""
    from safetensors.torch import save_model

    staging = folder.parent / f".{folder.name}.partial"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if main:
        save_model(accelerator.unwrap_model(model), str(staging / MODEL_FILE), metadata={"format": "pt"})
        save_tree(staging / "optimizer", optimizer.state_dict())
        save_tree(staging / "scheduler", scheduler.state_dict())
        if accelerator.scaler is not None:
            save_tree(staging / "scaler", accelerator.scaler.state_dict())
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "num_processes": accelerator.num_processes,
            "accelerator_step": accelerator.step,
            "trainer": trainer_state,
        }
        (staging / STATE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    save_tree(staging / f"rank_{accelerator.process_index}", {"rng": rng_state(), "objects": _rank_objects(objects)})
    accelerator.wait_for_everyone()
    if main:
        if folder.exists():  # a later checkpoint of a run resumed from an earlier one: ours, replaced
            if not (folder / STATE_FILE).is_file():
                raise CheckpointError(f"{folder}: exists and is not an hf_iqa checkpoint; move it away")
            shutil.rmtree(folder)
        os.replace(staging, folder)
        if total_limit:
            for old in list_checkpoints(folder.parent)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(
    accelerator, folder: Path, *, model: torch.nn.Module, optimizer, scheduler, objects: Mapping[str, Any]
) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote and return the trainer state; reads only JSON and safetensors."""
    from safetensors.torch import load_model

    refuse_pickles(folder)
    state_path = folder / STATE_FILE
    if not os.path.lexists(state_path):
        raise CheckpointError(f"{folder}: not an hf_iqa training checkpoint ({STATE_FILE} is missing)")
    meta = read_json(state_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{state_path}: not a version-{VERSION} hf_iqa training checkpoint")
    check_trainer_meta(meta, state_path)
    check_regular(folder / MODEL_FILE)
    try:
        load_model(accelerator.unwrap_model(model), str(folder / MODEL_FILE))  # copied onto the model's device
    except (OSError, RuntimeError, ValueError) as error:  # missing file, other architecture, truncated
        raise CheckpointError(f"{folder / MODEL_FILE}: cannot restore the model ({error})".splitlines()[0]) from None
    optimizer_state = load_tree(folder / "optimizer")
    check_optimizer_state(optimizer_state, optimizer, folder / "optimizer.json")
    _restore(optimizer, optimizer_state, folder / "optimizer.json")
    _restore(scheduler, load_tree(folder / "scheduler"), folder / "scheduler.json")
    if accelerator.scaler is not None and (folder / "scaler.json").is_file():
        _restore(accelerator.scaler, load_tree(folder / "scaler"), folder / "scaler.json")
    rank = accelerator.process_index
    if meta["num_processes"] != accelerator.num_processes:
        accelerator.print(
            f"warning: {folder} was written by {meta['num_processes']} process(es), this run has "
            f"{accelerator.num_processes}: training continues, but not bit-identically"
        )
        rank = min(rank, meta["num_processes"] - 1)
    local_path = folder / f"rank_{rank}.json"
    local = load_tree(folder / f"rank_{rank}")
    if (
        not isinstance(local, dict)
        or not isinstance(local.get("rng"), dict)
        or not isinstance(local.get("objects"), dict)
    ):
        raise CheckpointError(f"{local_path}: expected an object with 'rng' and 'objects'")
    try:
        set_rng_state(local["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{local_path}: rng is not a random-generator state ({error})".splitlines()[0]) from None
    for name, obj in objects.items():
        if name in local["objects"]:
            _restore(obj, local["objects"][name], local_path)
    accelerator.step = meta["accelerator_step"]
    return meta["trainer"]


def _restore(obj: Any, state: Any, path: Path) -> None:
    """`obj.load_state_dict(state)`, a state that does not fit being one line naming its file."""
    try:
        obj.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:
        message = f"{path}: does not fit this run's {type(obj).__name__} ({type(error).__name__}: {error})"
        raise CheckpointError(message.splitlines()[0]) from None
