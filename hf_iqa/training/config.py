"""The options of every training recipe: `TrainingConfig`, `option(...)` fields, YAML files and command-line
overrides, checked into one config object (a `ConfigError` line otherwise)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        False,
        help="start afresh in an output_dir that holds an earlier run (its checkpoints, best/, last/ and logs "
        "are removed first); without it such a folder is refused unless resume_from_checkpoint is given",
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
