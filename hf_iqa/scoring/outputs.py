"""Where result rows go, resumable whatever happens: CSV and JSONL appended to, Parquet through a JSONL journal,
per-process parts under torchrun/accelerate merged by process 0, and every input exactly once after a resume.

Rows carry `key`, the input's exact identity (source + position, `Item.uid`): `--resume` matches it, so two tar
members or dataset rows of the same name are two rows. Outputs from before the `key` column resume by name.
"""

from __future__ import annotations

import heapq
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hf_iqa.scoring.runtime import UsageError, barrier, rank, world_size
from hf_iqa.scoring.sources.base import escape_name
from hf_iqa.scoring.writers import TextWriter, read_rows, replace_durably, temporary_beside, write_parquet

OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet")
KEY = "key"
"""The column holding an input's exact identity (`Item.uid`)."""


def parquet_available() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _user_path(path: Path) -> Path:
    """The output the user named; a symbolic link there is followed only to an existing file (a dangling link
    would create a file somewhere else)."""
    if path.is_symlink():
        if not path.exists():
            raise UsageError(f"--output {path} is a symbolic link to a missing file ({os.readlink(path)}); "
                             "give the real path")  # fmt: skip
        return Path(os.path.realpath(path))
    return path


class Output:
    """A resumable output file. CSV and JSONL are appended to directly. Parquet cannot be appended to safely, so
    rows go to a JSONL journal beside it (`<name>.parquet.journal.jsonl`) turned into the Parquet file at the end
    (the journal is kept until a run completes). Under torchrun/accelerate every process appends to its own JSONL
    part (`<name>.parts/rank-K-of-N.jsonl`, rows tagged with their stream position `_n`); at the end of a complete
    run of any size, parts of any earlier size are merged with the output into a new file that replaces it durably,
    each input once, and only then is the parts folder removed: a crash at any point of the merge loses nothing
    and a resume repeats nothing."""

    def __init__(self, path: str | os.PathLike, key_field: str, *, resume: bool, overwrite: bool):
        suffix = Path(path).suffix.lower()
        if suffix not in OUTPUT_SUFFIXES:
            raise UsageError(f"--output must end in .csv, .jsonl or .parquet, got {str(path)!r}")
        self.parquet = suffix == ".parquet"
        if self.parquet and not parquet_available():
            raise UsageError(f"--output {path}: writing Parquet needs pyarrow: pip install pyarrow")
        self.path = _user_path(Path(path))
        self.key_field = key_field
        self.resume = resume
        self.overwrite = overwrite
        self.journal = self.path.with_name(self.path.name + ".journal.jsonl")
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.world, self.rank = world_size(), rank()
        self.part = self.parts / f"rank-{self.rank}-of-{self.world}.jsonl"
        self.writer: TextWriter | None = None
        self.kept_errors = 0
        self.by_name = False  # rows without `key` (written before it existed): matched by their name
        self.record: dict[str, Any] | None = None  # what produced the rows (`hf_iqa.provenance`)

    def check(self, inputs: Iterable[Path]) -> None:
        """Refuse to replace an earlier output without --resume/--overwrite, and an output that is an input."""
        for source in inputs:
            try:
                same = source.exists() and self.path.exists() and os.path.samefile(source, self.path)
            except OSError:
                same = False
            if same or source.resolve() == self.path.resolve():
                raise UsageError(f"--output {self.path} is also an input; choose another output file")
        leftovers = [p for p in (self.path, self.journal, self.parts) if os.path.lexists(p)]
        if leftovers and not (self.resume or self.overwrite):
            raise UsageError(f"{leftovers[0]} exists; pass --resume to continue that run or --overwrite to replace it")

    def attach_record(self, record: dict[str, Any], *, trust_unrecorded: bool = False) -> list[str]:
        """Say what produces this run's rows (`hf_iqa.provenance.run_record`). Resuming, the record stored beside
        the earlier rows must match it: another model, other weights or other settings are refused with one line
        (`ProvenanceMismatch`, before any row is read or written), and so are earlier rows with no record unless
        `trust_unrecorded`; returns the version differences, which only warn. A new output's record is written
        when the output opens, before its first row."""
        from hf_iqa import provenance

        self.record = record
        if not self.resume or not self._sources():
            return []
        return provenance.check_resume(
            provenance.read_record(self.path), record, output=str(self.path), trust_unrecorded=trust_unrecorded
        )

    def _write_record(self) -> None:
        """The record beside a new (or replaced) output; a resumed output keeps the one its rows were written with,
        unless it had none (trusted with --trust-unrecorded): then this run's record is written."""
        from hf_iqa import provenance

        if self.record is None or self.rank != 0:
            return
        if self.resume and self._sources() and provenance.read_record(self.path) is not None:
            return
        provenance.write_sidecar(self.path, self.record)

    def _metadata(self) -> dict[bytes, bytes] | None:
        if self.record is None:
            return None
        from hf_iqa import provenance

        return provenance.parquet_metadata(provenance.read_record(self.path) or self.record)

    def _sources(self) -> list[Path]:
        sources = [self.path] if self.path.exists() else []
        if self.parquet and self.journal.exists():
            sources.append(self.journal)
        if self.parts.is_dir():
            sources.extend(sorted(self.parts.glob("rank-*.jsonl")))
        return sources

    def row_key(self, row: dict[str, Any]) -> str | None:
        key = row.get(KEY, row.get(self.key_field))
        return None if key is None else str(key)

    def done_keys(self) -> set[str]:
        """Identities of the inputs already in the output, its journal and its parts (complete rows only); how many
        of them are error rows goes to `kept_errors` (a resumed run still exits 1 for them)."""
        if not self.resume:
            return set()
        done: set[str] = set()
        self.kept_errors = 0
        for source in self._sources():
            for row in read_rows(source):
                key = self.row_key(row)
                self.by_name |= KEY not in row
                if key is not None:
                    self.kept_errors += bool(row.get("error")) and key not in done
                    done.add(key)
        return done

    def open(self) -> None:
        if self.overwrite and not self.resume and self.rank == 0:
            for leftover in (self.journal, self.path):
                leftover.unlink(missing_ok=True)
            shutil.rmtree(self.parts, ignore_errors=True)
        self._write_record()
        barrier()
        if self.world > 1:
            self.parts.mkdir(parents=True, exist_ok=True)
            self.writer = TextWriter(self.part, self.key_field, append=True)
        elif self.parquet:
            self._seed_journal()
            self.writer = TextWriter(self.journal, self.key_field, append=True)
        else:
            self.writer = TextWriter(self.path, self.key_field, append=self.resume)

    def write(self, row: dict[str, Any], index: Any) -> None:
        if self.world > 1:
            row = {**row, "_n": index}
        self.writer.write(row)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, complete: bool) -> None:
        """Close this process's file; on completion process 0 merges parts / converts the journal."""
        self.writer.close()
        if not complete:
            if self.world == 1 and self.parquet:
                self._convert_journal(keep_journal=True)  # what was scored is readable now; the journal resumes
            return
        barrier()
        if self.rank == 0:
            if self.parts.is_dir():
                self.merge_parts()
            elif self.parquet:
                self._convert_journal(keep_journal=False)
        barrier()

    def merge_parts(self) -> None:
        """The output (or journal) and every part of any world size into one new file, each input once (first
        row wins), parts in stream order; the new file replaces the output durably before the parts go."""
        parts = sorted(self.parts.glob("rank-*.jsonl"))
        base = self.journal if self.parquet else self.path
        if self.parquet:
            self._seed_journal()

        def merged() -> Iterator[dict[str, Any]]:
            seen: set[str] = set()
            streams = [read_rows(p) for p in parts]
            ordered = heapq.merge(*streams, key=lambda r: r.get("_n") or [-1])
            for row in _chain(base, ordered):
                row.pop("_n", None)
                key = self.row_key(row)
                if key is None or key in seen:
                    continue
                seen.add(key)
                yield row

        if self.parquet:
            write_parquet(self.path, merged, self.key_field, self._metadata())
        else:
            descriptor, temporary = temporary_beside(self.path)
            try:
                handle = os.fdopen(descriptor, "w", newline="", encoding="utf-8")
                writer = TextWriter(temporary, self.key_field, append=False, handle=handle)
                for row in merged():
                    writer.write(row)
                writer.close()
                replace_durably(temporary, self.path)
            finally:
                temporary.unlink(missing_ok=True)  # gone after the rename; after a failure, the output is unchanged
        shutil.rmtree(self.parts)
        if self.parquet:
            self.journal.unlink(missing_ok=True)

    def _seed_journal(self) -> None:
        """Resuming a Parquet output without a journal (an earlier run completed): its rows start the journal, which
        is always the whole truth while a run is unfinished."""
        if self.path.exists() and not self.journal.exists():
            writer = TextWriter(self.journal, self.key_field, append=False)
            for row in read_rows(self.path):
                writer.write({k: v for k, v in row.items() if v is not None})
            writer.close()

    def _convert_journal(self, keep_journal: bool) -> None:
        if self.journal.exists():
            write_parquet(self.path, lambda: read_rows(self.journal), self.key_field, self._metadata())
            if not keep_journal:
                self.journal.unlink()


def _chain(base: Path, ordered: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if base.exists():
        yield from read_rows(base)
    yield from ordered


class StdoutWriter:
    """`path<TAB>score` lines on stdout, `path<TAB>ERROR<TAB>problem` on stderr; names escaped."""

    def write(self, row: dict[str, Any], index: Any) -> None:
        name = escape_name(str(next(iter(row.values()))))
        if row.get("error"):
            print(f"{name}\tERROR\t{escape_name(row['error'])}", file=sys.stderr)
        else:
            print(f"{name}\t{row['score']:.6f}")

    def flush(self) -> None:
        sys.stdout.flush()

    def close(self, complete: bool) -> None:
        sys.stdout.flush()


def visual_name(key: str) -> str:
    """A relative path made from an input's key (its path without the root, `..` parts renamed), so that pictures
    written for inputs keep their folders and no two inputs share a name."""
    from pathlib import PurePath

    parts = [part for part in PurePath(key).parts if part not in ("/", "\\", "", ".")]
    if parts and PurePath(key).drive and parts[0].startswith(PurePath(key).drive):
        parts = parts[1:]
    return "/".join("__" if part == ".." else escape_name(part) for part in parts) or "_"
