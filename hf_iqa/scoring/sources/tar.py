"""`.tar` shards (WebDataset / img2dataset layout), read sequentially without extracting. Members are read with
a bound (`hf_iqa.io.read_bounded`): a member declaring more than `hf_iqa.io.MAX_BYTES` is an error row, unread."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

from hf_iqa.io import ImageLoadError, read_bounded
from hf_iqa.scoring.sources.base import Item, Mine, Segment, Skip, SourceOptions, has_image_suffix


def _members(path: Path, mine: Mine, skip: Skip) -> Iterator[Item]:
    """Image members (by name; `.json`/`.txt` sidecars passed over) as items keyed `shard/member` with the uid
    `shard#position`: two members of the same name are two inputs."""
    position = -1
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if not has_image_suffix(member.name):
                    continue
                position += 1
                if not mine(position):
                    continue
                key, uid = f"{path}/{member.name}", f"{path}#{position}"
                if skip(uid):
                    yield Item(key, index=position, uid=uid)
                elif not member.isfile():
                    yield Item(key, error="tar member is not a regular file", index=position, uid=uid)
                else:
                    yield _read_member(archive, member, key, position, uid)
    except (tarfile.TarError, OSError, EOFError) as error:
        if mine(0):
            yield Item(str(path), error=f"cannot read tar shard ({error})", index=-1, uid=f"{path}#shard")


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo, key: str, position: int, uid: str) -> Item:
    try:
        handle = archive.extractfile(member)
        data = read_bounded(handle, member.size, key) if handle else b""
    except ImageLoadError as error:
        return Item(key, error=error.problem, index=position, uid=uid)
    return Item(key, source=data, index=position, uid=uid)


def tar_segment(path: Path) -> Segment:
    return Segment(str(path), lambda mine, skip: _members(path, mine, skip), None, whole=True)


class TarSource:
    kind, alone = "tar", False

    def claims(self, name: str) -> bool:
        return name.lower().endswith(".tar") and os.path.isfile(name)

    def open(self, name: str, options: SourceOptions) -> list[Segment]:
        return [tar_segment(Path(name))]
