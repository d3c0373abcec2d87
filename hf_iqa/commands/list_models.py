"""`hf-iqa list`: model names hf_iqa knows, with score range, licence and source, and their model families.

Reads only the zoo table: no torch, no transformers, so it answers at once."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    from hf_iqa.zoo import list_models

    models = list_models()
    families = sorted({entry["family"] for entry in models})
    if args.json:
        print(json.dumps({"models": models, "families": families}, indent=2))
        return 0
    print(f"{'name':<18} {'score range':<12} {'weights licence':<34} description")
    for entry in models:
        low, high = entry["score_range"]
        print(
            f"{entry['name']:<18} {f'{low:g}-{high:g}':<12} {entry['weights_license'][:33]:<34} {entry['description']}"
        )
    print("\nmodel families: " + ", ".join(families))
    return 0
