"""Command-line words shared by the commands that load a model: `--dtype`, `--device`, `--max-pixels`,
`--exif-transpose`. Light to import (`hf-iqa demo --help` reads nothing heavier than this)."""

from __future__ import annotations

import argparse


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """`--dtype`, `--device` and `--max-pixels` with the same words and defaults in every command."""
    from hf_iqa.scoring.runtime import DEFAULT_DTYPE, DEVICE_HELP, DTYPES

    parser.add_argument("--dtype", default=DEFAULT_DTYPE, choices=sorted(DTYPES),
                        help="model precision; auto (default) = the model's released precision: as saved in the "
                        "checkpoint (float32 for the CLIP models), Dog-IQA's MLLM in float16 on GPU as released")  # fmt: skip
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="largest image accepted, width x height as its file declares it (default 89478485, "
                        "Pillow's bomb threshold; 0: no limit); bigger files are error rows")  # fmt: skip


def add_orientation_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """`--exif-transpose` / `--no-exif-transpose`: whether images are turned by their EXIF orientation tag."""
    parser.add_argument("--exif-transpose", action=argparse.BooleanOptionalAction, default=None,
                        help="turn each image as its EXIF orientation tag says (as a photo viewer shows it), or "
                        f"not (the stored pixels, as the benchmarks' official evaluations read them); {default}")  # fmt: skip


def positive(text: str) -> int:
    """An argparse type for counts that must be at least 1 (`-b 0` is refused before anything loads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
