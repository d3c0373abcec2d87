"""One run: inputs -> the loop -> an output, resumable, with progress, a warnings summary and a closing count
of inputs seen, rows written and rows failed. `hf-iqa score` and `hf-iqa benchmark` both run through `run`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hf_iqa.scoring.loop import Result, Scorer, score_stream
from hf_iqa.scoring.outputs import KEY, Output, StdoutWriter, visual_name
from hf_iqa.scoring.runtime import Interrupted, world_size
from hf_iqa.scoring.runtime import rank as process_rank
from hf_iqa.scoring.sources.base import Inputs, escape_name


@dataclass(frozen=True)
class RunOptions:
    """How a run feeds the model and reports: images per model call, loader threads, batches prepared ahead,
    progress bar, and the command named in its messages."""

    batch_size: int = 8
    workers: int = 4
    prefetch: int = 2
    progress: bool = True
    command: str = "score"


def run(
    inputs: Inputs,
    scorer: Scorer,
    output: Output | None,
    options: RunOptions,
    visualizations: Path | None = None,
) -> int:
    """Score `inputs` into `output` (or stdout), resuming what `output` already holds; returns 1 if an input
    failed, else 0; Ctrl-C or SIGTERM raise `Interrupted`. The one run of `hf-iqa score` and `hf-iqa benchmark`."""
    done = output.done_keys() if output else set()
    output.open() if output else None
    writer = output or StdoutWriter()
    world, rank = world_size(), process_rank()
    items = inputs.items(lambda uid: uid in done or escape_name(uid) in done, rank, world)
    by_name = output is not None and output.by_name  # an output from before `key`: its rows name their inputs

    def wanted(item) -> bool:  # skipped items carry neither a source nor an error
        named = by_name and (item.key in done or escape_name(item.key) in done)
        return (item.source is not None or item.error is not None) and not named

    mine = (item for item in items if wanted(item))
    total = None if inputs.total is None else len(range(rank, inputs.total, world))
    if total is not None and world == 1:
        total = max(0, total - len(done))
    with WarningTally(options.command) as tally:
        written, failed = _loop(options, mine, scorer, writer, inputs.key_field, visualizations, total)
    tally.report()
    who = f"hf-iqa {options.command}" + (f" (process {rank} of {world})" if world > 1 else "")
    seen = len(done) + written if rank == 0 else written  # every process's share; the earlier rows counted once
    print(f"{who}: {seen} input(s) seen: {len(done) if rank == 0 else 0} already done, {written} row(s) written "
          f"now, {failed} of {written} failed", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _row(result: Result, key_field: str, visualizations: Path | None) -> dict:
    row = {key_field: result.item.key, KEY: result.item.uid}
    if result.error is not None:
        row["error"] = result.error
        return row
    output = dict(result.output)
    picture = output.pop("visualization", None)
    if picture is not None and visualizations is not None:
        row_path = visualizations / f"{visual_name(result.item.key)}_regions.png"
        row_path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(row_path)
        output["visualization"] = str(row_path)
    row.update(output)
    return row


def _loop(options, items, scorer, writer, key_field, visualizations, total) -> tuple[int, int]:
    from tqdm.auto import tqdm

    written = failed = 0
    complete = False
    progress = tqdm(total=total, unit="img", disable=not options.progress or process_rank() != 0, file=sys.stderr)
    try:
        for result in score_stream(items, scorer, batch_size=options.batch_size, workers=options.workers,
                                   prefetch_batches=options.prefetch):  # fmt: skip
            writer.write(_row(result, key_field, visualizations), result.item.index)
            failed += result.error is not None
            written += 1
            progress.update(1)
            if written % options.batch_size == 0:
                writer.flush()
        complete = True
    except KeyboardInterrupt:
        raise Interrupted(written, total) from None
    finally:
        progress.close()
        writer.close(complete)
    return written, failed


class WarningTally:
    """Library warnings during a run (e.g. one per small image) are counted by kind, not printed one by one over
    the progress bar; `report()` prints one line per kind with its count."""

    def __init__(self, command: str):
        self.command = command
        self.counts: dict[str, int] = {}

    def __enter__(self) -> WarningTally:
        import re
        import threading
        import warnings

        lock = threading.Lock()
        self.saved = warnings.showwarning, list(warnings.filters)

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if category.__name__ == "DecompressionBombWarning":  # hf_iqa's own size check reports those files
                return
            kind = f"{category.__name__}: {re.sub(r'[0-9]+', 'N', str(message))}"
            with lock:
                self.counts[kind] = self.counts.get(kind, 0) + 1

        warnings.simplefilter("always")
        warnings.showwarning = show
        return self

    def __exit__(self, *exc_info) -> None:
        import warnings

        warnings.showwarning, warnings.filters[:] = self.saved

    def report(self) -> None:
        for kind, count in sorted(self.counts.items(), key=lambda pair: -pair[1]):
            print(f"hf-iqa {self.command}: warning ({count}x): {kind}", file=sys.stderr)
