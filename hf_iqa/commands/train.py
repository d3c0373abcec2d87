"""`hf-iqa train <recipe> --config FILE.yaml [--option value ...]`: runs `hf_iqa.training.<recipe>.main`, the same
code as `accelerate launch -m hf_iqa.training.<recipe> ...` (use the latter for several GPUs or processes)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

SHARED_MODULES = {
    "common",
    "config",
    "runtime",
    "task",
    "validation",
    "checkpoint",
    "checkpoint_schema",
    "iqa_data",
    "qualiclip_data",
    "qualiclip_losses",
}  # not recipes


def _candidates() -> list[str]:
    """Module names of this folder that may be recipes (nothing is imported: `hf-iqa train --help` stays fast)."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(Path(__file__).parent.parent / "training")])
        if not info.name.startswith("_") and info.name not in SHARED_MODULES
    )


def available_recipes() -> list[str]:
    """Modules of `hf_iqa.training` that expose `main(argv)` (imports them; used for help and errors only)."""
    recipes = []
    for name in _candidates():
        try:
            module = importlib.import_module(f"hf_iqa.training.{name}")
        except Exception:  # a broken recipe must not hide the others
            continue
        if callable(getattr(module, "main", None)):
            recipes.append(name)
    return recipes


def load_recipe(name: str) -> ModuleType:
    """The recipe module `hf_iqa.training.<name>`, or a ValueError listing the available recipes."""
    if name.startswith("_") or name in SHARED_MODULES or not name.isidentifier():
        module = None
    else:
        try:
            module = importlib.import_module(f"hf_iqa.training.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"hf_iqa.training.{name}":
                raise  # the recipe exists but one of its imports is missing: show that, not "unknown recipe"
            module = None
    if module is None or not callable(getattr(module, "main", None)):
        known = ", ".join(available_recipes()) or "none installed"
        raise ValueError(f"unknown training recipe {name!r}; available: {known}")
    return module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "recipe", help=f"training recipe: {', '.join(_candidates())}; `hf-iqa train RECIPE --help` lists its options"
    )
    parser.add_argument(
        "recipe_args",
        nargs=argparse.REMAINDER,
        help="--config FILE.yaml and --option value overrides (see `hf-iqa train <recipe> --help`)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        module = load_recipe(args.recipe)
    except ValueError as error:
        print(f"hf-iqa train: {error}", file=sys.stderr)
        return 2
    return int(module.main(list(args.recipe_args), prog=f"hf-iqa train {args.recipe}") or 0)
