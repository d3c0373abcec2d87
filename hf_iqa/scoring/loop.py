"""The one scoring loop: a stream of `Item`s -> decoding and preprocessing in threads, at most a fixed number of
batches ahead -> the model in batches -> one `Result` per input, in input order.

`hf-iqa score`, `hf-iqa benchmark`, the demo and the `bench/` scripts all run through `score_stream`; a scorer is
anything with `prepare(item)` and `predict(prepared)` (`Scorer`), so a torch-free (ONNX) scorer plugs in as well.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from hf_iqa.io import ImageLoadError
from hf_iqa.scoring.runtime import UsageError
from hf_iqa.scoring.sources.base import Item, file_problem


def load_item_image(item: Item, max_pixels: int | None = None, exif_transpose: bool = True) -> Any:
    """The RGB PIL image of an item through the one gate, `hf_iqa.io.load_image` (raster formats only, size and
    byte limits, finite pixels), whatever the item holds: a path, encoded bytes (tar member, dataset cell) or a
    `datasets` cell dict, a PIL image or an array; turned by its EXIF orientation unless `exif_transpose=False`.
    Raises `ImageLoadError` naming the item."""
    from hf_iqa.io import load_image

    source = item.source
    if isinstance(source, dict):  # a `datasets` Image(decode=False) value
        source = source.get("bytes") if source.get("bytes") is not None else source.get("path")
    if source is None:
        raise ImageLoadError(item.key, "no image")
    if isinstance(source, (str, os.PathLike)):
        problem = file_problem(source)  # never open a FIFO or a device
        if problem:
            raise ImageLoadError(item.key, problem)
    return load_image(source, source=item.key, max_pixels=max_pixels, exif_transpose=exif_transpose)


class Scorer(Protocol):
    """What the loop drives: `prepare` runs in loader threads (decode + preprocess), `predict` on the caller's
    thread (one model call per batch, one result dict per prepared input)."""

    def prepare(self, item: Item) -> Any: ...

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]: ...


@dataclass
class Result:
    item: Item
    output: dict[str, Any] | None = None
    error: str | None = None


def _describe(error: BaseException) -> str:
    if isinstance(error, ImageLoadError):
        return error.problem
    return f"{type(error).__name__}: {error}"


def score_stream(
    items: Iterable[Item],
    scorer: Scorer,
    *,
    batch_size: int = 8,
    workers: int = 4,
    prefetch_batches: int = 2,
) -> Iterator[Result]:
    """One `Result` per item, in input order. At most `prefetch_batches` batches are being prepared or waiting
    ahead of the batch the model is scoring (a bounded window of futures, not an eager `map`), so memory does not
    grow with the number of items. An item that fails to load, or to score alone, is an error result; a batch that
    fails is scored again one item at a time so that only the bad item fails."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    window_size = max(1, prefetch_batches) * batch_size
    iterator = iter(items)
    window: deque[tuple[Item, Future | None]] = deque()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hf_iqa-load")

    def prepare(item: Item) -> Any:
        return scorer.prepare(item)

    def fill(limit: int) -> None:
        while len(window) < limit:
            item = next(iterator, None)
            if item is None:
                return
            window.append((item, None if item.error else pool.submit(prepare, item)))

    def run_batch(batch: list[tuple[Item, Any]]) -> list[Result]:
        try:
            outputs = scorer.predict([prepared for _, prepared in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"the model returned {len(outputs)} results for {len(batch)} images")
            return [Result(item, output) for (item, _), output in zip(batch, outputs)]
        except Exception as error:
            if len(batch) == 1:
                return [Result(batch[0][0], error=_describe(error))]
            return [result for one in batch for result in run_batch([one])]

    try:
        fill(window_size)
        while window:
            taken = [window.popleft() for _ in range(min(batch_size, len(window)))]
            fill(window_size)  # the next batches are prepared while this one is scored
            results: list[Result | None] = []
            batch: list[tuple[Item, Any]] = []
            for item, future in taken:
                if future is None:
                    results.append(Result(item, error=item.error))
                    continue
                try:
                    batch.append((item, future.result()))
                    results.append(None)
                except Exception as error:
                    results.append(Result(item, error=_describe(error)))
            scored = iter(run_batch(batch) if batch else [])
            for result in results:
                yield result if result is not None else next(scored)
    finally:
        for _, future in window:
            if future is not None:
                future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


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


class PipelineScorer:
    """Scores with an `ImageQualityPipeline`'s own preprocess and forward; results through the output contract
    (`hf_iqa.pipelines.describe_output`). `resize_short_side` resizes before the processor (benchmark protocols);
    `max_pixels` and `exif_transpose` go to the reader (`hf_iqa.io.load_image`; None: `hf_iqa.io.MAX_PIXELS`;
    True: turned as a photo viewer shows it, False: the stored pixels, as benchmarks' official evaluations read
    them). A benchmark sets `exif_transpose` per dataset on the one loaded scorer."""

    def __init__(
        self,
        pipe: Any,
        *,
        visualize: bool = False,
        resize_short_side: int | None = None,
        max_pixels: int | None = None,
        exif_transpose: bool = True,
    ):
        self.pipe = pipe
        self.visualize = visualize
        self.resize_short_side = resize_short_side
        self.max_pixels = max_pixels
        self.exif_transpose = exif_transpose

    def prepare(self, item: Item) -> dict[str, Any]:
        image = load_item_image(item, max_pixels=self.max_pixels, exif_transpose=self.exif_transpose)
        if self.resize_short_side:
            from PIL import Image

            width, height = image.size
            scale = self.resize_short_side / min(width, height)
            if scale != 1:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                image = image.resize(size, Image.BICUBIC)
        return self.pipe.preprocess(image, exif_transpose=False)  # already turned (or not) as asked

    def predict(self, prepared: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from hf_iqa.pipelines import describe_output

        outputs = self.pipe.forward(collate(prepared), return_visualization=self.visualize)
        scores = outputs.get("scores")
        if scores is None or scores.dim() != 1 or scores.shape[0] != len(prepared):
            shape = None if scores is None else tuple(scores.shape)
            raise RuntimeError(
                f"{type(self.pipe.model).__name__} broke the output contract: `scores` must have shape "
                f"({len(prepared)},), got {shape}"
            )
        results = [describe_output(outputs, i, self.pipe.model.config) for i in range(len(prepared))]
        if self.visualize:
            for result, picture in zip(results, outputs["visualization"]):
                result["visualization"] = picture
        return results


class ImageScorer:
    """Drives a scorer of decoded images (`preprocess(image) -> inputs`, `predict(list_of_inputs) -> results`),
    such as `hf_iqa.onnx.OnnxScorer` (onnxruntime, no torch), with the engine's items read through the one gate."""

    def __init__(self, scorer: Any, *, max_pixels: int | None = None, exif_transpose: bool = True):
        self.scorer = scorer
        self.max_pixels = max_pixels
        self.exif_transpose = exif_transpose

    def prepare(self, item: Item) -> Any:
        image = load_item_image(item, max_pixels=self.max_pixels, exif_transpose=self.exif_transpose)
        return self.scorer.preprocess(image)

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        return self.scorer.predict(prepared)
