"""Shared `accelerate` training loop for every hf_iqa recipe.

A recipe is a module `hf_iqa.training.<name>` with a config dataclass (a subclass of `TrainingConfig`), a function
building a `TrainingTask` (model, datasets, loss, validation scores) and `main(argv) -> int`:

    @dataclass
    class MyConfig(TrainingConfig):
        data_dir: str = option("", help="where the images are")

    def build_task(config: MyConfig, accelerator) -> TrainingTask: ...

    def main(argv=None, prog="accelerate launch -m hf_iqa.training.<name>") -> int:
        return run_recipe(MyConfig, build_task, argv, prog=prog, description="...")

Options are declared with `option(default, help=...)`, which `--help` lists. The recipe then runs as
`accelerate launch -m hf_iqa.training.<name> --config FILE.yaml [--key value ...]` (any number of GPUs or
processes) and as `hf-iqa train <name> --config FILE.yaml [--key value ...]`.

What `train` does: seeds everything; builds the `Accelerator` (mixed precision, gradient accumulation, trackers);
runs `max_steps` optimizer steps with a progress bar on the main process (step, loss, learning rate, ETA;
`--no-progress` or HF_IQA_NO_PROGRESS=1 hides it); validates SRCC/PLCC every `eval_steps` (printed) and keeps the
best model in `<output_dir>/best`; saves resumable checkpoints in `<output_dir>/checkpoints/checkpoint_<step>`;
writes the final weights to `<output_dir>/last`. best/ and last/ are `save_pretrained` folders (config, safetensors
weights, processor, the model's code for `trust_remote_code`), loadable with `AutoModel`.

Exact resume (`resume_from_checkpoint: latest` or a checkpoint folder): hf_iqa's own checkpoint format
(`hf_iqa.training.checkpoint`: safetensors + JSON, never pickle) restores weights, optimizer, scheduler, scaler,
every process's RNG states, the recipe's `TrainingTask.checkpoint_state` objects and our `TrainState` (step, epoch,
position in the epoch, best metric), and the loop skips the batches already seen in the current epoch. It is
bit-identical on the same hardware when the data order and augmentations depend only on (seed, epoch, index): use
`EpochSampler` (done for you) and draw augmentations from `SeededDataset.rng(index)`, never from the global RNGs
inside a dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
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

from hf_iqa.progress import progress_enabled

# ----------------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A configuration file, key or value that cannot be used; the message names which and why."""


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its `--help` text (`dataclasses.field` with `metadata={"help": ...}`)."""
    return field(default=default, default_factory=default_factory, metadata={"help": help})


@dataclass
class TrainingConfig:
    """Options common to every recipe. Steps are optimizer steps (after gradient accumulation)."""

    output_dir: str = option("outputs/train", help="folder for checkpoints/, best/, last/ and logs/")
    seed: int = option(42, help="seed of every RNG, the data order and the augmentations")
    max_steps: int = option(1000, help="optimizer steps to train (recipes with num_epochs compute it)")
    train_batch_size: int = option(16, help="training batch per process")
    eval_batch_size: int = option(32, help="validation batch per process")
    learning_rate: float = option(1e-5, help="peak learning rate")
    weight_decay: float = option(0.0, help="weight decay of the optimizer")
    optimizer: str = option("adamw", help="adamw or adam")
    adam_beta1: float = option(0.9, help="Adam beta1")
    adam_beta2: float = option(0.999, help="Adam beta2")
    adam_epsilon: float = option(1e-8, help="Adam epsilon")
    lr_scheduler: str = option(
        "constant", help="learning-rate schedule: a transformers.get_scheduler name (constant, linear, cosine, ...)"
    )
    warmup_steps: int = option(0, help="linear warm-up steps of the schedule")
    gradient_accumulation_steps: int = option(1, help="batches accumulated per optimizer step")
    max_grad_norm: float | None = option(1.0, help="gradient-norm clipping; null: no clipping")
    mixed_precision: str = option("no", help="no, bf16 or fp16 autocast")
    checkpointing_steps: int = option(500, help="save a resumable checkpoint every N steps; 0: never")
    checkpoints_total_limit: int | None = option(2, help="keep the newest N checkpoints; null: all")
    overwrite_output_dir: bool = option(
        False, help="start afresh in an output_dir that holds an earlier run (its checkpoints, best/, last/ and logs "
        "are removed first); without it such a folder is refused unless resume_from_checkpoint is given"
    )
    resume_from_checkpoint: str | None = option(
        None, help="resume exactly: 'latest' (of output_dir; starts fresh when none) or a checkpoint folder"
    )
    eval_steps: int = option(500, help="validate every N steps; 0: only at the end")
    logging_steps: int = option(10, help="log the mean losses and the learning rate every N steps")
    metric_for_best_model: str = option("srcc", help="srcc or plcc: the validation metric that selects best/")
    report_to: list[str] = option(
        default_factory=lambda: ["jsonl"], help="trackers: jsonl (logs/metrics.jsonl), tensorboard, wandb"
    )
    num_workers: int = option(0, help="data-loading worker processes")
    find_unused_parameters: bool = option(False, help="DDP: set when some trainable parameters get no gradient")
    project_name: str = option("hf_iqa", help="project name given to the trackers")

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


def option_help(config_cls: type, name: str) -> str:
    """The help text of option `name`: from the nearest class that declared it with `option(...)` (a recipe that
    only changes a default inherits the base class's text)."""
    for klass in config_cls.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and declared.metadata.get("help"):
            return declared.metadata["help"]
    return ""


def _default_text(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return json.dumps(value, default=str)  # the form the command line accepts (parsed as YAML)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """`--config FILE` plus one `--<option> VALUE` per field of `config_cls` (values parsed as YAML)."""
    parser.add_argument(
        "--config", metavar="FILE", help="YAML or JSON file with the options; command-line options override it"
    )
    group = parser.add_argument_group(f"options of {config_cls.__name__} (override the file; values as in YAML)")
    for f in dataclasses.fields(config_cls):
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        text = f"{option_help(config_cls, f.name)} (default: {_default_text(f)})".strip()
        group.add_argument(
            *flags, dest=f"override_{f.name}", metavar="VALUE", default=argparse.SUPPRESS, help=text.replace("%", "%%")
        )


def config_parser(
    config_cls: type, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """The command line of a recipe: `--config`, one option per config field, `--no-progress`."""
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [-h] [--config FILE.yaml] [--<option> VALUE ...] [--no-progress]",
        description=description or config_cls.__doc__,
    )
    add_config_arguments(parser, config_cls)
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (also: environment HF_IQA_NO_PROGRESS=1)"
    )
    return parser


def _config_from_args(parser: argparse.ArgumentParser, config_cls: type, args: argparse.Namespace):
    overrides = {
        key[len("override_") :]: _parse_scalar(value)
        for key, value in vars(args).items()
        if key.startswith("override_")
    }
    try:
        return load_config(config_cls, args.config, overrides)
    except ConfigError as error:
        parser.error(str(error))


def parse_config(
    config_cls: type, argv: Sequence[str] | None = None, description: str | None = None, prog: str | None = None
):
    """Parse `--config FILE` and `--option value` overrides from `argv` into a `config_cls` instance."""
    parser = config_parser(config_cls, prog, description)
    return _config_from_args(parser, config_cls, parser.parse_args(argv))


def run_recipe(
    config_cls: type,
    build_task: Callable[[Any, Any], Any],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
) -> int:
    """A recipe's `main`: parse the command line, train; a configuration or checkpoint problem is one line on
    stderr and exit status 2 (no traceback)."""
    from hf_iqa.training.checkpoint import CheckpointError

    parser = config_parser(config_cls, prog, description)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    config = _config_from_args(parser, config_cls, args)
    _stop_on_sigterm()
    try:
        train(config, build_task, progress=False if args.no_progress else None)
    except (ConfigError, CheckpointError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: one line saying how to go on, no traceback
        given = sys.argv[1:] if argv is None else list(argv)
        print(f"{parser.prog}: interrupted; continue from the last checkpoint with: "
              f"{resume_command(parser.prog, given)}", file=sys.stderr)  # fmt: skip
        return 130
    return 0


def resume_command(prog: str, argv: Sequence[str]) -> str:
    """The command line that continues an interrupted run: the same options with `--resume_from_checkpoint latest`
    (replacing any earlier `--resume_from_checkpoint` or `--overwrite_output_dir`)."""
    import shlex

    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        name = item.split("=", 1)[0].replace("-", "_")
        if name in ("__resume_from_checkpoint", "__overwrite_output_dir"):  # options with a value: drop both
            skip = "=" not in item
            continue
        kept.append(item)
    return " ".join(shlex.quote(part) for part in [*prog.split(), *kept, "--resume_from_checkpoint", "latest"])


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop, `kill`) ends training like Ctrl-C (main thread only)."""
    import signal
    import threading

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


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


def train(
    config: TrainingConfig,
    build_task: Callable[[TrainingConfig, Any], TrainingTask],
    progress: bool | None = None,
) -> TrainResult:
    """Run a recipe: `build_task(config, accelerator)` is called after seeding, inside the accelerator's context.
    The main process shows a progress bar (step, loss, learning rate, ETA; `progress=False` or
    HF_IQA_NO_PROGRESS=1 hides it) and prints validation results and where checkpoints and models went."""
    show = progress_enabled(progress)
    _check_output_dir(config)
    with _library_progress_bars(show):  # e.g. transformers' "Loading weights" while the recipe builds its model
        accelerator = make_accelerator(config)
        task = build_task(config, accelerator)
        trainer = _Trainer(config, task, accelerator, show)
        trainer.resume()
        return trainer.run()


MIN_RELIABLE_VALIDATION = 20
"""Fewer validation items than this: a warning that SRCC/PLCC cannot rank checkpoints."""
RUN_FOLDERS = ("checkpoints", "best", "last", "logs")
"""What a run writes into its output_dir (removed by --overwrite_output_dir, nothing else)."""


def _check_output_dir(config: TrainingConfig) -> None:
    """A new run never starts in a folder that holds an earlier one: their checkpoints would mix, and `latest` would
    pick the old run's. Continue it (`resume_from_checkpoint`) or start afresh (`overwrite_output_dir`)."""
    output_dir = Path(config.output_dir)
    earlier = [output_dir / name for name in RUN_FOLDERS if (output_dir / name).exists()]
    if not earlier or config.resume_from_checkpoint:
        return
    if not config.overwrite_output_dir:
        raise ConfigError(
            f"{output_dir} holds an earlier run ({', '.join(p.name for p in earlier)}); continue it with "
            "--resume_from_checkpoint latest, start afresh with --overwrite_output_dir true, or choose another --output_dir"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        for folder in earlier:
            shutil.rmtree(folder)


@contextlib.contextmanager
def _library_progress_bars(show: bool) -> Iterator[None]:
    """Hide transformers' progress bars for the run when ours are hidden (`--no-progress`)."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    if not show:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


class _Trainer:
    """One training run, in the order `train` calls it: set-up (`__init__`), `resume`, `run` (epochs of batches,
    optimizer steps with logging, validation and checkpoints), then the saved model folders."""

    def __init__(self, config: TrainingConfig, task: TrainingTask, accelerator, progress: bool) -> None:
        self.config, self.task, self.accelerator = config, task, accelerator
        self.show_progress = progress and accelerator.is_main_process
        output_dir = Path(config.output_dir)
        self.best_dir, self.last_dir = output_dir / "best", output_dir / "last"
        self.checkpoint_dir = output_dir / "checkpoints"
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []
        self.window: dict[str, list[float]] = {}  # values since the last log line
        self.step_losses: list[float] = []  # losses of the micro-batches of the current optimizer step
        self.bar = None
        model = task.model
        self.parameters = (
            list(task.parameters)
            if task.parameters is not None
            else [p for p in model.parameters() if p.requires_grad]
        )
        optimizer = _build_optimizer(config, self.parameters)
        scheduler = self._build_scheduler(optimizer)
        train_loader, eval_loader = self._build_loaders()
        self.model, self.optimizer, self.train_loader, self.scheduler = accelerator.prepare(
            model, optimizer, train_loader, scheduler
        )
        self.eval_loader = accelerator.prepare(eval_loader) if eval_loader is not None else None

    def _build_scheduler(self, optimizer: torch.optim.Optimizer):
        from transformers import get_scheduler

        config, processes = self.config, self.accelerator.num_processes
        # accelerate steps a prepared scheduler once per process per optimizer step, hence the processes factor
        if self.task.lr_lambda is not None:  # a recipe's own schedule (e.g. LIQE's per-epoch cosine)
            lr_lambda = self.task.lr_lambda
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_lambda(step // processes))
        return get_scheduler(
            config.lr_scheduler,
            optimizer,
            num_warmup_steps=config.warmup_steps * processes,
            num_training_steps=config.max_steps * processes,
        )

    def _build_loaders(self) -> tuple[DataLoader, DataLoader | None]:
        config, task = self.config, self.task
        # the loader's own generator keeps DataLoader iterator creation off the global torch RNG, which the
        # model's dropout uses: needed for a bit-identical resume
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
                f"train_batch_size={config.train_batch_size} is larger than the training set "
                f"({len(task.train_dataset)} items)"
            )
        if task.eval_dataset is None or task.predict is None:
            return train_loader, None
        if len(task.eval_dataset) < MIN_RELIABLE_VALIDATION:
            self._say(f"warning: the validation set has only {len(task.eval_dataset)} items: SRCC/PLCC on fewer than "
                      f"{MIN_RELIABLE_VALIDATION} are too noisy to choose the best model by (their 95 % intervals "
                      "span most of [-1, 1]); give a larger validation split")  # fmt: skip
        eval_loader = DataLoader(
            task.eval_dataset,
            batch_size=config.eval_batch_size,
            shuffle=False,
            collate_fn=task.collate_fn,
            num_workers=config.num_workers,
        )
        return train_loader, eval_loader

    # -- checkpoints ------------------------------------------------------------------------------------------

    def _checkpointed_objects(self) -> dict[str, Any]:
        return dict(self.task.checkpoint_state or {})

    def resume(self) -> None:
        """Restore the run from `config.resume_from_checkpoint` (JSON + safetensors only; pickles are refused)."""
        from hf_iqa.training.checkpoint import load_checkpoint

        _check_checkpointing_supported(self.config, self.accelerator)
        folder = _find_checkpoint(self.config)
        if folder is not None:
            trainer_state = load_checkpoint(
                self.accelerator,
                Path(folder),
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                objects=self._checkpointed_objects(),
            )
            self.state.load_state_dict(trainer_state["loop"])
            self._restore_trackers(Path(folder), trainer_state.get("tracker_records"))
            self._say(f"resumed from {folder} at step {self.state.global_step}")
        self.accelerator.init_trackers(self.config.project_name, config=_flat_config(self.config))

    def _jsonl_tracker(self) -> JsonlTracker | None:
        trackers = [t for t in self.accelerator.log_with or [] if isinstance(t, JsonlTracker)]
        return trackers[0] if trackers else None

    def _restore_trackers(self, folder: Path, records: int | None) -> None:
        """Resuming in the run's own output folder: drop the log records written after the checkpoint (by the
        interrupted run), so metrics.jsonl holds each step once."""
        tracker = self._jsonl_tracker() if self.accelerator.is_main_process else None
        inside = Path(self.config.output_dir).resolve() in folder.resolve().parents
        if tracker is not None and records is not None and inside:
            tracker.truncate(records)

    def _save_checkpoint(self) -> None:
        from hf_iqa.training.checkpoint import save_checkpoint

        tracker = self._jsonl_tracker()
        folder = self.checkpoint_dir / f"checkpoint_{self.state.global_step}"
        save_checkpoint(
            self.accelerator,
            folder,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            trainer_state={
                "loop": self.state.state_dict(),
                "tracker_records": tracker.records() if tracker is not None else None,
            },
            objects=self._checkpointed_objects(),
            total_limit=self.config.checkpoints_total_limit,
        )
        self._say(f"step {self.state.global_step}: checkpoint saved to {folder}")

    # -- the loop ---------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        config, state = self.config, self.state
        self.model.train()
        with tqdm(
            total=config.max_steps,
            initial=min(state.global_step, config.max_steps),
            desc="training",
            unit="step",
            disable=not self.show_progress,
            file=sys.stderr,
            dynamic_ncols=True,
        ) as self.bar:
            while state.global_step < config.max_steps:
                self._run_epoch()
        self.bar = None
        return self._finish()

    def _run_epoch(self) -> None:
        """Batches of the current epoch from where the state says; advances the epoch when it is exhausted."""
        state = self.state
        self.train_loader.set_epoch(state.epoch)
        if hasattr(self.task.train_dataset, "set_epoch"):
            self.task.train_dataset.set_epoch(state.epoch)
        loader = self.train_loader
        if state.batches_in_epoch:  # resumed mid-epoch: same order, seen batches skipped without loading them
            loader = self.accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch)
        for batch in loader:
            self._train_batch(batch)
            if self.accelerator.sync_gradients and self._after_optimizer_step():
                return  # max_steps reached
        state.epoch += 1
        state.batches_in_epoch = 0

    def _train_batch(self, batch: Any) -> None:
        accelerator, config = self.accelerator, self.config
        with accelerator.accumulate(self.model):
            loss, extras = _split_loss(self.task.compute_loss(self.model, batch))
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(self.parameters, config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.state.batches_in_epoch += 1
        for key, value in {"loss": loss, **extras}.items():
            self.window.setdefault(key, []).append(_to_float(value))
        self.step_losses.append(self.window["loss"][-1])

    def _after_optimizer_step(self) -> bool:
        """Logging, validation, checkpoint and progress after optimizer step `global_step`; True at the last."""
        config, state = self.config, self.state
        state.global_step += 1
        last = state.global_step >= config.max_steps
        if config.logging_steps and (state.global_step % config.logging_steps == 0 or last):
            self._log_window()
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{np.mean(self.step_losses):.4g}", lr=f"{self.scheduler.get_last_lr()[0]:.3g}", refresh=False
            )
            self.bar.update(1)
        self.step_losses = []
        if self.eval_loader is not None and (
            (config.eval_steps and state.global_step % config.eval_steps == 0) or last
        ):
            self._validate()
        if config.checkpointing_steps and state.global_step % config.checkpointing_steps == 0:
            self._save_checkpoint()
        return last

    def _log(self, values: dict[str, Any]) -> None:
        self.history.append({"step": self.state.global_step, **values})
        self.accelerator.log(values, step=self.state.global_step)

    def _log_window(self) -> None:
        accelerator = self.accelerator
        means = torch.tensor([np.mean(v) for v in self.window.values()], device=accelerator.device)
        means = accelerator.reduce(means, reduction="mean")  # same numbers on every process
        lr = self.scheduler.get_last_lr()[0]
        self._log(dict(zip(self.window, means.tolist())) | {"lr": lr, "epoch": self.state.epoch})
        self.window.clear()

    def _validate(self) -> None:
        config, state = self.config, self.state
        metrics = evaluate(
            self.accelerator, self.model, self.eval_loader, self.task.predict, self.task.eval_group_names
        )
        value = metrics[config.metric_for_best_model]
        improved = not math.isnan(value) and value > state.best_metric
        if improved:
            state.best_metric, state.best_step = value, state.global_step
            save_model_folder(self.accelerator, self.model, self.best_dir, self.task)
        self._log({f"eval/{k}": v for k, v in metrics.items()} | {"eval/best": state.best_metric})
        self._say(_validation_line(state, metrics, config.metric_for_best_model, self.best_dir if improved else None))

    def _finish(self) -> TrainResult:
        state = self.state
        save_model_folder(self.accelerator, self.model, self.last_dir, self.task)
        self.accelerator.end_training()
        has_best = state.best_step >= 0
        model_dir = str(self.best_dir if has_best else self.last_dir)
        lines = [f"done at step {state.global_step}"]
        if has_best:
            metric = self.config.metric_for_best_model
            lines.append(f"best model ({metric} {state.best_metric:.4f} at step {state.best_step}): {self.best_dir}")
        lines.append(f"last model: {self.last_dir}")
        if self.checkpoint_dir.is_dir():
            lines.append(f"checkpoints: {self.checkpoint_dir}")
        tracker = self._jsonl_tracker()
        if tracker is not None:
            lines.append(f"logs: {tracker.path}")
        self._say("\n".join(lines))
        return TrainResult(
            global_step=state.global_step,
            best_metric=state.best_metric if has_best else None,
            best_step=state.best_step if has_best else None,
            model_dir=model_dir,
            last_dir=str(self.last_dir),
            history=self.history,
        )

    def _say(self, message: str) -> None:
        """A line on stdout from the main process, drawn above the progress bar."""
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stdout)


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
