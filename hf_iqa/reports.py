"""Reports of `hf-iqa benchmark`: Markdown tables with confidence intervals, the paired-significance matrix, scatter
plots and model-card entries. Pure functions of metrics records (`hf_iqa.metrics.iqa_correlations` plus the run's
fields) and predictions; `hf_iqa.evaluation` writes the files.

Tables show PLCC/RMSE after the requested logistic fit only where that fit is sound; a row whose fit was flagged
shows the raw values, marked `†` (the reason is `fit_status` in metrics.json).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hf_iqa.metrics import fit_logistic, logistic4, logistic5
from hf_iqa.significance import paired_bootstrap

FIT_LABELS = {"logistic4": "after a 4-parameter logistic fit", "logistic5": "after a 5-parameter logistic fit",
              None: "raw (no fit)"}  # fmt: skip
CARD_START, CARD_END = "<!-- hf_iqa:benchmark:start -->", "<!-- hf_iqa:benchmark:end -->"
FLAG = "†"


def oriented_labels(mos: np.ndarray, meta: dict) -> tuple[np.ndarray, str]:
    """Labels turned so that higher is better (DMOS flipped within its range), as the correlations expect."""
    if meta.get("higher_is_better", True):
        return mos, "as is (higher is better)"
    if meta.get("mos_range"):
        low, high = meta["mos_range"]
        return low + high - mos, f"flipped within [{low}, {high}] (lower-is-better label)"
    return -mos, "negated (lower-is-better label)"


def display_name(model_id: str) -> str:
    """A local model folder is shown by its folder name, a Hub model by its id."""
    return Path(model_id).name if Path(model_id).is_dir() else model_id


def _format(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _with_interval(result: dict, key: str) -> str:
    """`0.9124 [0.901, 0.922]`: the value and its interval where the record has one."""
    interval = result.get(f"{key}_ci")
    text = _format(result.get(key))
    if interval and all(v is not None and np.isfinite(v) for v in interval):
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def _flag(result: dict) -> str:
    return f" {FLAG}" if result.get("fit_flagged") else ""


def table_notes(results: list[dict]) -> list[str]:
    """The lines above a table: which PLCC it shows, what the brackets are, which rows fell back to raw PLCC."""
    fits = {r.get("fit_requested") for r in results}
    note = FIT_LABELS.get(fits.pop()) if len(fits) == 1 else "fit per row, see metrics.json"
    lines = [f"PLCC and RMSE {note}; SRCC and KRCC on raw predictions."]
    if any(r.get("fit_flagged") for r in results):
        lines.append(f"{FLAG} the logistic fit was unsound (fit_status in metrics.json): raw PLCC and RMSE shown.")
    if any(r.get("srcc_ci") for r in results):
        ci = next(r["ci"] for r in results if r.get("ci"))
        lines.append(
            f"Brackets: {ci['level']:.0%} confidence intervals (SRCC, PLCC: bootstrap over images, "
            f"{ci['resamples']} resamples, seed {ci['seed']}; KRCC: Fisher z)."
        )
    return lines


def markdown_table(results: list[dict]) -> str:
    """One row per (model, dataset) record, with intervals and the flag of unsound fits."""
    lines = [
        *table_notes(results),
        "",
        "| Model | Dataset | Split | Images | Errors | SRCC | PLCC | KRCC | RMSE |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {display_name(r['model'])} | {r['dataset_name']} | {r['split']} | {r['num_images']} | "
            f"{r.get('num_errors', 0)} | {_with_interval(r, 'srcc')} | {_with_interval(r, 'plcc')}{_flag(r)} | "
            f"{_with_interval(r, 'krcc')} | {_format(r['rmse'])}{_flag(r)} |"
        )
    return "\n".join(lines) + "\n"


def combined_table(results: list[dict], significance: list[dict] | None = None) -> str:
    """Papers' cross-dataset layout: one row per model, `SRCC / PLCC` per dataset, then every metric, then the
    paired-significance matrices of `significance` (from `significance_for_results`)."""
    models = list(dict.fromkeys(r["model"] for r in results))
    columns = list(dict.fromkeys((r["dataset"], r["split"], r["dataset_name"]) for r in results))
    cell = {(r["model"], r["dataset"], r["split"], r["dataset_name"]): r for r in results}
    header = "| Model | " + " | ".join(f"{name} ({split})" for _, split, name in columns) + " |"
    lines = ["## SRCC / PLCC", "", header, "|---|" + "---:|" * len(columns)]
    for model in models:
        values = []
        for key, split, name in columns:
            r = cell.get((model, key, split, name))
            values.append(f"{_format(r['srcc'])} / {_format(r['plcc'])}{_flag(r)}" if r else "-")
        lines.append(f"| {display_name(model)} | " + " | ".join(values) + " |")
    text = "\n".join(lines) + "\n\n## All metrics\n\n" + markdown_table(results)
    for comparison in significance or []:
        title = f"{comparison['dataset_name']} ({comparison['split']})"
        text += f"\n## Paired significance: {title}\n\n" + significance_markdown(comparison)
    return text


def significance_markdown(comparison: dict) -> str:
    """The matrix of `hf_iqa.significance.paired_bootstrap`: row minus column, bold where significant."""
    names = comparison["models"]
    pairs = {(p["a"], p["b"]): p for p in comparison["pairs"]}
    lines = [
        f"{comparison['metric'].upper()} difference, row minus column, paired bootstrap over the same "
        f"{comparison['num_items']} images ({comparison['resamples']} resamples, seed {comparison['seed']}); "
        f"**bold**: significant at {1 - comparison['level']:.0%} (the {comparison['level']:.0%} interval of the "
        "difference excludes 0).",
        "",
        "| | " + " | ".join(display_name(n) for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for row in names:
        cells = []
        for column in names:
            pair = pairs.get((row, column)) or pairs.get((column, row))
            if pair is None:
                cells.append("·")
                continue
            difference = pair["difference"] if pair["a"] == row else -pair["difference"]
            cells.append(f"**{difference:+.4f}**" if pair["significant"] else f"{difference:+.4f}")
        lines.append(f"| {display_name(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def significance_section(
    predictions: Mapping[str, Any], labels: Any, *, metric: str = "srcc", resamples: int = 1000, seed: int = 0
) -> tuple[dict, str]:
    """(paired test record, its Markdown matrix) for `{model: predictions}` scored on the same images as `labels`
    (higher is better, same order)."""
    comparison = paired_bootstrap(predictions, labels, metric=metric, resamples=resamples, seed=seed)
    return comparison, significance_markdown(comparison)


def _read_run_predictions(run_dir: Path) -> dict[str, tuple[float, float]]:
    """image_id -> (label as written, prediction) of a run's predictions.csv, error rows left out."""
    found = {}
    with open(run_dir / "predictions.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("error") and row.get("prediction"):
                found[row["image_id"]] = (float(row["mos"]), float(row["prediction"]))
    return found


def significance_for_results(results: list[dict], metric: str = "srcc", resamples: int = 1000, seed: int = 0):
    """A paired test per dataset split scored by several models, on the images every one of them scored, read
    from each run's `predictions.csv` (`output_dir` of the record); labels oriented as in the records."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["split"], r["dataset_name"]), {})[r["model"]] = r
    comparisons = []
    for (dataset, split, name), by_model in groups.items():
        if len(by_model) < 2:
            continue
        runs = {model: _read_run_predictions(Path(r["output_dir"])) for model, r in by_model.items()}
        first = next(iter(runs.values()))
        common = [image for image in first if all(image in run for run in runs.values())]
        if len(common) < 3:
            continue
        record = next(iter(by_model.values()))
        flipped = not str(record.get("label_orientation", "as is")).startswith("as is")  # as the record's metrics
        meta = {"higher_is_better": not flipped, "mos_range": record.get("mos_range")}
        labels, _ = oriented_labels(np.array([first[i][0] for i in common]), meta)
        predictions = {model: np.array([run[i][1] for i in common]) for model, run in runs.items()}
        comparison, _ = significance_section(predictions, labels, metric=metric, resamples=resamples, seed=seed)
        comparisons.append({"dataset": dataset, "split": split, "dataset_name": name, **comparison})
    return comparisons


def scatter_plot(path: Path, predictions: np.ndarray, labels: np.ndarray, result: dict) -> bool:
    """Prediction vs label with the fitted logistic curve; False (and a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            "matplotlib is not installed, so no scatter plot is written (pip install 'hf-iqa[plot]')", stacklevel=2
        )
        return False
    params, fit = (result.get("fit_params") or []) if result.get("fit") else [], result.get("fit")
    if not params:  # the plot always shows a fitted curve, even when the metrics use raw PLCC
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, params = fit_logistic(predictions, labels, "logistic4")
        fit = "logistic4" if len(params) else None
    figure, axis = plt.subplots(figsize=(5, 4), dpi=120)
    axis.scatter(predictions, labels, s=8, alpha=0.6, label="images")
    if fit is not None and len(params):
        grid = np.linspace(predictions.min(), predictions.max(), 200)
        function = logistic4 if fit == "logistic4" else logistic5
        axis.plot(grid, function(grid, *params), color="C3", label=f"{fit} fit")
    axis.set_xlabel(f"prediction ({display_name(result['model'])})")
    axis.set_ylabel(f"label ({result['label_orientation'].split(' (')[0]})")
    axis.set_title(f"{result['dataset_name']}: SRCC {result['srcc']:.3f}, PLCC {result['plcc']:.3f}", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def update_model_card(model_dir: str | os.PathLike, results: list[dict]) -> Path:
    """Write `results` into the model-index of `<model_dir>/README.md` (replacing entries of the same dataset, split
    and metric) and into a results table between hf_iqa markers in the card's text."""
    from huggingface_hub import EvalResult, ModelCard

    readme = Path(model_dir) / "README.md"
    card = ModelCard(
        readme.read_text(encoding="utf-8") if readme.is_file() else f"---\n---\n# {Path(model_dir).name}\n"
    )
    card.data.model_name = card.data.model_name or Path(model_dir).resolve().name
    metric_types = {"srcc": ("spearmanr", "SRCC"), "plcc": ("pearsonr", "PLCC"), "krcc": ("kendalltau", "KRCC"),
                    "rmse": ("rmse", "RMSE")}  # fmt: skip
    new = []
    for r in results:
        for field, (metric_type, metric_name) in metric_types.items():
            if r.get(field) is None:
                continue
            name = metric_name if field in ("srcc", "krcc") else f"{metric_name} ({FIT_LABELS[r['fit']]})"
            new.append(
                EvalResult(
                    task_type="image-quality-assessment",
                    task_name="No-Reference Image Quality Assessment",
                    dataset_type=r["dataset"],
                    dataset_name=r["dataset_name"],
                    dataset_split=r["split"],
                    metric_type=metric_type,
                    metric_name=name,
                    metric_value=round(float(r[field]), 4),
                )
            )
    replaced = {(e.dataset_type, e.dataset_split, e.metric_type) for e in new}
    kept = [
        e for e in card.data.eval_results or [] if (e.dataset_type, e.dataset_split, e.metric_type) not in replaced
    ]
    card.data.eval_results = kept + new
    table = f"{CARD_START}\n## Benchmark results (hf-iqa benchmark)\n\n{markdown_table(results)}{CARD_END}"
    pattern = re.compile(re.escape(CARD_START) + ".*?" + re.escape(CARD_END), re.S)
    card.text = (
        pattern.sub(lambda _: table, card.text) if pattern.search(card.text) else card.text + "\n" + table + "\n"
    )
    card.save(readme)
    return readme
