"""`hf-iqa benchmark`: evaluate hf_iqa models on IQA benchmarks (accuracy) and write paper-style tables.

    hf-iqa benchmark --model <hub-id> ./my-model --dataset koniq10k livec --data-root ~/data --split test
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m hf_iqa.evaluation ...   # or accelerate launch

Glossary: in hf_iqa, a *benchmark* is what it is in the IQA literature, a labelled dataset (KonIQ-10k, LIVE...)
and evaluating a model's accuracy on it (SRCC/PLCC...): this module, `hf-iqa benchmark` and `hf_iqa.data`. Speed and
memory measurements are not benchmarks here: they are the scripts in `bench/`.

Models are loaded with `AutoModel`/`AutoImageProcessor` and used only through the output contract of
`hf_iqa.models` (`scores`, higher is better); images are scored by `hf_iqa.engine.score_stream`, the loop
`hf-iqa score` uses. Under torchrun / `accelerate launch` every process scores its own shard of the images still
to do (`hf_iqa.engine.shard`); predictions are appended to `partial/rank<k>.csv` after every batch, so an
interrupted run resumes where it stopped, and rank 0 merges the gathered shards (each image exactly once).
An image that cannot be read or scored is an error row (counted in the tables and `metrics.json`; the metrics use
the other images) unless `--strict` asks to fail.

Output (`--output-dir`, default `benchmark_results/`):

    <model>/<dataset>-<split>/predictions.csv  metrics.json  table.md  scatter.png  run.json
    results.md  results.json        one combined table for every model x dataset of the call
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hf_iqa.engine import Interrupted, Item, UsageError, add_runtime_arguments
from hf_iqa.io import ImageLoadError
from hf_iqa.metrics import MetricInputError, iqa_correlations
from hf_iqa.reports import (  # noqa: F401 (the report half moved to hf_iqa.reports; these names stay importable here)
    CARD_END,
    CARD_START,
    FIT_LABELS,
    combined_table,
    display_name,
    markdown_table,
    oriented_labels,
    scatter_plot,
    significance_for_results,
    update_model_card,
)


class BenchmarkError(RuntimeError):
    """A benchmark that cannot run as asked (inconsistent output folder, model breaking the output contract...)."""


# ---------------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------------


class SingleProcess:
    """The subset of `accelerate.PartialState` the benchmark uses, for a plain single-process run."""

    process_index = 0
    num_processes = 1
    is_main_process = True

    def __init__(self):
        from hf_iqa.engine import resolve_device

        self.device = resolve_device("auto")

    def wait_for_everyone(self) -> None:
        pass

    @contextlib.contextmanager
    def main_process_first(self) -> Iterator[None]:
        yield


def process_state() -> Any:
    """`accelerate.PartialState()` under torchrun / `accelerate launch` (WORLD_SIZE > 1), else a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SingleProcess()
    import torch

    try:
        from accelerate import PartialState
    except ImportError:
        raise BenchmarkError(
            "several processes were launched (WORLD_SIZE > 1) but accelerate is not installed: pip install accelerate"
        ) from None
    # PartialState only joins a CPU process group (gloo) when told to: do so without CUDA or when asked to.
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=use_cpu)
    if state.num_processes != int(os.environ["WORLD_SIZE"]):
        raise BenchmarkError(
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but accelerate set up {state.num_processes} process(es); "
            "on CPU launch with ACCELERATE_USE_CPU=true torchrun --nproc_per_node N ..."
        )
    return state


def gather(state: Any, items: list) -> list:
    """Concatenate every process's `items` on every process (rank order)."""
    if state.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return list(gather_object(items))


# ---------------------------------------------------------------------------------------------------------------
# Model and images
# ---------------------------------------------------------------------------------------------------------------


