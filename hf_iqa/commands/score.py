"""`hf-iqa score --model M INPUT... [--output results.csv|.jsonl|.parquet] [--resume | --overwrite]`.

Inputs: image files, folders (recursive), `--from-list` files, `.tar` shards, or one `datasets` dataset. The
scoring itself is `hf_iqa.engine.score_stream`: images are decoded in threads a bounded number of batches ahead of
the model, every row is written and flushed as soon as it is known, a file that cannot be read becomes an error
row and the run goes on. Exit status 1 if any input failed, 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from hf_iqa.engine import UsageError, add_runtime_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", help="image files, folders (recursive), .tar shards, or one dataset "
                        "(save_to_disk folder, .parquet/.arrow file, Hub dataset id)")  # fmt: skip
    parser.add_argument("--model", "-m", required=True, help="model folder, Hub id or hf_iqa model name")
    parser.add_argument("--from-list", metavar="FILE", help="a text file of paths (one per line) or a CSV with a "
                        "path column; relative paths are relative to the list's folder")  # fmt: skip
    parser.add_argument("--split", help="dataset split (datasets inputs)")
    parser.add_argument("--image-column", help="dataset or CSV-list column holding the images (default: detected)")
    parser.add_argument("--id-column", help="dataset column naming each row in the results (default: row index)")
    parser.add_argument("--output", "-o", help="write results to a .csv, .jsonl or .parquet file (default: print)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run: keep the rows already "
                        "in --output and score only the rest")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--batch-size", "-b", type=int, default=8, help="images per model call (default 8)")
    add_runtime_arguments(parser)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="loading threads")
    parser.add_argument("--prefetch", type=int, default=2, help="batches prepared ahead of the model (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="config option at load time, e.g. task=aesthetics or prompt_logit_scale=50 (repeatable)")  # fmt: skip
    parser.add_argument("--processor-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="image-processor option, e.g. protocol=pyiqa (repeatable; values parsed as JSON)")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code")
    parser.add_argument("--save-visualizations", metavar="DIR", help="models that score regions (Dog-IQA): save a "
                        "picture of the scored regions per image, named after the input's relative path")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from hf_iqa import engine

    engine.handle_sigterm()
    try:
        return _run(args)
    except UsageError as error:
        print(f"hf-iqa score: error: {error}", file=sys.stderr)
        return 2
    except engine.Interrupted as stop:
        print(f"hf-iqa score: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before anything was scored (while loading the model)
        print("hf-iqa score: interrupted before scoring; nothing written", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from hf_iqa import engine

    if not args.paths and not args.from_list:
        raise UsageError("give image files, folders, tar shards, a dataset, or --from-list FILE")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: choose one")
    if args.resume and not args.output:
        raise UsageError("--resume needs --output (the file to continue)")
    if args.no_progress:
        engine.disable_progress_bars()
    engine.apply_image_limit(args.max_pixels)
    inputs = engine.open_inputs(args.paths, from_list=args.from_list, split=args.split,
                                image_column=args.image_column, id_column=args.id_column)  # fmt: skip
    output = None
    if args.output:
        output = engine.Output(args.output, inputs.key_field, resume=args.resume, overwrite=args.overwrite)
        output.check(inputs.files)
    if inputs.total == 0:
        print("hf-iqa score: no image files found in " + ", ".join(args.paths or [args.from_list]), file=sys.stderr)
        return 1
    model_kwargs = engine.parse_key_values(args.model_arg, "--model-arg")
    processor_kwargs = engine.parse_key_values(args.processor_arg, "--processor-arg")
    visualizations = Path(args.save_visualizations) if args.save_visualizations else None
    scorer = load_scorer(args, model_kwargs, processor_kwargs, visualize=visualizations is not None)
    done = output.done_keys() if output else set()
    output.open() if output else None
    writer = output or engine.StdoutWriter()
    world, rank = engine.world_size(), engine.rank()
    items = inputs.items(lambda key: key in done or engine.escape_name(key) in done, rank, world)
    mine = (item for item in items if item.source is not None or item.error)  # skipped items carry neither
    total = None if inputs.total is None else _share(inputs.total, rank, world)
    status = _loop(args, mine, scorer, writer, inputs.key_field, visualizations, total, len(done))
    if output and output.kept_errors:
        print(f"hf-iqa score: {output.kept_errors} earlier error row(s) in {args.output} were kept", file=sys.stderr)
        return status or 1
    return status


def load_scorer(args: argparse.Namespace, model_kwargs: dict, processor_kwargs: dict, visualize: bool) -> Any:
    """The object the loop drives: an onnxruntime `OnnxScorer` for an `hf-iqa export onnx` folder (no torch
    needed), otherwise a `PipelineScorer` around `hf_iqa.pipeline`."""
    from hf_iqa import engine
    from hf_iqa.onnx import OnnxScorer, is_onnx_folder

    if is_onnx_folder(args.model):
        if model_kwargs or visualize:
            raise UsageError("an ONNX export takes no --model-arg or --save-visualizations (set them at export)")
        try:
            return OnnxScorer(args.model, processor_kwargs=processor_kwargs)
        except (ImportError, ValueError, TypeError) as error:
            raise UsageError(f"cannot load {args.model}: {engine.root_cause(error)}") from None
    pipe = engine.load_pipeline(args.model, dtype=args.dtype, device=args.device, model_kwargs=model_kwargs,
                                processor_kwargs=processor_kwargs, trust_remote_code=args.trust_remote_code)  # fmt: skip
    return engine.PipelineScorer(pipe, visualize=visualize)


def _share(total: int, rank: int, world: int) -> int:
    return len(range(rank, total, world))


def _loop(args, items, scorer, writer, key_field, visualizations, total, resumed) -> int:
    from tqdm.auto import tqdm

    from hf_iqa import engine

    if total is not None:
        total = max(0, total - (resumed if engine.world_size() == 1 else 0))
    scored = failed = 0
    complete = False
    progress = tqdm(total=total, unit="img", disable=args.no_progress or engine.rank() != 0, file=sys.stderr)
    try:
        for result in engine.score_stream(items, scorer, batch_size=args.batch_size, workers=args.workers,
                                          prefetch_batches=args.prefetch):  # fmt: skip
            row = {key_field: result.item.key}
            if result.error is not None:
                row["error"] = result.error
                failed += 1
            else:
                output = dict(result.output)
                picture = output.pop("visualization", None)
                if picture is not None and visualizations is not None:
                    row_path = visualizations / f"{engine.visual_name(result.item.key)}_regions.png"
                    row_path.parent.mkdir(parents=True, exist_ok=True)
                    picture.save(row_path)
                    output["visualization"] = str(row_path)
                row.update(output)
            writer.write(row, result.item.index)
            scored += 1
            progress.update(1)
            if scored % args.batch_size == 0:
                writer.flush()
        complete = True
    except KeyboardInterrupt:
        raise engine.Interrupted(scored, total) from None
    finally:
        progress.close()
        writer.close(complete)
    if resumed:
        print(f"hf-iqa score: {resumed} image(s) already in {args.output} were kept", file=sys.stderr)
    if failed:
        print(f"hf-iqa score: {failed} of {scored} file(s) could not be scored", file=sys.stderr)
    return 1 if failed else 0
