"""Image orientation is an explicit choice (issue 27 item 2): a photo with EXIF orientation 6 scores as its rotated
pixels in `hf-iqa score` by default and as its stored pixels in `hf-iqa benchmark` on a named benchmark (the
official evaluations open images with PIL and `.convert("RGB")`); both switchable, and the choice is recorded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

from tests import test_evaluation as evaluation_tests

pytest.importorskip("datasets", reason="the benchmark reads datasets through hf_iqa.data: needs the [data] extra")
pytestmark = [pytest.mark.filterwarnings("ignore:.*the official release has.*:UserWarning"),
              pytest.mark.filterwarnings("ignore:matplotlib is not installed:UserWarning")]  # fmt: skip

COUNT = 5


def save_turned_photo(path: Path, seed: int) -> np.ndarray:
    """A JPEG whose stored pixels are 24x12 and whose EXIF says: show them turned 90 degrees clockwise."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.integers(0, 256, 3) + rng.normal(0, 60, (12, 24, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as opened:  # the decoded stored pixels (JPEG is lossy)
        return np.asarray(opened.convert("RGB")).copy()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    base = tmp_path_factory.mktemp("orientation")
    rows, stored = [], []
    for i in range(COUNT):
        stored.append(save_turned_photo(base / "koniq10k" / "1024x768" / f"{500 + i}.jpg", i))
        rows.append([f"{500 + i}.jpg", 0.2, 0.2, 0.2, 0.2, 0.2, 100, 10 + 13 * i, 0.5, "test"])
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]
    with open(base / "koniq10k" / "koniq10k_distributions_sets.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    with open(base / "koniq10k" / "scores.csv", "w", newline="") as handle:  # the same photos as a user's folder
        csv.writer(handle).writerows([["image", "mos"], *[[f"1024x768/{r[0]}", r[7]] for r in rows]])
    model = evaluation_tests.save_tiny_model(base / "model", seed=3)
    return {"base": base, "model": model, "stored": stored}


def direct(model_dir: str, arrays: list[np.ndarray]) -> np.ndarray:
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        return np.array([model(**processor(Image.fromarray(a), return_tensors="pt")).scores.item() for a in arrays])


def expected_scores(photos) -> dict[bool, np.ndarray]:
    turned = [np.ascontiguousarray(np.rot90(a, k=-1)) for a in photos["stored"]]  # orientation 6: clockwise
    scores = {False: direct(photos["model"], photos["stored"]), True: direct(photos["model"], turned)}
    assert np.abs(scores[True] - scores[False]).min() > 1e-4  # the test can tell the two readings apart
    return scores


def benchmark(photos, output: Path, dataset: str, *extra: str) -> dict:
    from hf_iqa.cli import main

    argv = ["benchmark", "--model", photos["model"], "--dataset", dataset, "--data-root",
            str(photos["base"] / "koniq10k"), "--split", "all" if dataset == "folder" else "test",
            "--output-dir", str(output), "--no-progress", *extra]  # fmt: skip
    assert main(argv) == 0
    (metrics,) = output.glob("*/*/metrics.json")
    return json.loads(metrics.read_text())


def predictions(metrics: dict) -> np.ndarray:
    _, values = evaluation_tests.read_predictions(Path(metrics["output_dir"]) / "predictions.csv")
    return values


def test_benchmark_reads_stored_pixels_unless_told(photos, tmp_path):
    scores = expected_scores(photos)
    default = benchmark(photos, tmp_path / "default", "koniq10k")
    np.testing.assert_allclose(predictions(default), scores[False], atol=1e-6)
    assert default["exif_transpose"] is False and default["provenance"]["comparable"]["exif_transpose"] is False
    turned = benchmark(photos, tmp_path / "turned", "koniq10k", "--exif-transpose")
    np.testing.assert_allclose(predictions(turned), scores[True], atol=1e-6)
    assert turned["exif_transpose"] is True
    folder = benchmark(photos, tmp_path / "folder", "folder")  # a user's own photos: as a viewer shows them
    np.testing.assert_allclose(predictions(folder), scores[True], atol=1e-6)
    folder_stored = benchmark(photos, tmp_path / "folder2", "folder", "--no-exif-transpose")
    np.testing.assert_allclose(predictions(folder_stored), scores[False], atol=1e-6)


def test_benchmark_resumed_with_the_other_orientation_is_refused(photos, tmp_path, capsys):
    from hf_iqa.cli import main

    benchmark(photos, tmp_path / "out", "koniq10k")
    argv = ["benchmark", "--model", photos["model"], "--dataset", "koniq10k", "--data-root",
            str(photos["base"] / "koniq10k"), "--output-dir", str(tmp_path / "out"), "--no-progress",
            "--exif-transpose"]  # fmt: skip
    assert main(argv) == 1
    assert "exif_transpose" in capsys.readouterr().err


def read_scores(path: Path) -> np.ndarray:
    with open(path, newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["path"])
    return np.array([float(row["score"]) for row in rows])


def test_score_turns_photos_by_default_and_records_the_choice(photos, tmp_path, capsys):
    from hf_iqa.cli import main

    scores = expected_scores(photos)
    folder = str(photos["base"] / "koniq10k" / "1024x768")
    for flag, turned in (([], True), (["--no-exif-transpose"], False), (["--exif-transpose"], True)):
        output = tmp_path / f"scores{len(flag)}{turned}.csv"
        assert main(["score", "--model", photos["model"], folder, "-o", str(output), "--no-progress", *flag]) == 0
        np.testing.assert_allclose(read_scores(output), scores[turned], atol=1e-6)
        record = json.loads(Path(f"{output}.meta.json").read_text())
        assert record["comparable"]["exif_transpose"] is turned
    before = output.read_bytes()
    argv = ["score", "--model", photos["model"], folder, "-o", str(output), "--resume", "--no-exif-transpose"]
    assert main([*argv, "--no-progress"]) == 2  # rows of the other reading are never mixed in
    assert "--exif-transpose" in capsys.readouterr().err
    assert output.read_bytes() == before


def test_records_written_before_the_choice_read_as_turned():
    from hf_iqa import provenance

    old = provenance.run_record("m", "m", exif_transpose=None)  # hf_iqa before the choice: always turned
    assert provenance.check_resume(old, provenance.run_record("m", "m", exif_transpose=True)) == []
    with pytest.raises(provenance.ProvenanceMismatch, match="exif-transpose"):
        provenance.check_resume(old, provenance.run_record("m", "m", exif_transpose=False))


def test_every_scorer_reads_with_the_chosen_orientation(photos):
    """The ONNX path (`ImageScorer` around an image scorer) and the pipeline path (`PipelineScorer`) take the same
    choice, per item and from bytes as from paths (tar members, dataset cells)."""
    from hf_iqa.scoring import ImageScorer, Item, load_item_image

    path = next((photos["base"] / "koniq10k" / "1024x768").glob("*.jpg"))

    class Sizes:
        def preprocess(self, image):
            return image.size

    for turn, size in ((True, (12, 24)), (False, (24, 12))):
        assert ImageScorer(Sizes(), exif_transpose=turn).prepare(Item(key="a", source=str(path))) == size
        assert load_item_image(Item(key="b", source=path.read_bytes()), exif_transpose=turn).size == size
        assert load_item_image(Item(key="c", source={"bytes": path.read_bytes()}), exif_transpose=turn).size == size