def load_model(model_id: str, dtype: str = "float32", device: Any = None, trust_remote_code: bool = False):
    """(model, image processor) through the Auto classes, in eval mode on `device`. `model_id` may be a zoo name
    (`hf_iqa.list_models()`), a folder or a Hub id; `dtype` a word of `hf_iqa.engine.DTYPES`."""
    from transformers import AutoImageProcessor, AutoModel

    from hf_iqa.engine import torch_dtype
    from hf_iqa.zoo import resolve

    model_id = resolve(model_id)
    model = AutoModel.from_pretrained(model_id, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    model.eval()
    if device is not None:
        model.to(device)
    return model, processor


def scorer_for(model: Any, processor: Any, resize_short_side: int | None = None) -> Any:
    """The engine's scorer for a loaded model: the image-quality pipeline's preprocess and forward."""
    import hf_iqa
    from hf_iqa.engine import PipelineScorer

    pipe = hf_iqa.pipeline(model=model, image_processor=processor, device=model.device)
    return PipelineScorer(pipe, resize_short_side=resize_short_side)


# ---------------------------------------------------------------------------------------------------------------
# Streaming predictions to disk and resuming
# ---------------------------------------------------------------------------------------------------------------


def _read_predictions(run_dir: Path) -> dict[int, tuple[str, float | None, str | None]]:
    """Predictions already on disk (final file and partial shards): index -> (image_id, score, error). A last line
    cut short by an interruption (no newline yet) is ignored, so its image is scored again."""
    found: dict[int, tuple[str, float | None, str | None]] = {}
    files = [run_dir / "predictions.csv", *sorted((run_dir / "partial").glob("rank*.csv"))]
    for path in files:
        if not path.is_file():
            continue
        lines = path.read_text().splitlines(keepends=True)
        complete = [line for line in lines if line.endswith("\n")]
        for record in csv.DictReader(complete):
            try:
                error = record.get("error") or None
                score = None if error else float(record["prediction"])
                found[int(record["index"])] = (record["image_id"], score, error)
            except (KeyError, TypeError, ValueError):
                continue
    return found


def _manifest(model_id: str, key: str, split: str, image_ids: list[str], options: dict) -> dict:
    digest = hashlib.sha1("\n".join(image_ids).encode()).hexdigest()
    return {"model": model_id, "dataset": key, "split": split, "num_images": len(image_ids), "image_ids_sha1": digest,
            **options}  # fmt: skip


def _prepare_run_dir(run_dir: Path, manifest: dict, overwrite: bool) -> None:
    """Main process only: start fresh (`overwrite`) or check that earlier files belong to the same run."""
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "partial").mkdir(parents=True, exist_ok=True)
    path = run_dir / "run.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        differences = {k: (previous.get(k), v) for k, v in manifest.items() if previous.get(k) != v}
        if differences:
            raise BenchmarkError(
                f"{run_dir} holds predictions of a different run ({differences}, as (before, now)); "
                "pass --overwrite to replace them or choose another --output-dir"
            )
    else:
        path.write_text(json.dumps(manifest, indent=2) + "\n")


def score_shard(
    scorer: Any,
    paths: list[str],
    indices: list[int],
    image_ids: list[str],
    partial_file: Path,
    batch_size: int,
    num_workers: int = 4,
    progress: bool = True,
    description: str = "",
) -> list[tuple[int, float | None, str | None]]:
    """Score `indices` through the engine, appending `index,image_id,prediction,error` to `partial_file` after each
    batch. An image that fails is an error row; Ctrl-C raises `Interrupted` with the count scored."""
    from tqdm.auto import tqdm

    from hf_iqa.engine import score_stream

    results: list[tuple[int, float | None, str | None]] = []
    new_file = not partial_file.exists() or partial_file.stat().st_size == 0
    if not new_file:
        content = partial_file.read_bytes()
        if not content.endswith(b"\n"):  # drop a line cut short by an interruption (its image is scored again)
            partial_file.write_bytes(content[: content.rfind(b"\n") + 1])
    items = (Item(paths[i], source=paths[i], index=i) for i in indices)
    with (
        open(partial_file, "a", newline="") as handle,
        tqdm(total=len(indices), desc=description, unit="img", disable=not progress) as bar,
    ):
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(["index", "image_id", "prediction", "error"])
        try:
            stream = score_stream(items, scorer, batch_size=batch_size, workers=num_workers)
            for number, result in enumerate(stream, 1):
                index = result.item.index
                score = None if result.error is not None else float(result.output["score"])
                writer.writerow([index, image_ids[index], "" if score is None else repr(score), result.error or ""])
                results.append((index, score, result.error))
                bar.update(1)
                if number % batch_size == 0:
                    handle.flush()
        except KeyboardInterrupt:
            handle.flush()
            raise Interrupted(len(results), len(indices)) from None
    return results


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------


