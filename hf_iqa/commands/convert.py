"""`hf-iqa convert <method> ...`: runs `hf_iqa.converters.<method>.main`, the same code as
`python conversion/convert_<method>.py`. A checkpoint that cannot be loaded or converted, or an output folder
the converter may not write into, is one line on stderr and exit status 2. Imports no torch until a converter runs
(`hf-iqa convert --help` stays fast)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import hf_iqa.converters


def available_methods() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(hf_iqa.converters.__path__):
        if info.name in ("common",) or info.name.startswith(("reference", "_")):
            continue
        names.append(info.name)
    return sorted(names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=available_methods(), help="which model family to convert")
    parser.add_argument("converter_args", nargs=argparse.REMAINDER, help="arguments of the method's converter")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"hf_iqa.converters.{args.method}")
    return int(module.main(args.converter_args) or 0)
