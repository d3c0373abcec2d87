"""`hf-iqa demo`: a Gradio web app to score images with one or several models side by side.

Upload or drop images (or pick an example), choose models (zoo names or converted folders), and read each model's
score on its own range and direction, LIQE's quality/scene/distortion probabilities as bars, Dog-IQA's region map
with per-region scores, and a results table that downloads as CSV. Models are loaded once and reused; every batch
of images goes through the CLI's scoring engine, one decoded image at a time. The same app runs as a Hugging Face Space (`app.py`). It binds to
127.0.0.1 by default and never opens a public share link unless `--share` is given.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import gc
import html
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from hf_iqa.io import ImageLoadError
from hf_iqa.provenance import run_record
from hf_iqa.scoring import flatten

DEFAULT_MODELS = ["liqe-mix"]
MAX_UPLOAD = "50mb"  # per file; decoded-size limits are hf_iqa.io's (the CLI's `--max-pixels`), applied per image
MAX_IMAGES = 32  # per request
BATCH_SIZE = 4
MAX_PICTURE_SIDE = 1024  # Dog-IQA region maps are kept (and shown) at most this large
CACHE_CLEANUP = (600, 3600)  # gradio's delete_cache: every 10 minutes, delete its files older than an hour
CSV_FIXED = ["image", "model", "score", "score_min", "score_max", "higher_is_better", "error"]

_PIPELINES: dict[str, Any] = {}
_LOCK = threading.Lock()
_EXAMPLES: tempfile.TemporaryDirectory | None = None
_SCORING = threading.BoundedSemaphore(1)  # one request scores at a time: the peak does not grow with requests


# ----------------------------------------------------------------------------------------------------------------
# Scoring (no Gradio here: tested directly)
# ----------------------------------------------------------------------------------------------------------------
def get_pipeline(model: str):
    """The image-quality pipeline for a zoo name or folder, loaded on first use and kept for the app's lifetime."""
    with _LOCK:  # Gradio serves requests from threads; one load per model
        if model not in _PIPELINES:
            import hf_iqa

            _PIPELINES[model] = hf_iqa.pipeline(model=model)
        return _PIPELINES[model]


class _Reader:
    """`PipelineScorer` that remembers which files could not be read (told once, not once per model)."""

    def __init__(self, pipe, visualize: bool, max_pixels: int | None, unreadable: dict[int, str],
                 exif_transpose: bool = True):  # fmt: skip
        from hf_iqa.scoring import PipelineScorer

        self.scorer = PipelineScorer(pipe, visualize=visualize, max_pixels=max_pixels, exif_transpose=exif_transpose)
        self.unreadable = unreadable

    def prepare(self, item):
        try:
            return self.scorer.prepare(item)
        except ImageLoadError as error:
            self.unreadable[item.index] = error.problem
            raise

    def predict(self, prepared: list) -> list[dict[str, Any]]:
        return self.scorer.predict(prepared)


