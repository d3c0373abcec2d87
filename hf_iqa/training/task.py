"""What a recipe hands to the loop (`TrainingTask`), the loop position saved in checkpoints (`TrainState`) and
what a run returns (`TrainResult`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass
class TrainingTask:
    """What a recipe hands to `train`.

    compute_loss(model, batch) -> loss, or (loss, {name: value}) for extra logged values.
    predict(model, batch) -> (scores, targets), 1-D tensors; validation correlates them (SRCC/PLCC). It may
    return (scores, targets, groups) with integer group ids (e.g. the dataset of each image): SRCC/PLCC are then
    the means of the per-group values (as papers average per-dataset results), named after `eval_group_names`.
    save_extra(directory): write anything else into a saved model folder (e.g. the model card).
    """

    model: torch.nn.Module
    train_dataset: Dataset
    compute_loss: Callable[[torch.nn.Module, Any], Any]
    collate_fn: Callable | None = None
    eval_dataset: Dataset | None = None
    predict: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, torch.Tensor]] | None = None
    parameters: Sequence[torch.nn.Parameter] | None = None  # default: the model's parameters that require grad
    image_processor: Any = None
    tokenizer: Any = None
    save_extra: Callable[[str], None] | None = None
    eval_group_names: Sequence[str] | None = None  # names of the group ids `predict` returns, for the logs
    lr_lambda: Callable[[int], float] | None = None  # lr multiplier by optimizer step; replaces config.lr_scheduler
    # objects with state_dict()/load_state_dict() saved per process in every checkpoint; their state must be JSON
    # values and tensors (e.g. LIQE's DWA loss averages)
    checkpoint_state: dict[str, Any] | None = None


class TrainState:
    """Loop position and best validation result, saved in every checkpoint (`trainer_state.json`)."""

    def __init__(self) -> None:
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.best_metric = -math.inf
        self.best_step = -1

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in vars(self):
            setattr(self, key, state[key])


@dataclass
class TrainResult:
    global_step: int
    best_metric: float | None
    best_step: int | None
    model_dir: str  # best/ if validation ran, else last/
    last_dir: str
    history: list[dict[str, Any]]  # everything logged, on every process
