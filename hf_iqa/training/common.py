"""Shared `accelerate` training loop for every hf_iqa recipe.

A recipe is a module `hf_iqa.training.<name>` with a config dataclass (a subclass of `TrainingConfig`), a function
building a `TrainingTask` (model, datasets, loss, validation scores) and `main(argv) -> int`:

    @dataclass
    class MyConfig(TrainingConfig):
        data_dir: str = ""

    def build_task(config: MyConfig, accelerator) -> TrainingTask: ...

    def main(argv=None) -> int:
        config = parse_config(MyConfig, argv, description="...")
        train(config, build_task)
        return 0

It then runs as `accelerate launch -m hf_iqa.training.<name> --config FILE.yaml [--key value ...]` (any number of
GPUs or processes) and as `hf-iqa train <name> --config FILE.yaml [--key value ...]`.

What `train` does: seeds everything; builds the `Accelerator` (mixed precision, gradient accumulation,
`ProjectConfiguration` checkpoints in `<output_dir>/checkpoints/checkpoint_<step>` with `save_state`, trackers);
runs `max_steps` optimizer steps; validates SRCC/PLCC every `eval_steps` and keeps the best model in
`<output_dir>/best`; writes the final weights to `<output_dir>/last`. Both are `save_pretrained` folders (config,
safetensors weights, processor, the model's code for `trust_remote_code`), loadable with `AutoModel`.

Exact resume (`resume_from_checkpoint: latest` or a checkpoint folder): `load_state` restores weights, optimizer,
scheduler, scaler, RNG states and our `TrainState` (step, epoch, position in the epoch, best metric), and the loop
skips the batches already seen in the current epoch. It is bit-identical on the same hardware when the data order
and augmentations depend only on (seed, epoch, index): use `EpochSampler` (done for you) and draw augmentations
from `SeededDataset.rng(index)`, never from the global RNGs inside a dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

# ----------------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A configuration file, key or value that cannot be used; the message names which and why."""