def _slug(model_id: str) -> str:
    path = Path(model_id)
    name = path.name if path.is_dir() else model_id.replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def _data_roots(datasets: Sequence[str], data_root: str | os.PathLike | Sequence) -> list[str]:
    """The root of each dataset, in order: one folder for all (a parent folder or the dataset folder), one per
    dataset, or `name=path` items."""
    roots = [data_root] if isinstance(data_root, (str, os.PathLike)) else list(data_root)
    named = dict(str(r).split("=", 1) for r in roots if "=" in str(r) and not Path(str(r)).exists())
    plain = [str(r) for r in roots if str(r).split("=", 1)[0] not in named]
    resolved = []
    for index, name in enumerate(datasets):
        if name in named:
            resolved.append(named[name])
        elif len(plain) == 1:
            resolved.append(plain[0])
        elif len(plain) == len(datasets):
            resolved.append(plain[index])
        else:
            raise BenchmarkError(
                f"--data-root: give one folder for all datasets, one per dataset ({len(datasets)}), or NAME=PATH items; "
                f"got {len(roots)}"
            )
    return resolved


@dataclass(frozen=True)
class EvaluationOptions:
    """How each (model, dataset) run of one `evaluate_on_datasets` call scores and reports."""

    batch_size: int = 8
    dtype: str = "float32"
    fit: str | None = "logistic4"
    resize_short_side: int | None = None
    num_workers: int = 4
    overwrite: bool = False
    progress: bool = True
    strict: bool = False


def evaluate_on_datasets(
    models: Sequence[str],
    datasets: Sequence[str],
    data_root: str | os.PathLike | Sequence[str],
    *,
    split: str | None = None,
    split_options: dict | None = None,
    batch_size: int = 8,
    dtype: str = "float32",
    device: str | None = None,
    output_dir: str | os.PathLike = "benchmark_results",
    fit: str | None = "logistic4",
    resize_short_side: int | None = None,
    num_workers: int = 4,
    update_card: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    trust_remote_code: bool = False,
    strict: bool = False,
) -> list[dict]:
    """Score every model on every dataset; returns one metrics dict per (model, dataset) on every process (only the
    main process writes files). `split="all"` scores every image of a dataset (zero-shot protocol; the default for a
    user's `folder` dataset, "test" for named benchmarks); unreadable or missing images are error rows counted in
    `num_errors` (metrics on the rest) unless `strict`;
    `split_options` go to the loaders (`split_scheme`, `split_index`, `split_dir`, `cache_dir`, ...)."""
    if batch_size < 1:
        raise BenchmarkError(f"batch_size must be >= 1, got {batch_size}")
    options = EvaluationOptions(batch_size, dtype, fit, resize_short_side, num_workers, overwrite, progress, strict)
    state = process_state()
    device = device or state.device
    output_dir = Path(output_dir)
    loaded = _load_datasets(state, datasets, data_root, split, split_options, strict)
    results = []
    for model_id in models:
        model, processor = load_model(model_id, dtype, device, trust_remote_code)
        scorer = scorer_for(model, processor, resize_short_side)
        for name, dataset_split, dataset in loaded:
            results.append(_evaluate_one(state, scorer, model_id, name, dataset_split, dataset, output_dir, options))
        del model
    if state.is_main_process and results:
        _write_summary(output_dir, results, models if update_card else ())
    return results


