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

import contextlib
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hf_iqa.progress import progress_enabled
from hf_iqa.training.config import (  # noqa: F401 (recipes import these from here)
    ConfigError,
    TrainingConfig,
    _config_from_args,
    add_config_arguments,
    build_config,
    config_parser,
    load_config,
    option,
    option_help,
    parse_config,
)
from hf_iqa.training.runtime import (  # noqa: F401
    EpochSampler,
    JsonlTracker,
    SeededDataset,
    _build_optimizer,
    _check_checkpointing_supported,
    _find_checkpoint,
    _flat_config,
    make_accelerator,
)
from hf_iqa.training.task import TrainingTask, TrainResult, TrainState  # noqa: F401
from hf_iqa.training.validation import (  # noqa: F401
    _to_float,
    _validation_line,
    evaluate,
    save_model_folder,
)


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
# the loop
# ----------------------------------------------------------------------------------------------------------------


def _split_loss(output: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(output, tuple):
        loss, extras = output
        return loss, dict(extras)
    return output, {}


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
