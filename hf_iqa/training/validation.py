"""Validation of a training run (SRCC/PLCC of the recipe's predictions over the whole validation set, on
every process) and the model folders it saves (`best/`, `last/`)."""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_iqa.training.task import TrainingTask, TrainState


def evaluate(
    accelerator, model: torch.nn.Module, loader, predict: Callable, group_names: Sequence[str] | None = None
) -> dict[str, float]:
    """SRCC and PLCC (raw, no fit) of `predict`'s scores against its targets over the whole validation set (all
    processes; the padding of the last batch is dropped). NaN when undefined (e.g. constant predictions). When
    `predict` also returns group ids, "srcc"/"plcc" are the means over the groups, each group is reported as
    "srcc_<name>"/"plcc_<name>", and the pooled values as "srcc_pooled"/"plcc_pooled"."""
    was_training = model.training
    model.eval()
    if hasattr(loader, "set_epoch"):  # accelerate advances a loader's dataset epoch at every pass: validate the
        loader.set_epoch(0)  # same items every time (a SeededDataset's augmentation), also after a resume
    scores, targets, groups = [], [], []
    with torch.no_grad():
        for batch in loader:
            with accelerator.autocast():
                predicted = predict(model, batch)
            gathered = [
                value.detach().reshape(-1).to(predicted[0].device).contiguous() for value in predicted
            ]  # scores, targets[, groups]
            gathered[0], gathered[1] = gathered[0].float(), gathered[1].float()
            gathered = accelerator.gather_for_metrics(tuple(gathered))
            scores.append(gathered[0].cpu())
            targets.append(gathered[1].cpu())
            if len(gathered) == 3:
                groups.append(gathered[2].cpu())
    model.train(was_training)
    pred, mos = torch.cat(scores).numpy(), torch.cat(targets).numpy()
    pooled = _correlations(pred, mos)
    if not groups:
        return pooled | {"num_items": len(pred)}
    ids = torch.cat(groups).numpy()
    metrics: dict[str, float] = {"num_items": len(pred)}
    per_group = []
    for group in sorted(set(ids.tolist())):
        name = group_names[group] if group_names is not None and group < len(group_names) else str(group)
        values = _correlations(pred[ids == group], mos[ids == group])
        per_group.append(values)
        metrics |= {f"srcc_{name}": values["srcc"], f"plcc_{name}": values["plcc"]}
    for key in ("srcc", "plcc"):
        metrics[key] = float(np.mean([values[key] for values in per_group]))  # NaN if any group is undefined
        metrics[f"{key}_pooled"] = pooled[key]
    return metrics


def _correlations(pred, mos) -> dict[str, float]:
    from hf_iqa.metrics import MetricInputError, plcc, srcc

    try:
        return {"srcc": srcc(pred, mos), "plcc": plcc(pred, mos)}
    except MetricInputError as error:
        warnings.warn(f"validation metrics undefined: {error}", stacklevel=3)
        return {"srcc": math.nan, "plcc": math.nan}


def save_model_folder(accelerator, model: torch.nn.Module, directory: str | os.PathLike, task: TrainingTask) -> None:
    """`save_pretrained` folder (config, safetensors, code files for remote code) plus processor, tokenizer and
    whatever `task.save_extra` writes. Collective: call it on every process."""
    directory = str(directory)
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        shutil.rmtree(directory, ignore_errors=True)
        if not hasattr(unwrapped, "save_pretrained"):
            os.makedirs(directory, exist_ok=True)
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state_dict.items()}, os.path.join(directory, "model.safetensors"))
        else:
            from transformers.utils import logging as transformers_logging

            shown = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()  # the training bar is the progress; no "Writing shards" bar
            try:
                unwrapped.save_pretrained(directory, state_dict=state_dict)
            finally:
                if shown:
                    transformers_logging.enable_progress_bar()
        for extra in (task.image_processor, task.tokenizer):
            if extra is not None:
                extra.save_pretrained(directory)
        if task.save_extra is not None:
            task.save_extra(directory)
    accelerator.wait_for_everyone()


def _to_float(value: Any) -> float:
    return float(value.detach()) if torch.is_tensor(value) else float(value)


def _validation_line(state: TrainState, metrics: dict[str, float], metric: str, saved_to: Path | None) -> str:
    shown = [f"{key} {metrics[key]:.4f}" for key in ("srcc", "plcc")]
    shown += [
        f"{key} {value:.4f}" for key, value in metrics.items() if key.startswith("srcc_") and key != "srcc_pooled"
    ]
    best = (
        f"best {metric} {state.best_metric:.4f} at step {state.best_step}" if state.best_step >= 0 else "no best yet"
    )
    where = f", saved to {saved_to}" if saved_to is not None else ""
    return f"step {state.global_step}: validation {', '.join(shown)} on {int(metrics['num_items'])} images ({best}{where})"