def score_files(pipe, paths: list[str], max_pixels: int | None = None, visualize: bool = False,
                unreadable: dict[int, str] | None = None, exif_transpose: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Score files with one model through the CLI's engine (`hf_iqa.scoring.score_stream`): each file passes the
    one byte gate (`load_item_image`: raster formats only, `max_pixels`, byte limit) and is decoded only when its
    turn comes, by one thread, and dropped once preprocessed; at most two batches of model inputs are held. A file
    that fails gives `{"error": problem}` (and its index in `unreadable` when it cannot be read); files already in
    `unreadable` are not read again. Photos are turned by their EXIF orientation unless `exif_transpose=False`."""
    from hf_iqa.scoring import Item, score_stream

    unreadable = {} if unreadable is None else unreadable
    items = [Item(key=Path(path).name, source=path, index=i, error=unreadable.get(i)) for i, path in enumerate(paths)]
    reader = _Reader(pipe, visualize, max_pixels, unreadable, exif_transpose)
    results = score_stream(items, reader, batch_size=BATCH_SIZE, workers=1, prefetch_batches=1)
    return [result.output if result.error is None else {"error": result.error} for result in results]


def model_problem(model: str, error: Exception) -> str:
    """What to tell a person whose model cannot be loaded (the zoo's message says what to do offline)."""
    text = str(error).strip() or type(error).__name__
    if "offline" in text.lower() or "HF_HUB_OFFLINE" in os.environ:
        text += "\n(offline: convert the weights with `hf-iqa convert` and pass the folder with --model, or run once with network access.)"
    return text if text.startswith(f"{model}: ") else f"{model}: {text}"


def _small(picture: Image.Image) -> Image.Image:
    picture.thumbnail((MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))  # only ever shrinks
    return picture


def score(
    paths: list[str], models: list[str], max_pixels: int | None = None, exif_transpose: bool = True
) -> dict[str, Any]:
    """Score every readable image with every loadable model. Returns rows (one per image x model, plus one per bad
    file), model metadata, Dog-IQA pictures (at most `MAX_PICTURE_SIDE`) and the messages to show. No decoded image
    outlives its preprocessing; one request scores at a time (`_SCORING`)."""
    with _SCORING:
        try:
            return _score(paths, models, max_pixels, exif_transpose)
        finally:
            release_memory()


def _score(paths: list[str], models: list[str], max_pixels: int | None, exif_transpose: bool) -> dict[str, Any]:
    names = [Path(path).name for path in paths[:MAX_IMAGES]]
    unreadable: dict[int, str] = {}
    scored: list[dict[str, Any]] = []
    messages: list[str] = []
    meta: dict[str, dict[str, Any]] = {}
    pictures: list[tuple[Image.Image, str]] = []
    for model in models:
        try:
            pipe = get_pipeline(model)
        except Exception as error:  # any load failure becomes a message; the other models still run
            messages.append(model_problem(model, error))
            continue
        config = pipe.model.config
        low, high = (float(v) for v in getattr(config, "score_range", (float("nan"), float("nan"))))
        meta[model] = {"range": (low, high), "higher_is_better": bool(getattr(config, "higher_is_better", True))}
        if not names:
            continue
        visualize = hasattr(pipe.model, "render_regions")
        try:
            results = score_files(pipe, paths[:MAX_IMAGES], max_pixels, visualize, unreadable, exif_transpose)
        except Exception as error:  # a model that fails on this request: say so, keep the others
            messages.append(f"{model}: scoring failed ({type(error).__name__}: {error})")
            continue
        for i, (name, result) in enumerate(zip(names, results)):
            if i in unreadable:
                continue  # a file problem: one row and one message for all models, below
            if "error" in result:
                scored.append({"image": name, "model": model, "error": result["error"]})
                messages.append(f"{name} ({model}): {result['error']}")
                continue
            picture = result.pop("visualization", None)
            if picture is not None:
                pictures.append((_small(picture), f"{name} - {_label(model)}: {result['score']:.4f}"))
            scored.append({"image": name, "model": model, "result": result, "error": ""})
    bad = [(names[i], unreadable[i]) for i in sorted(unreadable)]
    bad += [(Path(path).name, f"not scored: at most {MAX_IMAGES} images per request") for path in paths[MAX_IMAGES:]]
    rows = [{"image": name, "model": "", "error": problem} for name, problem in bad] + scored
    messages = [f"{name}: {problem}" for name, problem in bad] + messages
    readable = [name for i, name in enumerate(names) if i not in unreadable]
    return {"rows": rows, "meta": meta, "pictures": pictures, "messages": messages, "images": readable}


def release_memory() -> None:
    """Hand freed memory back to the system after a request (glibc keeps freed heap pages otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def flat_row(row: dict[str, Any], meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One CSV row: fixed columns, then every extra output (`field.label` for probabilities, JSON for lists)."""
    out: dict[str, Any] = {"image": row["image"], "model": row["model"], "error": row["error"]}
    result = row.get("result")
    if result is None:
        return out
    info = meta[row["model"]]
    out.update(score=result["score"], score_min=info["range"][0], score_max=info["range"][1],
               higher_is_better=info["higher_is_better"])  # fmt: skip
    out.update({key: value for key, value in flatten(result).items() if key != "score"})  # the CLI's columns
    return out


def write_csv(rows: list[dict[str, Any]], directory: str | None = None) -> str:
    """The results table as a new CSV file (never overwrites: a fresh temporary folder per request)."""
    columns = list(CSV_FIXED)
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    if directory is not None:
        os.makedirs(directory, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="hf_iqa_demo_", dir=directory)) / "hf_iqa_scores.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def write_provenance(
    csv_path: str, models: list[str], max_pixels: int | None = None, exif_transpose: bool = True
) -> str:
    """`<csv>.meta.json` next to the CSV: per loaded model, `hf_iqa.provenance.run_record` (the model as named and
    resolved, file digests, dtype, device, package versions, time), so that a downloaded table says what made it."""
    from hf_iqa.provenance import write_sidecar
    from hf_iqa.zoo import resolve

    records = {}
    for model in models:
        pipe = _PIPELINES.get(model)
        if pipe is None:  # never loaded: it scored nothing
            continue
        records[model] = run_record(
            model, resolve(model), dtype=str(pipe.model.dtype).removeprefix("torch."), max_pixels=max_pixels,
            exif_transpose=exif_transpose, device=str(pipe.device), not_compared={"batch_size": BATCH_SIZE},
        )  # fmt: skip
    document = {"produced_by": "hf-iqa demo", "scores": Path(csv_path).name, "records": records}
    return str(write_sidecar(csv_path, document))


