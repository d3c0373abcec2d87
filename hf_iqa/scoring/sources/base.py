"""What every input kind yields: `Item`s grouped in `Segment`s (one folder listing, one tar shard, one dataset),
and `Inputs`, the stream of a command's segments shared between processes."""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hf_iqa.io import IMAGE_EXTENSIONS


@dataclass
class Item:
    """One input. `key` names it for the user (a path, `shard.tar/member`, a dataset id); `uid` identifies it
    exactly (source + position: two members or rows with the same name are two inputs) and is what `--resume`
    matches; `source` is what is decoded (a path, bytes, a bounded reader, a `datasets` cell, a PIL image);
    `error` is a problem found while listing; `index` its stream position `[segment, position]`."""

    key: str
    source: Any = None
    error: str | None = None
    index: Any = -1
    uid: str = ""

    def __post_init__(self) -> None:
        self.uid = self.uid or self.key


Skip = Callable[[str], bool]
Mine = Callable[[int], bool]


@dataclass
class Segment:
    """A run of inputs from one source. `read(mine, skip)` yields an `Item` per position (with `index` set to the
    position; other processes' positions passed over unread, `skip(uid)` ones yielded without a source, unread);
    `count` is None when known only by reading (tar shards, streamed datasets); a `whole` segment may be given whole
    to one process (then no process reads another's shard)."""

    name: str
    read: Callable[[Mine, Skip], Iterator[Item]]
    count: int | None
    whole: bool = False


@dataclass
class SourceOptions:
    """What the command line says about its inputs besides the names."""

    split: str | None = None
    image_column: str | None = None
    id_column: str | None = None


@dataclass
class Inputs:
    """What a command scores: its segments, the result column that names an input (`path` or `id`), and the
    local files read (an output must not be one of them)."""

    segments: list[Segment]
    key_field: str = "path"
    files: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int | None:
        counts = [segment.count for segment in self.segments]
        return None if None in counts else sum(counts)

    def items(self, skip: Skip = lambda uid: False, process_index: int = 0, num_processes: int = 1) -> Iterator[Item]:
        """This process's items in stream order, each with its `index` `[segment, position]` (comparable across
        processes and runs of any size); `skip(uid)` items are yielded without a source, unread. Processes share
        positions round-robin, or whole segments when there are at least as many whole ones as processes."""
        wholes = sum(segment.whole for segment in self.segments)
        whole_number = 0
        for number, segment in enumerate(self.segments):
            if segment.whole and wholes >= num_processes:
                owner = whole_number % num_processes == process_index
                whole_number += 1
                if not owner:
                    continue
                mine: Mine = lambda position: True  # noqa: E731
            else:
                mine = lambda position: position % num_processes == process_index  # noqa: E731
            for item in segment.read(mine, skip):
                item.index = [number, item.index]
                yield item


class Source(Protocol):
    """An input kind. `claims(name)` says whether a command-line input is of this kind (asked in registration
    order); `open(name, options)` lists it as segments, or raises `UsageError`. An `alone` kind (a dataset) is
    scored on its own and names results by `id`."""

    kind: str
    alone: bool

    def claims(self, name: str) -> bool: ...

    def open(self, name: str, options: SourceOptions) -> list[Segment]: ...


def escape_name(name: str) -> str:
    """A name with control characters (newline, tab, escape...) written as `\\n`, `\\t`, `\\x1b`, so that text
    outputs keep one line per image."""
    if not any(unicodedata.category(c) == "Cc" for c in name):
        return name
    specials = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(specials.get(c, f"\\x{ord(c):02x}") if unicodedata.category(c) == "Cc" else c for c in name)


def has_image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}  # fmt: skip


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as an image file without opening it (a FIFO would block), or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else "no such file"
    except OSError as error:
        if error.errno == 40:  # ELOOP
            return "symbolic link loop"
        return f"cannot access ({error.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file: {FILE_KINDS.get(stat.S_IFMT(info.st_mode), 'a special file')}"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def listed(items: list[Item], name: str) -> Segment:
    """A segment of items known up front (files, folder listings, list files)."""

    def read(mine: Mine, skip: Skip) -> Iterator[Item]:
        for position, item in enumerate(items):
            if not mine(position):
                continue
            if skip(item.uid):
                yield Item(item.key, index=position, uid=item.uid)
            else:
                yield Item(item.key, item.source, item.error, position, item.uid)

    return Segment(name, read, len(items))
