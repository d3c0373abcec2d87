"""Training reads images as the dataset's official code reads them (issue 27 item 2): the stored pixels for named
benchmarks, LIQE's split files and QualiCLIP's pristine photos; turned by EXIF for a `folder`; `exif_transpose` in
the dataset mapping (or the QualiCLIP recipe's option) decides otherwise."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from hf_iqa.training.iqa_data import ProcessedImages, load_records
from hf_iqa.training.qualiclip_data import DegradedCropPairs

pytest.importorskip("datasets", reason="benchmark records are read through hf_iqa.data: needs the [data] extra")


def save_turned(path, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (16, 40, 3), dtype=np.uint8)  # stored 40 wide, 16 high
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: 16 wide, 40 high
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    return pixels


@pytest.fixture
def koniq(tmp_path):
    root = tmp_path / "koniq10k"
    rows = []
    for i in range(4):
        save_turned(root / "1024x768" / f"{10 + i}.png", i)
        rows.append([f"{10 + i}.png", 0.2, 0.2, 0.2, 0.2, 0.2, 100, 10 + 20 * i, 0.5, "training" if i < 2 else "test"])
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]
    with open(root / "koniq10k_distributions_sets.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    with open(root / "scores.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["image", "mos"], *[[f"1024x768/{r[0]}", r[7]] for r in rows]])
    return root


def sizes(records) -> set[tuple[int, int]]:
    shapes = ProcessedImages(records, lambda images, return_tensors: {"size": images.size})
    return {shapes[i]["size"] for i in range(len(records))}


def test_benchmark_and_split_file_records_read_stored_pixels_unless_told(koniq, tmp_path):
    spec = {"benchmark": "koniq10k", "data_root": str(koniq), "options": {"cache_dir": str(tmp_path / "cache")}}
    assert sizes(load_records(spec, "train")) == {(40, 16)}
    assert sizes(load_records({**spec, "exif_transpose": True}, "train")) == {(16, 40)}
    folder = {"benchmark": "folder", "data_root": str(koniq), "options": {"cache_dir": str(tmp_path / "cache2")}}
    assert sizes(load_records(folder, "train")) == {(16, 40)}  # a user's own photos: as a viewer shows them
    assert sizes(load_records({**folder, "exif_transpose": False}, "train")) == {(40, 16)}
    split = tmp_path / "train.txt"
    split.write_text("".join(f"1024x768/{10 + i}.png\t{i + 1}\n" for i in range(4)))
    liqe = {"train_file": str(split), "image_root": str(koniq)}
    assert sizes(load_records(liqe, "train")) == {(40, 16)}
    assert sizes(load_records({**liqe, "exif_transpose": True}, "train")) == {(16, 40)}


def test_qualiclip_pristine_photos_are_read_as_stored_unless_told(tmp_path, monkeypatch):
    import hf_iqa.training.qualiclip_data as qualiclip_data

    path = tmp_path / "pristine" / "a.png"
    save_turned(path, 7)
    seen = []

    class Read(Exception):
        """Stops the item once the photo is read: only its orientation is of interest here."""

    def record(image, size):
        seen.append(image.size)
        raise Read

    monkeypatch.setattr(qualiclip_data, "_fit_short_side", record)
    for turn in (False, True):
        with pytest.raises(Read):
            DegradedCropPairs([path], crop_size=64, exif_transpose=turn)[0]
    assert seen == [(40, 16), (16, 40)]
