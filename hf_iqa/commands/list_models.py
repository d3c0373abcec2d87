"""`hf-iqa list`: model names hf_iqa knows, with their aliases, score range, full licence and source, and their
model families.

One block per model, wrapped to the terminal width (at most 119 columns), so nothing is cut. Reads only the zoo
table: no torch, no transformers, so it answers at once."""

from __future__ import annotations

import argparse
import shutil
import textwrap

MAX_WIDTH = 119


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table (aliases included)")


def format_entry(entry: dict, width: int) -> list[str]:
    """A model's block: name, aliases and score range on one line, then licence and description, wrapped."""
    low, high = entry["score_range"]
    head = f"{entry['name']}  (scores {low:g}-{high:g})"
    if entry["aliases"]:
        head += "  aliases: " + ", ".join(entry["aliases"])
    lines = textwrap.wrap(head, width, subsequent_indent="    ")
    for label, text in (("licence", entry["weights_license"]), ("", entry["description"])):
        prefix = f"    {label}: " if label else "    "
        lines += textwrap.wrap(text, width, initial_indent=prefix, subsequent_indent=" " * len(prefix))
    return lines


def run(args: argparse.Namespace) -> int:
    import json

    from hf_iqa.zoo import list_models

    models = list_models()
    families = sorted({entry["family"] for entry in models})
    if args.json:
        print(json.dumps({"models": models, "families": families}, indent=2))
        return 0
    width = min(MAX_WIDTH, shutil.get_terminal_size((MAX_WIDTH, 24)).columns)
    for entry in models:
        print("\n".join(format_entry(entry, width)))
    print("\nmodel families: " + ", ".join(families))
    return 0