# ----------------------------------------------------------------------------------------------------------------
# HTML rendering (plain HTML with inline styles: no plotting dependency, readable by the browser test)
# ----------------------------------------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _label(model: str) -> str:
    """A folder is shown by its last component (the full path is in the tooltip and the CSV)."""
    return Path(model).name if os.sep in model else model


def _range_text(info: dict[str, Any]) -> str:
    low, high = info["range"]
    arrow = "higher is better" if info["higher_is_better"] else "lower is better"
    return f"range {low:g}-{high:g}, {arrow}"


def _bar(fraction: float, color: str = "#2563eb") -> str:
    width = 100.0 * min(max(fraction, 0.0), 1.0)
    return (f'<div style="background:#e5e7eb;border-radius:3px;height:8px;width:100%">'
            f'<div style="background:{color};height:8px;border-radius:3px;width:{width:.1f}%"></div></div>')  # fmt: skip


def render_scores(outcome: dict[str, Any]) -> str:
    """Images as rows, models as columns: the score, a bar on the model's range, its range and direction."""
    models = list(outcome["meta"])
    if not models or not outcome["images"]:
        return ""
    head = "".join(
        f'<th title="{_esc(m)}">{_esc(_label(m))}<br><small>{_esc(_range_text(outcome["meta"][m]))}</small></th>'
        for m in models
    )
    by_key = {(r["image"], r["model"]): r["result"] for r in outcome["rows"] if r.get("result") is not None}
    body = []
    for name in outcome["images"]:
        cells = []
        for model in models:
            result = by_key.get((name, model))
            if result is None:
                cells.append("<td>-</td>")
                continue
            low, high = outcome["meta"][model]["range"]
            fraction = (result["score"] - low) / (high - low) if high > low else 0.0
            cells.append(f'<td><span class="hf-iqa-score" data-image="{_esc(name)}" data-model="{_esc(model)}">'
                         f'{result["score"]:.4f}</span>{_bar(fraction)}</td>')  # fmt: skip
        body.append(f"<tr><td><b>{_esc(name)}</b></td>{''.join(cells)}</tr>")
    return f'<table id="hf-iqa-scores" style="width:100%"><tr><th>image</th>{head}</tr>{"".join(body)}</table>'


