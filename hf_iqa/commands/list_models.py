"""`hf-iqa list`: model names hf_iqa knows, with score range, licence and source, and the installed families."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    import hf_iqa

    models = hf_iqa.list_models()
    if args.json:
        print(json.dumps({"models": models, "families": sorted(hf_iqa.registered_models())}, indent=2))
        return 0
    print(f"{'name':<18} {'score range':<12} {'weights licence':<34} description")
    for entry in models:
        low, high = entry["score_range"]
        print(f"{entry['name']:<18} {f'{low:g}-{high:g}':<12} {entry['weights_license'][:33]:<34} {entry['description']}")
    print("\ninstalled model families: " + ", ".join(sorted(hf_iqa.registered_models())))
    return 0
