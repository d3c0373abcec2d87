"""`hf-iqa list`: the model families this installation can load."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    import json

    import hf_iqa

    rows = []
    for name, classes in sorted(hf_iqa.registered_models().items()):
        config = classes["config"]
        rows.append({"name": name, "model_type": config.model_type, "model_class": classes["model"].__name__})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<14} {row['model_type']:<22} {row['model_class']}")
    return 0
