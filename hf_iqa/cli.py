"""`hf-iqa` command line: score | convert | benchmark | train | list.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; this file only
dispatches, and imports a subcommand's module (and torch/transformers) only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator

SUBCOMMANDS = {
    "score": ("hf_iqa.commands.score", "score images, files or folders with a model"),
    "convert": ("hf_iqa.commands.convert", "convert an original checkpoint into a Hub-ready folder"),
    "benchmark": ("hf_iqa.commands.benchmark", "score a benchmark dataset and report SRCC/PLCC/KRCC/RMSE"),
    "train": ("hf_iqa.commands.train", "train or fine-tune a model (run under `accelerate launch` for several GPUs)"),
    "list": ("hf_iqa.commands.list_models", "list the models hf_iqa knows by name"),
    "export": ("hf_iqa.commands.export", "export a model to ONNX, parity-checked, for scoring without PyTorch"),
    "demo": ("hf_iqa.commands.demo", "web app (Gradio): score images with several models side by side, locally"),
}


# huggingface_hub's switch, and hf_iqa's own (the zoo's downloads and conversions, training bars)
PROGRESS_VARIABLES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_IQA_NO_PROGRESS")


@contextlib.contextmanager
def library_progress_bars_hidden() -> Iterator[None]:
    """`--no-progress` hides every bar: also transformers' ("Loading weights") and huggingface_hub's (downloads).

    transformers copies huggingface_hub's switch when it is imported, so this covers both whether or not they are
    imported yet; the environment variables carry it to hf_iqa's own bars and into subprocesses (e.g. `accelerate
    launch`). Everything is put back on exit, so that calling `main()` in a process does not silence later work."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    saved_env = {name: os.environ.get(name) for name in PROGRESS_VARIABLES}
    hub_was_disabled = are_progress_bars_disabled()
    transformers_logging = sys.modules.get("transformers.utils.logging")
    transformers_was_enabled = (
        transformers_logging.is_progress_bar_enabled() if transformers_logging else not hub_was_disabled
    )
    os.environ.update(dict.fromkeys(PROGRESS_VARIABLES, "1"))
    disable_progress_bars()
    if transformers_logging is not None:  # already imported: it copied the switch then
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not hub_was_disabled:
            enable_progress_bars()
        transformers_logging = sys.modules.get("transformers.utils.logging")
        if transformers_logging is not None and transformers_was_enabled:
            transformers_logging.enable_progress_bar()


# Exit status when stdout is closed early (`hf-iqa list | head`): 128 + SIGPIPE, what a shell reports for a
# program killed by the broken pipe, so pipelines behave as with any Unix tool; no traceback, no message.
BROKEN_PIPE_STATUS = 141


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, str | None]:
    """The top-level parser and the chosen subcommand's name. Only the chosen subcommand's module is imported (help
    and `list` stay fast: no torch, no transformers)."""
    parser = argparse.ArgumentParser(prog="hf-iqa", description="Blind image quality assessment with hf_iqa.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(sub)
    return parser, chosen if chosen in SUBCOMMANDS else None


def subcommand_parser(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, or `parser` itself when there is none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return parser


def _quiet_broken_pipe() -> int:
    """stdout's reader went away: point stdout at /dev/null so that the interpreter's final flush stays silent."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return BROKEN_PIPE_STATUS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, chosen = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a typo after a subcommand: that subcommand's usage and error, not the top-level ones
        subcommand_parser(parser, chosen).error(f"unrecognized arguments: {' '.join(unknown)}")
    if chosen is None:
        parser.print_help()
        return 0 if not argv else 2
    from hf_iqa.zoo import ModelNotAvailableError

    hidden = library_progress_bars_hidden() if getattr(args, "no_progress", False) else contextlib.nullcontext()
    try:
        with hidden:
            status = int(importlib.import_module(SUBCOMMANDS[chosen][0]).run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (ModelNotAvailableError, OSError) as error:  # a model or file that cannot be loaded: no traceback
        print(f"hf-iqa {chosen}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
