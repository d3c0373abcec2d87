"""`hf-iqa score --model M PATH_OR_FOLDER... [--output results.csv|.jsonl]`.

Decoding and preprocessing run in a thread pool ahead of the model, so the model is rarely idle. A file that
cannot be read becomes an error row and the run goes on; every row is written (and flushed) as soon as it is
known, so an interrupted run loses nothing already scored. Exit status 1 if any file failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
          "fp16": "float16"}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--model", "-m", required=True, help="model folder, Hub id or hf_iqa model name")
    parser.add_argument("--output", "-o", help="write results to this .csv or .jsonl file (default: print)")
    parser.add_argument("--batch-size", "-b", type=int, default=8, help="images per model call (default 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model precision")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="loading threads")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model/config option at load time, e.g. task=aesthetics or prompt_logit_scale=50 (repeatable)",
    )
    parser.add_argument(
        "--save-visualizations",
        metavar="DIR",
        help="models that score regions (Dog-IQA): save <name>_regions.png pictures of the scored regions here",
    )
    parser.add_argument(
        "--processor-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="image-processor option, e.g. protocol=pyiqa (repeatable; values parsed as JSON when possible)",
    )


def parse_key_values(items: list[str]) -> dict[str, Any]:
    options = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"hf-iqa: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def flatten(result: dict[str, Any]) -> dict[str, Any]:
    """{"scene_probs": {"animal": 0.1}} -> {"scene_probs.animal": 0.1}; lists as JSON text (CSV cells)."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{label}": v for label, v in value.items()})
        elif isinstance(value, list):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


class ResultWriter:
    """Writes one row per image as it comes: CSV, JSONL, or stdout. The CSV header is taken from the first
    scored image (error rows that come earlier wait for it)."""

    def __init__(self, path: str | None):
        self.path = path
        self.csv = None
        self.waiting: list[dict[str, Any]] = []
        self.format = "print"
        self.handle: TextIO = sys.stdout
        if path:
            suffix = Path(path).suffix.lower()
            if suffix not in (".csv", ".jsonl", ".json"):
                raise SystemExit(f"hf-iqa score: --output must end in .csv or .jsonl, got {path!r}")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(path, "w", newline="", encoding="utf-8")
            self.format = "csv" if suffix == ".csv" else "jsonl"

    def _write_csv(self, row: dict[str, Any]) -> None:
        if self.csv is None:
            if row.get("error"):
                self.waiting.append(row)
                return
            columns = ["path", *(k for k in flatten(row) if k not in ("path", "error")), "error"]
            self.csv = csv.DictWriter(self.handle, fieldnames=columns, extrasaction="ignore")
            self.csv.writeheader()
        for waiting in self.waiting:
            self.csv.writerow(waiting)
        self.waiting = []
        self.csv.writerow(flatten(row))

    def write(self, row: dict[str, Any]) -> None:
        if self.format == "csv":
            self._write_csv(row)
        elif self.format == "jsonl":
            self.handle.write(json.dumps(row) + "\n")
        elif row.get("error"):
            print(f"{row['path']}\tERROR\t{row['error']}", file=sys.stderr)
        else:
            print(f"{row['path']}\t{row['score']:.6f}")
        self.handle.flush()

    def close(self) -> None:
        if self.format == "csv" and self.waiting:  # nothing could be scored: header for the error rows only
            self.csv = csv.DictWriter(self.handle, fieldnames=["path", "score", "error"], extrasaction="ignore")
            self.csv.writeheader()
            self.csv.writerows(self.waiting)
        if self.handle is not sys.stdout:
            self.handle.close()


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-image model inputs: tensors along dim 0, ragged lists concatenated."""
    import torch

    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.cat(values, dim=0)
        elif isinstance(values[0], list):
            batch[key] = [v for value in values for v in value]
        else:
            batch[key] = values
    return batch


def score_files(
    pipe, files: list[Path], batch_size: int, workers: int, visualizations: Path | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one result row per file, in input order; decoding/preprocessing overlaps the model."""
    from hf_iqa.io import ImageLoadError
    from hf_iqa.pipeline import describe_output

    def prepare(path: Path) -> tuple[Path, dict[str, Any] | None, str | None]:
        try:
            return path, pipe.preprocess(str(path)), None
        except ImageLoadError as error:
            return path, None, error.problem
        except Exception as error:  # a processor rejecting an image must not stop the run
            return path, None, f"{type(error).__name__}: {error}"

    def run_batch(batch: list[tuple[Path, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        try:
            outputs = pipe.forward(collate([inputs for _, inputs in batch]), return_visualization=bool(visualizations))
            for index, (path, _) in enumerate(batch):
                row = {"path": str(path), **describe_output(outputs, index, pipe.model.config)}
                if visualizations:
                    picture = visualizations / f"{path.stem}_regions.png"
                    outputs["visualization"][index].save(picture)
                    row["visualization"] = str(picture)
                yield row
        except Exception as error:
            if len(batch) == 1:
                yield {"path": str(batch[0][0]), "error": f"{type(error).__name__}: {error}"}
                return
            for item in batch:  # isolate the image that broke the batch
                yield from run_batch([item])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list[tuple[Path, dict[str, Any]]] = []
        for path, inputs, error in pool.map(prepare, files):  # map keeps order and prefetches
            if error is not None:
                yield from run_batch(pending)
                pending = []
                yield {"path": str(path), "error": error}
                continue
            pending.append((path, inputs))
            if len(pending) >= batch_size:
                yield from run_batch(pending)
                pending = []
        if pending:
            yield from run_batch(pending)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    import hf_iqa
    from hf_iqa.io import find_images

    files = find_images(args.paths)
    if not files:
        print("hf-iqa score: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    device = args.device
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        pipe = hf_iqa.pipeline(
            model=args.model,
            device=device,
            dtype=getattr(torch, DTYPES[args.dtype]),
            processor_kwargs=parse_key_values(args.processor_arg),
            model_kwargs=parse_key_values(args.model_arg),
        )
    except (ValueError, TypeError) as error:  # e.g. a --model-arg / --processor-arg the model rejects
        print(f"hf-iqa score: error: cannot load {args.model}: {error}", file=sys.stderr)
        return 2
    visualizations = Path(args.save_visualizations) if args.save_visualizations else None
    if visualizations:
        visualizations.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(args.output)
    failed = 0
    try:
        progress = tqdm(total=len(files), unit="img", disable=args.no_progress, file=sys.stderr)
        for row in score_files(pipe, files, args.batch_size, args.workers, visualizations):
            failed += bool(row.get("error"))
            writer.write(row)
            progress.update(1)
        progress.close()
    finally:
        writer.close()
    if failed:
        print(f"hf-iqa score: {failed} of {len(files)} file(s) could not be scored", file=sys.stderr)
    return 1 if failed else 0