def _load_datasets(state, datasets, data_root, split, split_options, strict) -> list[tuple[str, str, Any]]:
    """(name, split, dataset) per requested dataset; one process fills the Arrow cache, the others read it."""
    from hf_iqa.data import canonical_name, load_benchmark

    roots = _data_roots(datasets, data_root)
    split_options = dict(split_options or {})
    split_options.setdefault("missing_images", "error" if strict else "keep")  # missing files become error rows
    loaded = []
    for name, root in zip(datasets, roots):
        chosen = split or ("all" if canonical_name(name) == "folder" else "test")  # a user's folder: every image
        with state.main_process_first():
            loaded.append((name, chosen, load_benchmark(name, root, chosen, **split_options)))
    return loaded


def _evaluate_one(state, scorer, model_id, name, split, dataset, output_dir: Path, options) -> dict:
    """Score one model on one dataset split (resuming earlier predictions) and return its metrics record."""
    from hf_iqa.data import dataset_metadata

    meta = dataset_metadata(dataset)
    key = meta.get("key", name)
    folder = _slug(meta.get("name", key)) if key == "folder" else key  # several user folders may be scored
    run_dir = output_dir / _slug(model_id) / f"{folder}-{split}"
    records = dataset.cast_column("image", _undecoded_image())
    paths = [item["path"] for item in records["image"]]
    image_ids, mos = list(records["image_id"]), np.asarray(records["mos"], dtype=np.float64)
    manifest_options = {
        "dtype": options.dtype,
        "resize_short_side": options.resize_short_side,
    }  # what predictions depend on
    if state.is_main_process:
        _prepare_run_dir(run_dir, _manifest(model_id, key, split, image_ids, manifest_options), options.overwrite)
    state.wait_for_everyone()
    done = _read_predictions(run_dir)
    state.wait_for_everyone()  # everyone has read before anyone appends
    started = time.perf_counter()
    gathered = _score_remaining(state, scorer, model_id, key, run_dir, paths, image_ids, done, options)
    seconds = time.perf_counter() - started
    predictions, errors = _merge_predictions(key, paths, done, gathered, options.strict)
    scored = np.array([i not in errors for i in range(len(paths))], dtype=bool)
    labels, orientation = oriented_labels(mos, meta)
    result = {
        "model": model_id,
        "dataset": key,
        "dataset_name": meta.get("name", key),
        "split": split,
        "split_scheme": meta.get("split_scheme"),
        "num_images": len(paths),
        "num_errors": len(errors),
        "errors": {image_ids[i]: error for i, error in errors.items()},
        **iqa_correlations(predictions[scored], labels[scored], fit=options.fit),
        "fit_requested": options.fit,
        "label_column": meta.get("label_column"),
        "mos_range": meta.get("mos_range"),
        "higher_is_better": meta.get("higher_is_better"),
        "label_orientation": orientation,
        "dtype": options.dtype,
        "batch_size": options.batch_size,
        "resize_short_side": options.resize_short_side,
        "num_processes": state.num_processes,
        "images_scored_now": len(gathered),
        "images_resumed": len(done),
        "seconds": round(seconds, 3),
        "output_dir": str(run_dir),
    }
    if state.is_main_process:
        _write_run(run_dir, result, paths, image_ids, mos, predictions, labels, errors)
    state.wait_for_everyone()
    return result


def _score_remaining(state, scorer, model_id, key, run_dir, paths, image_ids, done, options) -> list:
    """This process's shard of the images without a prediction yet, scored; then every process's, gathered."""
    from hf_iqa.engine import shard

    remaining = (Item(paths[i], index=i) for i in range(len(paths)) if i not in done)
    mine = [item.index for item in shard(remaining, state.process_index, state.num_processes)]
    try:
        new = score_shard(
            scorer, paths, mine, image_ids,
            run_dir / "partial" / f"rank{state.process_index}.csv",
            options.batch_size, options.num_workers,
            progress=options.progress and state.is_main_process,
            description=f"{_slug(model_id)} on {key} ({state.num_processes} process(es))",
        )  # fmt: skip
    except Interrupted as stop:
        raise Interrupted(len(done) + stop.scored, len(paths)) from None
    return gather(state, new)