def render_details(outcome: dict[str, Any]) -> str:
    """Per image and model: every probability output as bars (LIQE quality/scene/distortion, QualiCLIP pairs,
    Dog-IQA levels), other numbers, and Dog-IQA's per-region scores."""
    parts = []
    for row in outcome["rows"]:
        result = row.get("result")
        if result is None:
            continue
        blocks = []
        for key, value in result.items():
            if isinstance(value, dict) and value:
                lines = "".join(
                    f'<div style="display:flex;gap:6px;align-items:center"><span style="width:45%">{_esc(label)}</span>'
                    f'<span style="width:40%">{_bar(float(p), "#16a34a")}</span><span>{float(p):.3f}</span></div>'
                    for label, p in sorted(value.items(), key=lambda item: -float(item[1]))
                )  # fmt: skip
                blocks.append(f"<div><b>{_esc(key)}</b>{lines}</div>")
        scalars = [f"{_esc(k)}: {v:.4f}" if isinstance(v, float) else f"{_esc(k)}: {_esc(v)}"
                   for k, v in result.items() if k != "score" and not isinstance(v, (dict, list))]  # fmt: skip
        if "region_scores" in result:
            boxes = result.get("region_boxes") or [None] * len(result["region_scores"])
            region_rows = "".join(
                f"<tr><td>{i + 1}</td><td>{float(s):.3f}</td><td>{_esc(b) if b is not None else ''}</td></tr>"
                for i, (s, b) in enumerate(zip(result["region_scores"], boxes))
            )
            blocks.append(f"<div><b>regions</b><table><tr><th>#</th><th>score</th><th>box</th></tr>"
                          f"{region_rows}</table></div>")  # fmt: skip
        parts.append(
            f"<details open><summary><b>{_esc(row['image'])}</b> - {_esc(_label(row['model']))}: {result['score']:.4f}"
            f"{' (' + ', '.join(scalars) + ')' if scalars else ''}</summary>"
            f'<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px">'
            f"{''.join(blocks)}</div></details>"
        )
    return "".join(parts)


def render_messages(messages: list[str]) -> str:
    if not messages:
        return ""
    return "**Problems**\n\n" + "\n".join(f"- {_esc(m)}".replace("\n", "<br>") for m in messages)


def table_rows(outcome: dict[str, Any]) -> list[list[Any]]:
    """The on-screen table: image, model, score, range/direction, the most probable labels, error."""
    out = []
    for row in outcome["rows"]:
        result = row.get("result")
        if result is None:
            out.append([row["image"], row["model"], None, "", "", row["error"]])
            continue
        labels = ", ".join(f"{k}: {v}" for k, v in result.items() if isinstance(v, str))
        out.append([row["image"], row["model"], round(result["score"], 4),
                    _range_text(outcome["meta"][row["model"]]), labels, ""])  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------------------------
# The Gradio app
# ----------------------------------------------------------------------------------------------------------------
def example_images(directory: str | None = None) -> list[str]:
    """Two synthetic pictures generated at start-up (no shipped files): a sharp texture and a blurred, noisy copy."""
    if directory is None:
        global _EXAMPLES
        _EXAMPLES = _EXAMPLES or tempfile.TemporaryDirectory(prefix="hf_iqa_examples_")  # removed at exit
        directory = _EXAMPLES.name
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:384, 0:512].astype(np.float32)
    base = np.stack([127 + 100 * np.sin(xx / 9) * np.cos(yy / 13), 127 + 90 * np.cos((xx + yy) / 17),
                     127 + 70 * np.sin(yy / 7)], axis=-1)  # fmt: skip
    sharp = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    noise = np.random.default_rng(0).normal(0, 25, base.shape)
    blurred = np.asarray(sharp.filter(ImageFilter.GaussianBlur(4)), dtype=np.float32) + noise
    degraded = Image.fromarray(np.clip(blurred, 0, 255).astype(np.uint8))
    paths = [directory / "example_sharp.jpg", directory / "example_degraded.jpg"]
    sharp.save(paths[0], quality=92)
    degraded.save(paths[1], quality=30)
    return [str(p) for p in paths]


