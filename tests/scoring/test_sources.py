"""Input kinds of hf_iqa.scoring (issue 24 items 1-2): the hostile corpus gives the same rows through every source
kind, bytes never reach a decoder outside the raster list (a fake `gs` proves it), members and cells are read with
a bound, rows are identified by position, null cells are error rows, and a new kind is one class + one line."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from hf_iqa import scoring
from hf_iqa.io import ImageLoadError
from tests.test_hostile_inputs import build_corpus

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def outcomes(inputs: scoring.Inputs) -> dict[str, str]:
    """{file name: "ok" | the problem} for every input, through the one gate."""
    found = {}
    for item in inputs.items():
        name = Path(item.key).name if inputs.key_field == "path" else item.key
        if item.error:
            found[name] = item.error
            continue
        try:
            scoring.load_item_image(item)
            found[name] = "ok"
        except ImageLoadError as error:
            found[name] = error.problem
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    expected = build_corpus(folder)
    regular = sorted(name for name in expected if stat.S_ISREG(os.lstat(folder / name).st_mode))
    return folder, {name: expected[name] for name in regular}


@pytest.fixture
def fake_gs(tmp_path, monkeypatch):
    """A `gs` first on PATH that records being started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gs-was-called"
    script = bin_dir / "gs"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return marker


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_parquet(path: Path, names: list[str], cells: list[bytes | None]) -> Path:
    datasets = pytest.importorskip("datasets")
    image = [None if c is None else {"bytes": c, "path": None} for c in cells]
    features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": image, "name": names}, features=features).to_parquet(str(path))
    return path


def test_hostile_corpus_gives_the_same_rows_through_every_source_kind(corpus, tmp_path, fake_gs):
    datasets = pytest.importorskip("datasets")
    folder, expected = corpus
    names = list(expected)
    contents = [(folder / name).read_bytes() for name in names]
    via_files = outcomes(scoring.open_inputs([str(folder / name) for name in names]))
    listing = tmp_path / "lists" / "files.txt"
    listing.parent.mkdir()
    listing.write_text("".join(f"../{folder.name}/{name}\n" for name in names))
    (tmp_path / folder.name).symlink_to(folder)
    via_list = outcomes(scoring.open_inputs([], from_list=str(listing)))
    via_tar = outcomes(scoring.open_inputs([str(write_tar(tmp_path / "shard.tar", list(zip(names, contents))))]))
    parquet = write_parquet(tmp_path / "cells.parquet", names, contents)
    via_parquet = outcomes(scoring.open_inputs([str(parquet)], id_column="name"))
    saved = tmp_path / "saved"
    datasets.Dataset.from_parquet(str(parquet), cache_dir=str(tmp_path / "cache")).save_to_disk(str(saved))
    via_disk = outcomes(scoring.open_inputs([str(saved)], id_column="name"))
    assert {n: "ok" if o == "ok" else "error" for n, o in via_files.items()} == expected
    for other in (via_list, via_tar, via_parquet, via_disk):
        assert other == via_files
    assert not fake_gs.exists(), "Ghostscript was started"


def test_eps_named_png_in_a_tar_and_a_parquet_cell_never_starts_ghostscript(tmp_path, fake_gs):
    inputs = scoring.open_inputs([str(write_tar(tmp_path / "evil.tar", [("evil.png", EPS)]))])
    assert "not an image hf_iqa can read" in outcomes(inputs)["evil.png"]
    parquet = write_parquet(tmp_path / "evil.parquet", ["evil"], [EPS])
    assert "not an image hf_iqa can read" in outcomes(scoring.open_inputs([str(parquet)], id_column="name"))["evil"]
    assert not fake_gs.exists()


