"""`hf-iqa benchmark`: evaluate hf_iqa models on IQA benchmarks (accuracy) and write paper-style tables.

    hf-iqa benchmark --model <hub-id> ./my-model --dataset koniq10k livec --data-root ~/data --split test
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m hf_iqa.commands.benchmark ...   # or accelerate launch

Glossary: in hf_iqa, a *benchmark* is what it is in the IQA literature, a labelled dataset (KonIQ-10k, LIVE...)
and evaluating a model's accuracy on it (SRCC/PLCC...): this module, `hf-iqa benchmark` and `hf_iqa.data`. Speed and
memory measurements are not benchmarks here: they are the scripts in `bench/`.

Models are loaded with `AutoModel`/`AutoImageProcessor` and used only through the output contract of
`hf_iqa.models` (`scores`, higher is better); images are scored by `hf_iqa.scoring.score_stream`, the loop
`hf-iqa score` uses, through the same run (`hf_iqa.scoring.run`): each (model, dataset) run scores into a
resumable `scores.csv` (rows flushed after every batch; under torchrun / `accelerate launch` per-process parts that
process 0 merges, each image exactly once), so an interrupted run resumes where it stopped.
An image that cannot be read or scored is an error row (counted in the tables and `metrics.json`; the metrics use
the other images) unless `--strict` asks to fail.

Output (`--output-dir`, default `benchmark_results/`):

    <model>/<dataset>-<split>/predictions.csv  scores.csv  metrics.json  table.md  scatter.png  run.json
    results.md  results.json        one combined table for every model x dataset of the call
"""

from __future__ import annotations

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hf_iqa.metrics import iqa_correlations
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
from hf_iqa.scoring import DEFAULT_DTYPE, Interrupted

SCORES = "scores.csv"
"""Each run's resumable scores file (written by `hf_iqa.scoring.run`, like `hf-iqa score -o`)."""


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
        from hf_iqa.scoring import resolve_device

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


# ---------------------------------------------------------------------------------------------------------------
# Model and images
# ---------------------------------------------------------------------------------------------------------------


def scorer_for(model_id: str, options: EvaluationOptions, device: Any) -> tuple[Any, dict]:
    """The scoring engine's scorer for a model, loaded by the one loader of `hf-iqa score`
    (`hf_iqa.scoring.load_scorer`: the image-quality pipeline, or onnxruntime for an ONNX export), and the record of
    what produces its predictions (`hf_iqa.provenance`), stored beside each run's scores and in its metrics.json."""
    from hf_iqa import provenance
    from hf_iqa.scoring import DTYPES, load_scorer, resolve_model

    source = resolve_model(model_id)
    record = provenance.run_record(
        model_id,
        source,
        dtype=DTYPES.get(options.dtype, options.dtype),
        max_pixels=options.max_pixels,
        device=device,
        not_compared={"batch_size": options.batch_size},
    )
    record["comparable"]["resize_short_side"] = options.resize_short_side
    scorer = load_scorer(model_id, source, dtype=options.dtype, device=device, max_pixels=options.max_pixels,
                         trust_remote_code=options.trust_remote_code, resize_short_side=options.resize_short_side)  # fmt: skip
    return scorer, record


# ---------------------------------------------------------------------------------------------------------------
# Streaming predictions to disk and resuming
# ---------------------------------------------------------------------------------------------------------------


def _manifest(model_id: str, key: str, split: str, image_ids: list[str], options: dict) -> dict:
    digest = hashlib.sha1("\n".join(image_ids).encode()).hexdigest()
    return {"model": model_id, "dataset": key, "split": split, "num_images": len(image_ids), "image_ids_sha1": digest,
            **options}  # fmt: skip


def _prepare_run_dir(run_dir: Path, manifest: dict, overwrite: bool) -> None:
    """Main process only: start fresh (`overwrite`) or check that earlier files belong to the same run."""
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
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
    """How one `evaluate_on_datasets` call loads, scores and reports (its fields are the keyword arguments)."""

    split: str | None = None
    split_options: dict | None = None
    batch_size: int = 8
    dtype: str = DEFAULT_DTYPE
    device: str | None = None
    output_dir: str | os.PathLike = "benchmark_results"
    fit: str | None = "logistic4"
    resize_short_side: int | None = None
    max_pixels: int | None = None
    exif_transpose: bool | None = None  # None: as each dataset's official evaluation reads it (its metadata)
    num_workers: int = 4
    update_card: bool = False
    overwrite: bool = False
    progress: bool = True
    trust_remote_code: bool = False
    strict: bool = False


def evaluate_on_datasets(
    models: Sequence[str],
    datasets: Sequence[str],
    data_root: str | os.PathLike | Sequence[str],
    options: EvaluationOptions | None = None,
    **fields: Any,
) -> list[dict]:
    """Score every model on every dataset; returns one metrics dict per (model, dataset) on every process (only the
    main process writes files). `options` (or its fields as keywords): `split="all"` scores every image of a
    dataset (zero-shot protocol; the default for a user's `folder` dataset, "test" for named benchmarks);
    unreadable or missing images are error rows counted in `num_errors` (metrics on the rest) unless `strict`;
    `split_options` go to the loaders (`split_scheme`, `split_index`, `split_dir`, `cache_dir`, ...)."""
    options = replace(options or EvaluationOptions(), **fields)
    if options.batch_size < 1:
        raise BenchmarkError(f"batch_size must be >= 1, got {options.batch_size}")
    state = process_state()
    device = str(options.device or state.device)  # accelerate gives a torch.device
    output_dir = Path(options.output_dir)
    loaded = _load_datasets(state, datasets, data_root, options.split, options.split_options, options.strict)
    results = []
    for model_id in models:
        scorer, record = scorer_for(model_id, options, device)
        for name, dataset_split, dataset in loaded:
            run = (state, scorer, record, model_id, name, dataset_split, dataset, output_dir, options)
            results.append(_evaluate_one(*run))
        del scorer
    if state.is_main_process and results:
        _write_summary(output_dir, results, models if options.update_card else ())
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


