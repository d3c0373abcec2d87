"""`hf-iqa score --model M INPUT... [--output results.csv|.jsonl|.parquet] [--resume | --overwrite]`.

Inputs: image files, folders (recursive), `--from-list` files, `.tar` shards, or one `datasets` dataset. The
scoring itself is `hf_iqa.scoring.score_stream`: images are decoded in threads a bounded number of batches ahead of
the model, every row is written and flushed as soon as it is known, a file that cannot be read becomes an error
row and the run goes on. Usage errors (a missing input, `-b 0`, Parquet without pyarrow, a bad option) are found
before the model loads. Exit status 1 if any input failed, 2 for a usage error, 130 when interrupted; a closed
stdout (`| head`) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from hf_iqa.commands.options import add_orientation_argument, add_runtime_arguments, positive
from hf_iqa.provenance import ProvenanceError
from hf_iqa.scoring.runtime import UsageError


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
    parser.add_argument("--trust-unrecorded", action="store_true", help="with --resume: continue an output written "
                        "before hf_iqa recorded what produced a file (no <output>.meta.json)")  # fmt: skip
    parser.add_argument("--batch-size", "-b", type=positive, default=8, help="images per model call (default 8)")
    add_runtime_arguments(parser)
    add_orientation_argument(parser, "default: turned")
    parser.add_argument("--workers", type=positive, default=min(4, os.cpu_count() or 1), help="loading threads")
    parser.add_argument("--prefetch", type=positive, default=2, help="batches prepared ahead of the model (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="config option at load time, e.g. task=aesthetics or prompt_logit_scale=50 (repeatable)")  # fmt: skip
    parser.add_argument("--processor-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="image-processor option, e.g. protocol=pyiqa (repeatable; values parsed as JSON)")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code")
    parser.add_argument("--save-visualizations", metavar="DIR", help="models that score regions (Dog-IQA): save a "
                        "picture of the scored regions per image, named after the input's relative path")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from hf_iqa import scoring

    scoring.handle_sigterm()
    try:
        return _run(args)
    except (UsageError, ProvenanceError) as error:
        print(f"hf-iqa score: error: {error}", file=sys.stderr)
        return 2
    except scoring.Interrupted as stop:
        print(f"hf-iqa score: {stop}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before anything was scored (while loading the model)
        print("hf-iqa score: interrupted before scoring; nothing written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head`: the reader has all it wants
        _quiet_closed_stdout()
        return 141


def _quiet_closed_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not report the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _check_options(args: argparse.Namespace) -> None:
    if not args.paths and not args.from_list:
        raise UsageError("give image files, folders, tar shards, a dataset, or --from-list FILE")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: choose one")
    if args.resume and not args.output:
        raise UsageError("--resume needs --output (the file to continue)")
    if args.trust_unrecorded and not args.resume:
        raise UsageError("--trust-unrecorded goes with --resume")


def _run(args: argparse.Namespace) -> int:
    from hf_iqa import scoring

    _check_options(args)
    if args.no_progress:
        scoring.disable_progress_bars()
    scoring.silence_bomb_warning()
    inputs = scoring.open_inputs(args.paths, from_list=args.from_list, split=args.split,
                                 image_column=args.image_column, id_column=args.id_column)  # fmt: skip
    output = None
    if args.output:
        output = scoring.Output(args.output, inputs.key_field, resume=args.resume, overwrite=args.overwrite)
        output.check(inputs.files)
    if inputs.total == 0:
        print("hf-iqa score: no image files found in " + ", ".join(args.paths or [args.from_list]), file=sys.stderr)
        return 1
    args.exif_transpose = args.exif_transpose is not False  # a user's photos: as a viewer shows them
    model_kwargs = scoring.parse_key_values(args.model_arg, "--model-arg")
    processor_kwargs = scoring.parse_key_values(args.processor_arg, "--processor-arg")
    source = scoring.resolve_model(args.model)
    if output:
        _check_record(args, output, source, model_kwargs, processor_kwargs)  # before the model loads
    visualizations = Path(args.save_visualizations) if args.save_visualizations else None
    scorer = scoring.load_scorer(args.model, source, dtype=args.dtype, device=args.device, model_kwargs=model_kwargs,
                                 processor_kwargs=processor_kwargs, trust_remote_code=args.trust_remote_code,
                                 visualize=visualizations is not None, max_pixels=args.max_pixels,
                                 exif_transpose=args.exif_transpose)  # fmt: skip
    options = scoring.RunOptions(args.batch_size, args.workers, args.prefetch, not args.no_progress, "score")
    status = scoring.run(inputs, scorer, output, options, visualizations)
    if output and output.kept_errors:
        print(f"hf-iqa score: {output.kept_errors} earlier error row(s) in {args.output} were kept", file=sys.stderr)
        return status or 1
    return status


def _check_record(
    args: argparse.Namespace, output: Any, source: str, model_kwargs: dict, processor_kwargs: dict
) -> None:
    """What produces the rows (`hf_iqa.provenance`), checked against an output being resumed and written beside a
    new one: one file never mixes models, weights or settings."""
    from hf_iqa import provenance, scoring
    from hf_iqa.onnx.runtime import is_onnx_folder

    record = provenance.run_record(
        args.model,
        source,
        model_args=model_kwargs,
        processor_args=processor_kwargs,
        dtype="onnx (as exported)" if is_onnx_folder(source) else scoring.DTYPES[args.dtype],
        max_pixels=args.max_pixels,
        exif_transpose=args.exif_transpose,
        device=args.device,
        not_compared={"batch_size": args.batch_size},
    )
    for warning in output.attach_record(record, trust_unrecorded=args.trust_unrecorded):
        print(f"hf-iqa score: warning: {warning}", file=sys.stderr)
