"""`hf-iqa benchmark`: the command-line words of `hf_iqa.evaluation.evaluate_on_datasets`.

hf-iqa benchmark --model <hub-id> ./my-model --dataset koniq10k livec --data-root ~/data --split test
ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m hf_iqa.commands.benchmark ...   # or accelerate launch
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hf_iqa.commands.options import add_orientation_argument, add_runtime_arguments, positive
from hf_iqa.evaluation import BenchmarkError, combined_table, evaluate_on_datasets
from hf_iqa.io import ImageLoadError
from hf_iqa.metrics import MetricInputError
from hf_iqa.scoring import Interrupted, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="+", required=True, help="Hub ids or local folders of hf_iqa models")
    parser.add_argument("--dataset", nargs="+", required=True, help="benchmark names (see hf_iqa.data.list_datasets) or 'folder'")  # fmt: skip
    parser.add_argument("--data-root", nargs="+", required=True, help="one folder for all datasets (their parent or the dataset folder), one per dataset, or NAME=PATH")  # fmt: skip
    parser.add_argument("--split", help="train, validation, test or all (every image: zero-shot protocol); default: all for a folder dataset, test for named benchmarks")  # fmt: skip
    parser.add_argument("--scores-file", help="folder dataset: the CSV/TSV/JSON(L) file of image paths and scores (default: scores.csv, metadata.csv... in --data-root)")  # fmt: skip
    parser.add_argument("--split-scheme", choices=("official", "random", "liqe", "file"), help="default: official where it exists, else seeded random")  # fmt: skip
    parser.add_argument("--split-index", type=int, default=1, help="which of the random/LIQE splits (1..10)")
    parser.add_argument("--split-dir", help="LIQE's IQA_Database folder (for --split-scheme liqe)")
    parser.add_argument("--split-file", help="JSON/CSV of image ids per split (for --split-scheme file)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the random splits")
    parser.add_argument("--batch-size", "-b", type=positive, default=8)
    add_runtime_arguments(parser)
    add_orientation_argument(parser, "default: as each dataset's official evaluation reads it (named benchmarks: "
                             "not turned; a folder dataset: turned)")  # fmt: skip
    parser.add_argument("--output-dir", default="benchmark_results")
    parser.add_argument("--fit", default="logistic4", choices=("logistic4", "logistic5", "none"), help="mapping before PLCC/RMSE (LIQE: logistic4; pyiqa, Dog-IQA: none)")  # fmt: skip
    parser.add_argument("--resize-short-side", type=int, help="resize every image to this short side first (e.g. SPAQ protocols)")  # fmt: skip
    parser.add_argument("--num-workers", type=int, default=4, help="threads decoding images ahead of the model")
    parser.add_argument("--update-card", action="store_true", help="write the results into the model card (local model folders)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="discard earlier predictions instead of resuming")
    parser.add_argument("--strict", action="store_true", help="fail when an image is missing or cannot be scored (default: error rows, counted, metrics on the rest)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--trust-remote-code", action="store_true")


def run(args: argparse.Namespace) -> int:
    from hf_iqa import scoring
    from hf_iqa.data import DatasetLayoutError

    scoring.handle_sigterm()
    split_options = {"split_scheme": args.split_scheme, "split_index": args.split_index, "split_dir": args.split_dir,
                     "split_file": args.split_file, "seed": args.seed, "scores_file": args.scores_file}  # fmt: skip
    if args.scores_file and any(name != "folder" for name in args.dataset):
        print("hf-iqa benchmark: error: --scores-file is for --dataset folder", file=sys.stderr)
        return 2
    try:
        if args.no_progress:
            scoring.disable_progress_bars()
        scoring.silence_bomb_warning()
        device = scoring.resolve_device(args.device)
        results = evaluate_on_datasets(
            args.model,
            args.dataset,
            args.data_root,
            max_pixels=args.max_pixels,
            exif_transpose=args.exif_transpose,
            split=args.split,
            split_options={k: v for k, v in split_options.items() if v is not None},
            batch_size=args.batch_size,
            dtype=args.dtype,
            device=device,
            output_dir=args.output_dir,
            fit=None if args.fit == "none" else args.fit,
            resize_short_side=args.resize_short_side,
            num_workers=args.num_workers,
            update_card=args.update_card,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            trust_remote_code=args.trust_remote_code,
            strict=args.strict,
        )
    except UsageError as error:
        print(f"hf-iqa benchmark: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"hf-iqa benchmark: interrupted after {stop.scored} of {stop.total} images; rerun the same command to "
              "resume", file=sys.stderr)  # fmt: skip
        return 130
    except KeyboardInterrupt:
        print("hf-iqa benchmark: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (DatasetLayoutError, ImageLoadError, BenchmarkError, MetricInputError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"hf-iqa benchmark: error: {message}", file=sys.stderr)
        return 1
    if results and int(os.environ.get("RANK", "0")) == 0:
        print(combined_table(results))
        print(f"Results written to {Path(args.output_dir).resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-iqa benchmark", description="evaluate hf_iqa models on IQA benchmarks")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