def test_a_tar_member_declaring_gigabytes_stays_under_a_memory_bound(tmp_path):
    """A 10 KB tar whose member declares 8 GiB: an error row, and under 16 MB of Python memory (bound: the member
    is refused unread when it declares more than hf_iqa.io.MAX_BYTES, 256 MiB)."""
    shard = write_tar(tmp_path / "liar.tar", [("big.png", b"x" * 512), ("next.png", b"y" * 512)])
    raw = bytearray(shard.read_bytes())
    raw[124:136] = b"\x80" + (8 << 30).to_bytes(11, "big")  # base-256 size field of the first member
    checksum = sum(raw[:148]) + 8 * 32 + sum(raw[156:512])
    raw[148:156] = f"{checksum:06o}\x00 ".encode()
    shard.write_bytes(bytes(raw))
    assert shard.stat().st_size <= 10_240
    tracemalloc.start()
    found = outcomes(scoring.open_inputs([str(shard)]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "over the" in found["big.png"] and "byte limit" in found["big.png"]
    assert peak < 16 * 2**20


def test_read_bounded_never_reads_past_the_limit():
    from hf_iqa.io import read_bounded

    class Endless:
        read_sizes: list[int] = []

        def read(self, size: int) -> bytes:
            self.read_sizes.append(size)
            return b"z" * size

    stream = Endless()
    with pytest.raises(ImageLoadError, match="more than the 1,000-byte limit"):
        read_bounded(stream, 10, "lying member", max_bytes=1000)  # declares 10 bytes, holds more
    assert stream.read_sizes == [1001]


def test_duplicate_names_and_ids_are_two_rows_and_null_cells_error_rows(tmp_path):
    from tests.testing_utils import random_image

    data = io.BytesIO()
    random_image(8, 8).save(data, format="PNG")
    png = data.getvalue()
    shard = write_tar(tmp_path / "dup.tar", [("a.png", png), ("a.png", png), ("b.png", png)])
    items = list(scoring.open_inputs([str(shard)]).items())
    assert [Path(i.key).name for i in items] == ["a.png", "a.png", "b.png"]
    assert len({i.uid for i in items}) == 3
    parquet = write_parquet(tmp_path / "dup.parquet", ["x", "x", "y"], [png, None, png])
    rows = list(scoring.open_inputs([str(parquet)], id_column="name").items())
    assert [r.key for r in rows] == ["x", "x", "y"] and len({r.uid for r in rows}) == 3
    assert rows[1].error == "no image (the dataset cell is empty)"
    done = {items[0].uid}
    again = [i for i in scoring.open_inputs([str(shard)]).items(lambda uid: uid in done) if i.source is not None]
    assert [i.uid for i in again] == [items[1].uid, items[2].uid]  # the second a.png is not taken as done


def test_a_new_input_kind_is_one_class_and_one_registration(tmp_path, monkeypatch):
    from hf_iqa.scoring import sources

    class Numbers:
        kind, alone = "numbers", False

        def claims(self, name: str) -> bool:
            return name.startswith("numbers:")

        def open(self, name, options):
            count = int(name.split(":")[1])
            return [scoring.listed([scoring.Item(f"n{i}", source=f"/nowhere/{i}.png") for i in range(count)], name)]

    monkeypatch.setattr(sources, "SOURCES", list(sources.SOURCES))
    scoring.register(Numbers(), first=True)
    inputs = scoring.open_inputs(["numbers:3"])
    assert [i.key for i in inputs.items()] == ["n0", "n1", "n2"] and inputs.total == 3


def test_input_typos_are_usage_errors_and_never_hub_ids(tmp_path):
    with pytest.raises(scoring.UsageError, match="no such file or folder"):
        scoring.open_inputs([str(tmp_path / "photoz")])
    with pytest.raises(scoring.UsageError, match=r"hf://datasets/OWNER/NAME"):
        scoring.open_inputs(["someone/photoz"])
    assert outcomes(scoring.open_inputs([str(tmp_path / "gone.jpg")])) == {"gone.jpg": "no such file"}


def test_a_folder_of_tar_shards_is_read_as_shards_and_lists_are_normalised(tmp_path):
    from tests.testing_utils import random_image

    data = io.BytesIO()
    random_image(8, 8).save(data, format="PNG")
    shards = tmp_path / "shards"
    shards.mkdir()
    for number in range(2):
        write_tar(shards / f"{number:05d}.tar", [(f"img{number}.png", data.getvalue())])
    inputs = scoring.open_inputs([str(shards)])
    assert [Path(i.key).name for i in inputs.items()] == ["img0.png", "img1.png"]
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "l.txt").write_text("../photos/a.jpg\n")
    keys = [i.key for i in scoring.open_inputs([], from_list=str(tmp_path / "lists" / "l.txt")).items()]
    assert keys == [str(tmp_path / "photos" / "a.jpg")]


def test_max_pixels_reaches_the_reader_without_touching_the_global(tmp_path):
    from hf_iqa import io as image_io
    from tests.testing_utils import random_image

    random_image(20, 20).save(tmp_path / "a.png")
    item = scoring.Item(str(tmp_path / "a.png"), source=str(tmp_path / "a.png"))
    with pytest.raises(ImageLoadError, match="over the 100-pixel limit"):
        scoring.load_item_image(item, max_pixels=100)
    assert image_io.MAX_PIXELS == 89_478_485
    assert scoring.load_item_image(item).size == (20, 20)


def test_damaged_datasets_and_shards_are_one_line_never_a_traceback(setup_model, tmp_path, capsys):
    from hf_iqa.cli import main

    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + os.urandom(300))
    (tmp_path / "bad.tar").write_bytes(os.urandom(2000))
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "dataset_info.json").write_text("{not json")
    for name in ("bad.parquet", "bad.tar", "saved"):
        status = main(["score", "--model", setup_model, str(tmp_path / name), "--no-progress"])
        err = capsys.readouterr().err
        assert status in (1, 2) and "Traceback" not in err, (name, err)
        assert name in err and (name == "bad.tar" or err.count("\n") == 1), err


@pytest.fixture(scope="module")
def setup_model(tmp_path_factory):
    from tests.test_evaluation import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model") / "model", seed=5)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write a sparse member")
def test_a_sparse_tar_member_is_refused_unread(tmp_path):
    """A 1 GiB sparse member stored in a few KB: refused from its header (bound: hf_iqa.io.MAX_BYTES, 256 MiB, never
    read), under 16 MB of Python memory."""
    holes = tmp_path / "holes.png"
    with open(holes, "wb") as handle:
        handle.truncate(1 << 30)
    subprocess.run(["tar", "--sparse", "-cf", str(tmp_path / "sparse.tar"), "-C", str(tmp_path), "holes.png"],
                   check=True, timeout=120)  # fmt: skip
    assert (tmp_path / "sparse.tar").stat().st_size < 1 << 20
    tracemalloc.start()
    found = outcomes(scoring.open_inputs([str(tmp_path / "sparse.tar")]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "byte limit" in found["holes.png"] and peak < 16 * 2**20