def _merge_predictions(key, paths, done, gathered, strict) -> tuple[np.ndarray, dict[int, str]]:
    """Resumed and new predictions in dataset order (NaN for error rows) and the errors by index."""
    merged = {index: (score, error) for index, (_, score, error) in done.items()}
    merged |= {index: (score, error) for index, score, error in gathered}
    missing = [i for i in range(len(paths)) if i not in merged]
    if missing:
        raise BenchmarkError(f"{len(missing)} images of {key} have no prediction after gathering: {missing[:5]}")
    errors = {i: merged[i][1] for i in range(len(paths)) if merged[i][1] is not None}
    if errors and strict:
        examples = "; ".join(f"{paths[i]}: {error}" for i, error in list(errors.items())[:3])
        raise BenchmarkError(f"{len(errors)} image(s) of {key} could not be scored (--strict): {examples}")
    predictions = np.array([np.nan if merged[i][0] is None else merged[i][0] for i in range(len(paths))])
    return predictions, errors


def _write_summary(output_dir: Path, results: list[dict], card_models: Sequence[str]) -> None:
    """results.json (`{"results": [...], "significance": [...]}`) and results.md for the whole call, with a paired
    test per dataset that several models scored (`hf_iqa.reports.significance_for_results`, from each run's
    predictions.csv); the results into the cards of `card_models` (local folders)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    significance = significance_for_results(results)  # paired tests where several models scored a dataset
    summary = {"results": results, "significance": significance}
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output_dir / "results.md").write_text(combined_table(results, significance))
    for model_id in card_models:
        if Path(model_id).is_dir():
            update_model_card(model_id, [r for r in results if r["model"] == model_id])
        else:
            warnings.warn(f"--update-card only edits local model folders; {model_id!r} is not one", stacklevel=3)


def _undecoded_image():
    from datasets import Image

    return Image(decode=False)


def _write_run(run_dir, result, paths, image_ids, mos, predictions, labels, errors) -> None:
    with open(run_dir / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "image_id", "image", "mos", "prediction", "error"])
        for index, (path, image_id, label, score) in enumerate(zip(paths, image_ids, mos, predictions)):
            prediction = "" if index in errors else repr(float(score))
            writer.writerow([index, image_id, path, repr(float(label)), prediction, errors.get(index, "")])
    shutil.rmtree(run_dir / "partial", ignore_errors=True)
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (run_dir / "table.md").write_text(markdown_table([result]))
    scored = np.isfinite(predictions)
    scatter_plot(run_dir / "scatter.png", predictions[scored], labels[scored], result)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


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
    parser.add_argument("--batch-size", type=int, default=8)
    add_runtime_arguments(parser)
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
    from hf_iqa import engine
    from hf_iqa.data import DatasetLayoutError

    engine.handle_sigterm()
    split_options = {"split_scheme": args.split_scheme, "split_index": args.split_index, "split_dir": args.split_dir,
                     "split_file": args.split_file, "seed": args.seed, "scores_file": args.scores_file}  # fmt: skip
    if args.scores_file and any(name != "folder" for name in args.dataset):
        print("hf-iqa benchmark: error: --scores-file is for --dataset folder", file=sys.stderr)
        return 2
    try:
        if args.no_progress:
            engine.disable_progress_bars()
        engine.apply_image_limit(args.max_pixels)
        device = engine.resolve_device(args.device)
        results = evaluate_on_datasets(
            args.model,
            args.dataset,
            args.data_root,
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
    parser = argparse.ArgumentParser(prog="hf-iqa benchmark", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