def _evaluate_one(state, scorer, record, model_id, name, split, dataset, output_dir: Path, options) -> dict:
    """Score one model on one dataset split (resuming earlier predictions) and return its metrics record."""
    from hf_iqa.data import dataset_metadata

    meta = dataset_metadata(dataset)
    key = meta.get("key", name)
    folder = _slug(meta.get("name", key)) if key == "folder" else key  # several user folders may be scored
    run_dir = output_dir / _slug(model_id) / f"{folder}-{split}"
    exif_transpose = _orientation(meta, key, options)
    scorer.exif_transpose = exif_transpose  # per dataset, on the one scorer loaded for the model
    record = {**record, "comparable": {**record["comparable"], "exif_transpose": exif_transpose}}
    records = dataset.cast_column("image", _undecoded_image())
    paths = [item["path"] for item in records["image"]]
    image_ids, mos = list(records["image_id"]), np.asarray(records["mos"], dtype=np.float64)
    manifest_options = {
        "dtype": options.dtype,
        "resize_short_side": options.resize_short_side,
        "exif_transpose": exif_transpose,
    }  # what predictions depend on
    if state.is_main_process:
        _prepare_run_dir(run_dir, _manifest(model_id, key, split, image_ids, manifest_options), options.overwrite)
    state.wait_for_everyone()
    started = time.perf_counter()
    done = _score_remaining(state, scorer, record, key, run_dir, paths, image_ids, options)
    seconds = time.perf_counter() - started
    predictions, errors = _read_scores(run_dir / SCORES, key, paths, options.strict)
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
        "exif_transpose": exif_transpose,
        "num_processes": state.num_processes,
        "images_scored_now": len(paths) - done,
        "images_resumed": done,
        "seconds": round(seconds, 3),
        "output_dir": str(run_dir),
        "provenance": record,
    }
    if state.is_main_process:
        _write_run(run_dir, result, paths, image_ids, mos, predictions, labels, errors)
    state.wait_for_everyone()
    return result


def _orientation(meta: dict, key: str, options: EvaluationOptions) -> bool:
    """Whether this dataset's images are turned by their EXIF orientation tag: as asked (`--exif-transpose` /
    `--no-exif-transpose`), else as the dataset's official evaluation reads them (`exif_transpose` in its metadata:
    False for every named benchmark, True for a user's folder; caches written before the field: the same)."""
    if options.exif_transpose is not None:
        return bool(options.exif_transpose)
    return bool(meta.get("exif_transpose", key == "folder"))


def _score_remaining(state, scorer, record, key, run_dir, paths, image_ids, options) -> int:
    """The images without a row in `run_dir/scores.csv` yet, scored by the run of `hf-iqa score` (`scoring.run`:
    the same loop, resumable output, process sharding and merge); returns how many were done before."""
    from hf_iqa import scoring

    items = [scoring.Item(image_ids[i], source=paths[i], uid=str(i)) for i in range(len(paths))]
    inputs = scoring.Inputs([scoring.listed(items, key)], "image_id")
    output = scoring.Output(run_dir / SCORES, "image_id", resume=True, overwrite=False)
    for warning in output.attach_record(record):  # another model, weights or settings: refused
        print(f"hf-iqa benchmark: warning: {warning}", file=sys.stderr)
    done = len(output.done_keys())
    state.wait_for_everyone()  # everyone has read before anyone appends
    run_options = scoring.RunOptions(options.batch_size, options.num_workers, 2, options.progress, "benchmark")
    try:
        scoring.run(inputs, scorer, output, run_options)
    except Interrupted as stop:
        raise Interrupted(done + stop.scored, len(paths)) from None
    state.wait_for_everyone()
    return done


def _read_scores(path: Path, key: str, paths: list[str], strict: bool) -> tuple[np.ndarray, dict[int, str]]:
    """Predictions in dataset order (NaN for error rows) and the errors by index, from the scores file."""
    from hf_iqa.scoring import read_rows

    merged = {int(row["key"]): (row.get("score"), row.get("error")) for row in read_rows(path)}
    missing = [i for i in range(len(paths)) if i not in merged]
    if missing:
        raise BenchmarkError(f"{len(missing)} images of {key} have no prediction in {path}: {missing[:5]}")
    errors = {i: merged[i][1] for i in range(len(paths)) if merged[i][1]}
    if errors and strict:
        examples = "; ".join(f"{paths[i]}: {error}" for i, error in list(errors.items())[:3])
        raise BenchmarkError(f"{len(errors)} image(s) of {key} could not be scored (--strict): {examples}")
    predictions = np.array([np.nan if i in errors else float(merged[i][0]) for i in range(len(paths))])
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
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (run_dir / "table.md").write_text(markdown_table([result]))
    scored = np.isfinite(predictions)
    scatter_plot(run_dir / "scatter.png", predictions[scored], labels[scored], result)
