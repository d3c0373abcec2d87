"""What a training run is made of besides the loop: the deterministic data order (`EpochSampler`,
`SeededDataset`), the JSONL tracker and the `Accelerator` built from a config."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from hf_iqa.training.config import ConfigError, TrainingConfig


class EpochSampler(Sampler[int]):
    """Indices in an order that depends only on (seed, epoch): the same in every process (accelerate shards the
    batches) and after a resume. `shuffle=False` keeps the dataset order."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        self.num_samples, self.seed, self.shuffle, self.epoch = num_samples, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples).tolist())

    def __len__(self) -> int:
        return self.num_samples


class SeededDataset(Dataset):
    """Base class for datasets with random augmentation: `self.rng(index)` is a generator seeded by (seed, epoch,
    index), so an item is the same whichever process or worker loads it, and after a resume. The training loop
    calls `set_epoch`."""

    def __init__(self, seed: int = 0):
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])


# ----------------------------------------------------------------------------------------------------------------
# accelerator, trackers
# ----------------------------------------------------------------------------------------------------------------


def _general_tracker_base():
    from accelerate.tracking import GeneralTracker

    return GeneralTracker


class JsonlTracker(_general_tracker_base()):
    """Append every logged dict as one JSON line (`{"step": N, ...}`) to `<output_dir>/logs/metrics.jsonl`; the
    run configuration goes to `<output_dir>/logs/config.json`. Main process only."""

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, logging_dir: str | os.PathLike):
        super().__init__()
        self.logging_dir = Path(logging_dir)
        self.path = self.logging_dir / "metrics.jsonl"

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        (self.logging_dir / "config.json").write_text(json.dumps(values, indent=2, default=str) + "\n")

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}, default=float) + "\n")

    def records(self) -> int:
        """How many records the file holds (saved in checkpoints)."""
        if not self.path.is_file():
            return 0
        with self.path.open("rb") as handle:
            return sum(1 for _ in handle)

    def truncate(self, records: int) -> None:
        """Keep the first `records` records (a resumed run drops what the interrupted one logged after its
        checkpoint); written to a temporary file, then renamed."""
        if self.records() <= records:
            return
        with self.path.open("rb") as handle:
            kept = [line for _, line in zip(range(records), handle)]
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(b"".join(kept))
        os.replace(temporary, self.path)


def make_accelerator(config: TrainingConfig):
    """The `Accelerator` for `config`: mixed precision, gradient accumulation, checkpoints named
    `checkpoint_<step>` under `<output_dir>/checkpoints`, trackers; seeds python/numpy/torch."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed

    log_with: list[Any] = []
    for name in config.report_to:
        if name == "jsonl":
            log_with.append(JsonlTracker(Path(config.output_dir) / "logs"))
            continue
        module = {"tensorboard": "tensorboard", "wandb": "wandb"}[name]
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"report_to: {name!r} needs the `{module}` package (pip install {module})") from None
        log_with.append(name)
    # checkpoints are hf_iqa's own (hf_iqa.training.checkpoint), not accelerate's save_state
    project = ProjectConfiguration(project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "logs"))
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if config.find_unused_parameters else []
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=log_with or None,
        project_config=project,
        kwargs_handlers=handlers,
    )
    set_seed(config.seed)
    return accelerator


def _build_optimizer(config: TrainingConfig, parameters: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if not parameters:
        raise ConfigError("the model has no trainable parameters (all have requires_grad=False)")
    optimizer_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer_cls(
        parameters,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        weight_decay=config.weight_decay,
    )


def _find_checkpoint(config: TrainingConfig) -> str | None:
    spec = config.resume_from_checkpoint
    if spec is None:
        return None
    if spec == "latest":
        from hf_iqa.training.checkpoint import list_checkpoints

        candidates = list_checkpoints(Path(config.output_dir) / "checkpoints")
        if not candidates:
            return None  # nothing to resume yet: start fresh (lets a pre-emptible job always pass `latest`)
        return str(candidates[-1])
    if not Path(spec).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {spec} is not a checkpoint folder")
    return spec


def _check_checkpointing_supported(config: TrainingConfig, accelerator) -> None:
    """hf_iqa's own checkpoints hold a whole model and optimizer state: not for sharded (FSDP/DeepSpeed) runs."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (
        DistributedType.FSDP,
        DistributedType.DEEPSPEED,
        DistributedType.MEGATRON_LM,
    )
    if sharded and (config.checkpointing_steps or config.resume_from_checkpoint):
        raise ConfigError(
            f"checkpoints are not supported under {accelerator.distributed_type.value}; "
            "set checkpointing_steps: 0 and no resume_from_checkpoint, or run with DDP"
        )


def _flat_config(config: TrainingConfig) -> dict[str, Any]:
    """Tracker-friendly config (tensorboard hparams accept only scalars and strings)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in vars(config).items()}
