"""Result rows on disk: CSV, JSONL and Parquet writers and readers, and the file rules every write follows.

Files are created with `O_EXCL` (never an existing file, never a planted link), appended to with `O_NOFOLLOW`
(never through a symbolic link), and whole-file replacements go through an unpredictable temporary file in the
output's folder (`tempfile.mkstemp`), synced, then renamed into place and the folder synced (`replace_durably`).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hf_iqa.scoring.runtime import UsageError
from hf_iqa.scoring.sources.base import escape_name

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_for_writing(path: Path, append: bool) -> Any:
    """A text handle on `path`: appended to (created if absent) or created new, never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | NOFOLLOW | (os.O_APPEND if append else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP or (error.errno == errno.EEXIST and os.path.islink(path)):
            raise UsageError(f"{path} is a symbolic link; hf_iqa does not write through links it was not given "
                             "as the output") from None  # fmt: skip
        if error.errno == errno.EEXIST:
            raise UsageError(f"{path} appeared while the run started; not replaced") from None
        raise
    return os.fdopen(descriptor, "a" if append else "w", newline="", encoding="utf-8")


def temporary_beside(path: Path) -> tuple[int, Path]:
    """An unpredictable new file (O_EXCL) in `path`'s folder, for a whole-file replacement of `path`."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(descriptor, 0o666 & ~umask)  # the mode a plain new file would have, not mkstemp's 0600
    return descriptor, Path(name)


def replace_durably(temporary: Path, path: Path) -> None:
    """Sync `temporary`, rename it onto `path` and sync the folder: after this returns the new file survives a
    crash or power loss, and before it `path` is unchanged."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


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


def _complete_lines(path: Path) -> Iterator[str]:
    """Lines of a file ended by a newline; a last line cut short by a kill is not trusted."""
    with open(path, encoding="utf-8", newline="") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield line


def _drop_partial_line(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDWR | NOFOLLOW)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UsageError(f"{path} is a symbolic link; hf_iqa does not write through it") from None
        raise
    with os.fdopen(descriptor, "rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return
        chunk = 1 << 16
        position = size
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            data = handle.read(position - start)
            newline = data.rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            position = start
        handle.truncate(0)


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV, JSONL or Parquet output (complete lines only for text formats)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif suffix == ".csv":
        for row in csv.DictReader(_complete_lines(path)):
            yield {key: (None if value == "" else value) for key, value in row.items()}
    else:
        for line in _complete_lines(path):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class TextWriter:
    """Appends rows to a CSV or JSONL file, flushed after every batch. The CSV header comes from the first scored
    row (error rows before it wait), or from the file when resuming. Names are escaped in CSV (one line per row)."""

    def __init__(self, path: Path, key_field: str, append: bool, handle: Any = None):
        self.path = path
        self.key_field = key_field
        self.format = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        self.columns: list[str] | None = None
        self.waiting: list[dict[str, Any]] = []
        if append and path.exists():
            _drop_partial_line(path)
            if self.format == "csv":
                with open(path, newline="", encoding="utf-8") as existing:
                    self.columns = next(csv.reader(existing), None)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = handle if handle is not None else open_for_writing(path, append)
        self.writer: Any = None
        if self.columns:
            self.writer = csv.DictWriter(self.handle, fieldnames=self.columns, extrasaction="ignore")

    def write(self, row: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self.handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        row = flatten(row)
        for name in (self.key_field, "key"):
            if row.get(name) is not None:
                row[name] = escape_name(str(row[name]))
        if self.writer is None:
            if row.get("error") is not None:
                self.waiting.append(row)
                return
            self._start([self.key_field, *(k for k in row if k not in (self.key_field, "error")), "error"])
        self.writer.writerow(row)

    def _start(self, columns: list[str]) -> None:
        self.columns = columns
        self.writer = csv.DictWriter(self.handle, fieldnames=columns, extrasaction="ignore")
        self.writer.writeheader()
        for waiting in self.waiting:
            self.writer.writerow(waiting)
        self.waiting = []

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        if self.format == "csv" and self.writer is None and self.waiting:  # nothing scored: error rows only
            self._start([self.key_field, "score", "error"])
        self.handle.close()


def _parquet_value_type(values: list[Any]) -> Any:
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def write_parquet(
    path: Path,
    rows: Callable[[], Iterator[dict[str, Any]]],
    key_field: str,
    metadata: dict[bytes, bytes] | None = None,
) -> int:
    """Write `rows()` (called twice: the schema pass, then the data) as a Parquet file in row groups, durably and
    atomically (an unpredictable temporary file beside it, synced, renamed into place). Nested results are
    flattened like CSV columns; `metadata` goes into the schema (the run's provenance record)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    samples: dict[str, list[Any]] = {}
    for row in rows():
        for key, value in flatten(row).items():
            column = samples.setdefault(key, [])
            if value is not None and len(column) < 64:
                column.append(value)
    columns = [key_field, *(k for k in samples if k not in (key_field, "error")), "error"]
    schema = pa.schema([(c, pa.string() if c in (key_field, "error") else _parquet_value_type(samples.get(c, [])))
                        for c in columns], metadata=metadata)  # fmt: skip
    descriptor, temporary = temporary_beside(path)
    try:
        count = 0
        with os.fdopen(descriptor, "wb") as sink, pq.ParquetWriter(sink, schema) as writer:
            chunk: list[dict[str, Any]] = []
            for row in rows():
                flat = flatten(row)
                chunk.append({c: _cast(flat.get(c), schema.field(c).type) for c in columns})
                if len(chunk) >= 10_000:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    count += len(chunk)
                    chunk = []
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            count += len(chunk)
        replace_durably(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # gone after the rename; after a failure, the output is unchanged
    return count


def _cast(value: Any, arrow_type: Any) -> Any:
    import pyarrow as pa

    if value is None:
        return None
    if arrow_type == pa.string():
        return (
            value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        )
    return value