def build_demo(models: list[str] | None = None, choices: list[str] | None = None, max_pixels: int | None = None,
               exif_transpose: bool = True):  # fmt: skip
    """The app. `models`: selected at start; `choices`: offered (default: `models` + every zoo name). Any folder
    path can also be typed into the model box. `max_pixels`: the largest image (width x height) scored, as the
    CLI's `--max-pixels` (None: `hf_iqa.io.MAX_PIXELS`); `exif_transpose=False` scores uploads as stored, not
    turned by their EXIF orientation tag.

    Files: uploads and downloads live in gradio's cache folder (the CSV is written there, not in a folder of our
    own), which gradio empties of files older than an hour every 10 minutes (`CACHE_CLEANUP`) and entirely when
    the app stops. The score event runs one request at a time (`concurrency_limit=1`, and `_SCORING`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    import hf_iqa

    models = list(models or DEFAULT_MODELS)
    if choices is None:
        choices = models + [m["name"] for m in hf_iqa.list_models() if m["name"] not in models]
    examples = example_images()

    def run(files: list[str] | None, selected: list[str] | None):
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        if not paths:
            raise gr.Error("Add one or more images first (upload, drop, or pick an example).")
        if not selected:
            raise gr.Error("Choose at least one model.")
        outcome = score(paths, list(selected), max_pixels=max_pixels, exif_transpose=exif_transpose)
        rows = [flat_row(r, outcome["meta"]) for r in outcome["rows"]]
        csv_path = write_csv(rows, directory=download.GRADIO_CACHE) if rows else None
        meta_path = write_provenance(csv_path, list(outcome["meta"]), max_pixels, exif_transpose) if csv_path else None
        return (render_scores(outcome), render_messages(outcome["messages"]), render_details(outcome),
                outcome["pictures"], table_rows(outcome), csv_path, meta_path)  # fmt: skip

    with gr.Blocks(title="hf_iqa: image quality", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(
            "# hf_iqa: blind image quality assessment\n"
            "Upload or drop images, choose one or more models, press **Score**. Each model scores on its own "
            "range (shown under its name). Type a converted folder's path into the model box to use it."
        )
        with gr.Row():
            files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="hf-iqa-files")
            chosen = gr.Dropdown(choices=choices, value=models, multiselect=True, allow_custom_value=True,
                                 label="Models (zoo names or folders)", elem_id="hf-iqa-models")  # fmt: skip
        gr.Examples(examples=[[examples], [examples[:1]], [examples[1:]]], inputs=[files], label="Examples")
        button = gr.Button("Score", variant="primary", elem_id="hf-iqa-score")
        scores = gr.HTML(elem_id="hf-iqa-scores-box")
        messages = gr.Markdown(elem_id="hf-iqa-messages")
        with gr.Accordion("Details: probabilities, levels and regions", open=True):
            details = gr.HTML(elem_id="hf-iqa-details")
            regions = gr.Gallery(label="Dog-IQA region maps", columns=3, height="auto", elem_id="hf-iqa-regions")
        table = gr.Dataframe(headers=["image", "model", "score", "range", "labels", "error"], label="Results",
                             interactive=False, elem_id="hf-iqa-table")  # fmt: skip
        with gr.Row():
            download = gr.File(label="Results as CSV", elem_id="hf-iqa-csv")
            produced = gr.File(label="What produced them (JSON: models, digests, versions)", elem_id="hf-iqa-meta")
        outputs = [scores, messages, details, regions, table, download, produced]
        button.click(run, inputs=[files, chosen], outputs=outputs,
                     api_name="score", concurrency_limit=1)  # fmt: skip
    return demo


def launch(models: list[str] | None, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           max_pixels: int | None = None, exif_transpose: bool = True, **kwargs):  # fmt: skip
    """Build, preload the chosen models (problems are printed, the app still starts) and serve."""
    models = list(models or DEFAULT_MODELS)
    for model in models:
        try:
            get_pipeline(model)
        except Exception as error:
            print(f"hf-iqa demo: {model_problem(model, error)}", flush=True)
    demo = build_demo(models, max_pixels=max_pixels, exif_transpose=exif_transpose)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD, ssr_mode=False,
                       footer_links=["api"], **kwargs)  # fmt: skip
