"""Image files and folders (recursive; `.tar` shards found in a folder are read as shards)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from hf_iqa.scoring.runtime import UsageError
from hf_iqa.scoring.sources.base import Item, Segment, SourceOptions, file_problem, has_image_suffix, listed


def scan_folder(root: Path, shards: list[Path] | None = None) -> Iterator[Item]:
    """Image files under `root` (recursive, sorted, symbolic links followed once), plus error items for what cannot
    be an image although named like one: broken links, link loops, unreadable folders, FIFOs and other special
    files, folders named like images that hold no image. `.tar` files go to `shards` when it is given."""
    visited: set[tuple[int, int]] = set()

    def walk(folder: Path) -> Iterator[Item]:
        try:
            info = os.stat(folder)
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            yield Item(str(folder), error=f"cannot read folder ({error.strerror})")
            return
        identity = (info.st_dev, info.st_ino)
        if identity in visited:
            yield Item(str(folder), error="link to a folder already scanned (a loop or a duplicate; its images are "
                       "listed once)")  # fmt: skip
            return
        visited.add(identity)
        for entry in entries:
            yield from _entry(entry, walk, shards)

    yield from walk(root)


def _entry(entry: os.DirEntry, walk, shards: list[Path] | None) -> Iterator[Item]:
    path = Path(entry.path)
    looks_like_image = has_image_suffix(entry.name)
    problem = file_problem(path)
    if problem == "is a directory, not an image file":
        found = False
        for item in walk(path):
            found = True
            yield item
        if not found and looks_like_image:
            yield Item(str(path), error="is a directory (named like an image) with no image in it")
    elif looks_like_image:
        yield Item(str(path), source=str(path), error=problem)
    elif shards is not None and entry.name.lower().endswith(".tar") and problem is None:
        shards.append(path)
    elif entry.is_symlink() and problem and "link" in problem:
        yield Item(str(path), error=problem)  # a broken link might have been anything


def file_item(name: str) -> Item:
    """An image file named on the command line or in a list (its problems found without opening it)."""
    return Item(name, source=name, error=file_problem(name))


class FileSource:
    """An image file (any name: the decoder decides what it is, raster formats only)."""

    kind, alone = "file", False

    def claims(self, name: str) -> bool:
        return os.path.lexists(name) and not os.path.isdir(name)

    def open(self, name: str, options: SourceOptions) -> list[Segment]:
        return [listed([file_item(name)], name)]


class FolderSource:
    """A folder of images, scanned recursively; `.tar` shards in it are read as shards, after its images."""

    kind, alone = "folder", False

    def claims(self, name: str) -> bool:
        return os.path.isdir(name)

    def open(self, name: str, options: SourceOptions) -> list[Segment]:
        from hf_iqa.scoring.sources.tar import tar_segment

        shards: list[Path] = []
        items = list(scan_folder(Path(name), shards))
        segments = [listed(items, name)] if items else []
        return segments + [tar_segment(shard) for shard in sorted(shards)]


class MissingSource:
    """A name that is nothing on disk. Named like an image file, it is an error row (a batch goes on); anything
    else (a folder, a shard, a dataset) is a typo said in one line before any model loads. It is never taken for a
    Hub dataset id: those are written `hf://datasets/OWNER/NAME`."""

    kind, alone = "missing", False

    def claims(self, name: str) -> bool:
        return not os.path.lexists(name)

    def open(self, name: str, options: SourceOptions) -> list[Segment]:
        if has_image_suffix(name):
            return [listed([file_item(name)], name)]
        hint = " (a Hub dataset is written hf://datasets/OWNER/NAME)" if name.count("/") == 1 else ""
        raise UsageError(f"{name}: no such file or folder{hint}")