@dataclass
class TrainingConfig:
    """Options common to every recipe. Steps are optimizer steps (after gradient accumulation)."""

    output_dir: str = "outputs/train"
    seed: int = 42
    max_steps: int = 1000
    train_batch_size: int = 16  # per process
    eval_batch_size: int = 32  # per process
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # "adamw" | "adam"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "constant"  # any `transformers.get_scheduler` name: constant, linear, cosine, ...
    warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0  # None: no clipping
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    checkpointing_steps: int = 500  # 0: no checkpoints
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint folder
    eval_steps: int = 500  # 0: validate only at the end
    logging_steps: int = 10
    metric_for_best_model: str = "srcc"  # "srcc" | "plcc"
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl, tensorboard, wandb
    num_workers: int = 0
    find_unused_parameters: bool = False  # DDP: set when some trainable parameters get no gradient
    project_name: str = "hf_iqa"

    def __post_init__(self) -> None:
        checks = [
            (self.max_steps >= 1, "max_steps must be >= 1"),
            (self.train_batch_size >= 1, "train_batch_size must be >= 1"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1"),
            (self.mixed_precision in ("no", "bf16", "fp16"), "mixed_precision must be 'no', 'bf16' or 'fp16'"),
            (self.optimizer in ("adamw", "adam"), "optimizer must be 'adamw' or 'adam'"),
            (self.metric_for_best_model in ("srcc", "plcc"), "metric_for_best_model must be 'srcc' or 'plcc'"),
            (min(self.checkpointing_steps, self.eval_steps, self.logging_steps) >= 0, "step intervals must be >= 0"),
        ]
        unknown = [r for r in self.report_to if r not in ("jsonl", "tensorboard", "wandb")]
        checks.append((not unknown, f"report_to: unknown tracker(s) {unknown}; use jsonl, tensorboard, wandb"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field's type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin in (list, tuple, Sequence):
        (inner, *_) = typing.get_args(annotation) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    return value


def _parse_scalar(text: str) -> Any:
    """Interpret a command-line value the way YAML would (1e-5 -> float, true -> bool, null -> None, [a, b] -> list)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # yaml.YAMLError / json.JSONDecodeError, with line numbers
        raise ConfigError(f"{path}: cannot parse: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option: value, got {type(data).__name__}")
    return data


def build_config(config_cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Instantiate the dataclass `config_cls` from a dict, converting types; unknown keys are an error."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"{source}: unknown option(s) {unknown} for {config_cls.__name__}; known: {', '.join(names)}"
        )
    kwargs = {}
    for key, value in values.items():
        try:
            kwargs[key] = _coerce(value, hints[key], key)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None
    try:
        return config_cls(**kwargs)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def load_config(config_cls: type, path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None):
    """Config from a YAML/JSON file (optional) updated with `overrides` (e.g. parsed command-line options)."""
    values = _read_config_file(path) if path else {}
    source = str(path) if path else "config"
    values.update(overrides or {})
    return build_config(config_cls, values, source)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """`--config FILE` plus one `--<option> VALUE` per field of `config_cls` (values parsed as YAML)."""
    parser.add_argument("--config", help="YAML or JSON file with the options; command-line options override it")
    group = parser.add_argument_group(f"options of {config_cls.__name__} (override the file)")
    for f in dataclasses.fields(config_cls):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        group.add_argument(*flags, dest=f"override_{f.name}", metavar="VALUE", default=argparse.SUPPRESS)


def parse_config(config_cls: type, argv: Sequence[str] | None = None, description: str | None = None):
    """Parse `--config FILE` and `--option value` overrides from `argv` into a `config_cls` instance."""
    parser = argparse.ArgumentParser(description=description or config_cls.__doc__)
    add_config_arguments(parser, config_cls)
    args = parser.parse_args(argv)
    overrides = {
        key[len("override_") :]: _parse_scalar(value)
        for key, value in vars(args).items()
        if key.startswith("override_")
    }
    try:
        return load_config(config_cls, args.config, overrides)
    except ConfigError as error:
        parser.error(str(error))


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


# ----------------------------------------------------------------------------------------------------------------
# deterministic data
# ----------------------------------------------------------------------------------------------------------------


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
    project = ProjectConfiguration(
        project_dir=config.output_dir,
        logging_dir=str(Path(config.output_dir) / "logs"),
        automatic_checkpoint_naming=True,
        total_limit=config.checkpoints_total_limit,
    )
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


# ----------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------


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


class TrainState:
    """Loop position and best validation result, saved in every checkpoint (`register_for_checkpointing`)."""

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
        folder = Path(config.output_dir) / "checkpoints"
        candidates = [p for p in folder.glob("checkpoint_*") if p.name.split("_")[-1].isdigit()]
        if not candidates:
            return None  # nothing to resume yet: start fresh (lets a pre-emptible job always pass `latest`)
        return str(max(candidates, key=lambda p: int(p.name.split("_")[-1])))
    if not Path(spec).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {spec} is not a checkpoint folder")
    return spec


def _split_loss(output: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(output, tuple):
        loss, extras = output
        return loss, dict(extras)
    return output, {}


def evaluate(
    accelerator, model: torch.nn.Module, loader, predict: Callable, group_names: Sequence[str] | None = None
) -> dict[str, float]:
    """SRCC and PLCC (raw, no fit) of `predict`'s scores against its targets over the whole validation set (all
    processes; the padding of the last batch is dropped). NaN when undefined (e.g. constant predictions). When
    `predict` also returns group ids, "srcc"/"plcc" are the means over the groups, each group is reported as
    "srcc_<name>"/"plcc_<name>", and the pooled values as "srcc_pooled"/"plcc_pooled"."""
    was_training = model.training
    model.eval()
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
            unwrapped.save_pretrained(directory, state_dict=state_dict)
        for extra in (task.image_processor, task.tokenizer):
            if extra is not None:
                extra.save_pretrained(directory)
        if task.save_extra is not None:
            task.save_extra(directory)
    accelerator.wait_for_everyone()


def train(config: TrainingConfig, build_task: Callable[[TrainingConfig, Any], TrainingTask]) -> TrainResult:
    """Run a recipe: `build_task(config, accelerator)` is called after seeding, inside the accelerator's context."""
    from transformers import get_scheduler

    accelerator = make_accelerator(config)
    task = build_task(config, accelerator)
    model = task.model
    parameters = (
        list(task.parameters) if task.parameters is not None else [p for p in model.parameters() if p.requires_grad]
    )
    optimizer = _build_optimizer(config, parameters)
    # accelerate steps a prepared scheduler once per process per optimizer step, hence the num_processes factor
    if task.lr_lambda is not None:  # a recipe's own schedule (e.g. LIQE's per-epoch cosine)
        processes = accelerator.num_processes
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: task.lr_lambda(step // processes))
    else:
        scheduler = get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.warmup_steps * accelerator.num_processes,
            num_training_steps=config.max_steps * accelerator.num_processes,
        )
    # the loader's own generator keeps DataLoader iterator creation off the global torch RNG, which the model's
    # dropout uses: needed for a bit-identical resume
    train_loader = DataLoader(
        task.train_dataset,
        batch_size=config.train_batch_size,
        sampler=EpochSampler(len(task.train_dataset), seed=config.seed),
        collate_fn=task.collate_fn,
        num_workers=config.num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    if len(train_loader) == 0:
        raise ConfigError(
            f"train_batch_size={config.train_batch_size} is larger than the training set ({len(task.train_dataset)} items)"
        )
    eval_loader = None
    if task.eval_dataset is not None and task.predict is not None:
        eval_loader = DataLoader(
            task.eval_dataset,
            batch_size=config.eval_batch_size,
            shuffle=False,
            collate_fn=task.collate_fn,
            num_workers=config.num_workers,
        )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)

    state = TrainState()
    accelerator.register_for_checkpointing(state)
    checkpoint = _find_checkpoint(config)
    if checkpoint is not None:
        accelerator.load_state(checkpoint)
        accelerator.print(f"resumed from {checkpoint} at step {state.global_step}")
    # load_state does not restore the automatic-naming counter; we name checkpoints by step anyway
    accelerator.project_configuration.iteration = state.global_step
    accelerator.init_trackers(config.project_name, config=_flat_config(config))

    output_dir = Path(config.output_dir)
    best_dir, last_dir = output_dir / "best", output_dir / "last"
    history: list[dict[str, Any]] = []
    window: dict[str, list[float]] = {}

    def log(values: dict[str, Any]) -> None:
        history.append({"step": state.global_step, **values})
        accelerator.log(values, step=state.global_step)

    def validate() -> None:
        metrics = evaluate(accelerator, model, eval_loader, task.predict, task.eval_group_names)
        value = metrics[config.metric_for_best_model]
        improved = not math.isnan(value) and value > state.best_metric
        if improved:
            state.best_metric, state.best_step = value, state.global_step
            save_model_folder(accelerator, model, best_dir, task)
        log({f"eval/{k}": v for k, v in metrics.items()} | {"eval/best": state.best_metric})

    model.train()
    done = state.global_step >= config.max_steps
    while not done:
        train_loader.set_epoch(state.epoch)
        if hasattr(task.train_dataset, "set_epoch"):
            task.train_dataset.set_epoch(state.epoch)
        loader = train_loader
        if state.batches_in_epoch:  # resumed mid-epoch: same order, seen batches skipped without loading them
            loader = accelerator.skip_first_batches(train_loader, state.batches_in_epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss, extras = _split_loss(task.compute_loss(model, batch))
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
            for key, value in {"loss": loss, **extras}.items():
                window.setdefault(key, []).append(float(value.detach()) if torch.is_tensor(value) else float(value))
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            last = state.global_step >= config.max_steps
            if config.logging_steps and (state.global_step % config.logging_steps == 0 or last):
                means = torch.tensor([np.mean(v) for v in window.values()], device=accelerator.device)
                means = accelerator.reduce(means, reduction="mean")  # same numbers on every process
                log(dict(zip(window, means.tolist())) | {"lr": scheduler.get_last_lr()[0], "epoch": state.epoch})
                window.clear()
            if eval_loader is not None and (
                (config.eval_steps and state.global_step % config.eval_steps == 0) or last
            ):
                validate()
            if config.checkpointing_steps and state.global_step % config.checkpointing_steps == 0:
                accelerator.project_configuration.iteration = state.global_step
                accelerator.save_state()
            if last:
                done = True
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0

    save_model_folder(accelerator, model, last_dir, task)
    accelerator.end_training()
    has_best = state.best_step >= 0
    model_dir = str(best_dir if has_best else last_dir)
    accelerator.print(f"done at step {state.global_step}; model folder: {model_dir}")
    return TrainResult(
        global_step=state.global_step,
        best_metric=state.best_metric if has_best else None,
        best_step=state.best_step if has_best else None,
        model_dir=model_dir,
        last_dir=str(last_dir),
        history=history,
    )


def _flat_config(config: TrainingConfig) -> dict[str, Any]:
    """Tracker-friendly config (tensorboard hparams accept only scalars and strings)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in vars(config).items()}
