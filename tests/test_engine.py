"""hf_iqa.scoring and `hf-iqa score` on it: the bounded prefetch window, input kinds (folders with hostile entries,
lists, tar shards, datasets), outputs (CSV, JSONL, Parquet), resume after SIGKILL, no clobbering, Ctrl-C,
a two-process torchrun run, and the shared --dtype/--device words. A tiny contract-conforming model (defined in
test_evaluation) keeps every run fast."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_iqa import scoring
from hf_iqa.cli import main
from tests.test_evaluation import TESTS_DIR, TinyIqaModel, save_image, save_tiny_model
from tests.testing_utils import REPO_ROOT

# ---------------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------------


class CountingScorer:
    """Counts inputs prepared but not yet scored; the model is slow so that loaders would run far ahead if they
    could."""

    def __init__(self, bad: set[str] = frozenset()):
        self.lock = threading.Lock()
        self.outstanding = 0
        self.most = 0
        self.bad = bad

    def prepare(self, item):
        if item.key.startswith("unreadable"):
            raise scoring.ImageLoadError(item.key, "cannot read")
        with self.lock:
            self.outstanding += 1
            self.most = max(self.most, self.outstanding)
        return item.key

    def predict(self, prepared):
        time.sleep(0.01)
        with self.lock:
            self.outstanding -= len(prepared)
        if any(key in self.bad for key in prepared):
            raise RuntimeError("this batch holds a bad input")
        return [{"score": float(key.split("-")[1])} for key in prepared]


def numbered(count: int, prefix: str = "img") -> list[scoring.Item]:
    return [scoring.Item(f"{prefix}-{i}", source=i, index=i) for i in range(count)]


@pytest.mark.parametrize("batch_size,prefetch,workers", [(4, 2, 4), (3, 1, 8), (1, 3, 2)])
def test_prepared_inputs_never_exceed_the_window(batch_size, prefetch, workers):
    scorer = CountingScorer()
    results = list(scoring.score_stream(numbered(60), scorer, batch_size=batch_size, workers=workers,
                                       prefetch_batches=prefetch))  # fmt: skip
    assert [r.item.key for r in results] == [f"img-{i}" for i in range(60)]  # input order
    assert [r.output["score"] for r in results] == list(range(60))
    # the batch being scored plus `prefetch` batches ahead, however fast the loaders are
    assert 0 < scorer.most <= (prefetch + 1) * batch_size


def test_bad_inputs_become_error_results_in_order():
    items = numbered(10)
    items[3] = scoring.Item("unreadable-3", source=3, index=3)
    items[6] = scoring.Item("listed-6", error="broken symbolic link", index=6)
    scorer = CountingScorer(bad={"img-8"})
    results = list(scoring.score_stream(items, scorer, batch_size=4, workers=2))
    assert [r.item.key for r in results] == [item.key for item in items]
    errors = {r.item.key: r.error for r in results if r.error}
    assert errors == {"unreadable-3": "cannot read", "listed-6": "broken symbolic link",
                      "img-8": "RuntimeError: this batch holds a bad input"}  # fmt: skip
    assert [r.output["score"] for r in results if not r.error] == [0, 1, 2, 4, 5, 7, 9]  # batch-mates scored


def test_escape_name_and_visual_names():
    assert scoring.escape_name("a\nb\tc\x1bd é") == "a\\nb\\tc\\x1bd é"
    assert scoring.visual_name("/data/a/x.jpg") == "data/a/x.jpg"
    assert scoring.visual_name("../up/x.jpg") == "__/up/x.jpg"
    assert scoring.visual_name("/data/a/x.jpg") != scoring.visual_name("/data/b/x.jpg")


# ---------------------------------------------------------------------------------------------------------------
# Folder scans with hostile entries
# ---------------------------------------------------------------------------------------------------------------


def test_folder_scan_reports_what_it_cannot_score(tmp_path):
    root = tmp_path / "photos"
    save_image(root / "good.png", 1)
    save_image(root / "sub" / "deep.png", 2)
    (root / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "loop1.jpg").symlink_to(root / "loop2.jpg")
    (root / "loop2.jpg").symlink_to(root / "loop1.jpg")
    (root / "sub" / "back").symlink_to(root)  # a folder link back up the tree
    (root / "empty.jpg").mkdir()
    os.mkfifo(root / "pipe.jpg")
    (root / "notes.txt").write_text("not an image")
    items = {item.key.replace(str(root), "R"): item for item in scoring.scan_folder(root)}
    errors = {key: item.error for key, item in items.items() if item.error}
    assert errors == {
        "R/broken.jpg": "broken symbolic link (its target does not exist)",
        "R/loop1.jpg": "symbolic link loop",
        "R/loop2.jpg": "symbolic link loop",
        "R/empty.jpg": "is a directory (named like an image) with no image in it",
        "R/pipe.jpg": "not a regular file: a FIFO (named pipe)",
        "R/sub/back": "link to a folder already scanned (a loop or a duplicate; its images are listed once)",
    }
    assert sorted(k for k, item in items.items() if not item.error) == ["R/good.png", "R/sub/deep.png"]


def test_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome = {}

    def load():
        try:
            scoring.load_item_image(scoring.Item(str(fifo), source=str(fifo)))
        except scoring.ImageLoadError as error:
            outcome["error"] = error.problem

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # opening a FIFO for reading blocks until a writer comes: unblock it, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("the FIFO was opened for reading")
    assert outcome == {"error": "not a regular file: a FIFO (named pipe)"}


# ---------------------------------------------------------------------------------------------------------------
# hf-iqa score end to end
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("engine")
    for i in range(10):
        save_image(base / "photos" / ("a" if i < 5 else "b") / f"img{i:02d}.png", 40 + i)
    return {"base": base, "photos": base / "photos", "model": save_tiny_model(base / "model", seed=5)}


def score(setup, *arguments: str) -> int:
    return main(["score", "--model", setup["model"], "--no-progress", "-b", "3", *arguments])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def by_name(rows: list[dict], field: str = "path") -> dict[str, float]:
    return {Path(r[field]).name: float(r["score"]) for r in rows if not r.get("error")}


def direct(setup, paths: list[Path]) -> dict[str, float]:
    import hf_iqa

    pipe = hf_iqa.pipeline(model=setup["model"])
    return {p.name: pipe(str(p))["score"] for p in paths}


def all_images(setup) -> list[Path]:
    return sorted(setup["photos"].rglob("*.png"))


def test_score_csv_matches_the_pipeline(setup, tmp_path):
    out = tmp_path / "out.csv"
    assert score(setup, str(setup["photos"]), "-o", str(out)) == 0
    rows = read_csv(out)
    assert [r["path"] for r in rows] == [str(p) for p in all_images(setup)]
    expected = direct(setup, all_images(setup))
    assert by_name(rows) == pytest.approx(expected, abs=1e-6)


def test_max_pixels_makes_larger_files_error_rows(setup, tmp_path, monkeypatch):
    from hf_iqa import io as image_io

    monkeypatch.setattr(image_io, "MAX_PIXELS", image_io.MAX_PIXELS)  # restored whatever happens
    images = all_images(setup)
    smallest = min(Image.open(p).width * Image.open(p).height for p in images)
    out = tmp_path / "out.csv"
    assert score(setup, str(setup["photos"]), "-o", str(out), "--max-pixels", str(smallest - 1)) == 1
    rows = read_csv(out)
    assert len(rows) == len(images) and all("larger than" in r["error"] or "limit" in r["error"] for r in rows)
    assert image_io.MAX_PIXELS == 89_478_485  # passed to the reader, the library default is left as it is


def test_resume_still_reports_the_kept_error_rows(setup, tmp_path, capsys):
    """A file that failed before is not retried on --resume, but the run still says so and exits 1."""
    folder = tmp_path / "photos"
    folder.mkdir()
    image = all_images(setup)[0]
    (folder / "good.png").write_bytes(image.read_bytes())
    (folder / "bad.png").write_bytes(image.read_bytes()[:100])
    out = tmp_path / "out.jsonl"
    assert score(setup, str(folder), "-o", str(out)) == 1
    capsys.readouterr()
    assert score(setup, str(folder), "-o", str(out), "--resume") == 1
    assert "1 earlier error row(s)" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 2
    (folder / "bad.png").unlink()
    out.write_text(out.read_text().splitlines()[0] + "\n" if "good" in out.read_text().splitlines()[0] else
                   out.read_text().splitlines()[1] + "\n")  # fmt: skip
    assert score(setup, str(folder), "-o", str(out), "--resume") == 0


def test_existing_output_is_never_replaced_without_a_flag(setup, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    assert score(setup, str(setup["photos"]), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and "--resume" in err and "--overwrite" in err
    assert out.read_text() == "precious\n"
    assert score(setup, str(setup["photos"]), "-o", str(out), "--overwrite") == 0
    assert len(out.read_text().splitlines()) == 10
    image = all_images(setup)[0]
    listing = tmp_path / "list.csv"
    listing.write_text(f"path\n{image}\n")
    assert score(setup, "--from-list", str(listing), "-o", str(listing), "--overwrite") == 2  # output is an input
    assert "is also an input" in capsys.readouterr().err and listing.read_text() == f"path\n{image}\n"


def test_list_tar_and_datasets_inputs_equal_the_files(setup, tmp_path):
    pytest.importorskip("datasets")
    import datasets

    images = all_images(setup)
    expected = direct(setup, images)
    listing = tmp_path / "list.txt"
    listing.write_text("# my images\n" + "\n".join(os.path.relpath(p, tmp_path) for p in images) + "\n")
    assert score(setup, "--from-list", str(listing), "-o", str(tmp_path / "list.csv")) == 0
    assert by_name(read_csv(tmp_path / "list.csv")) == pytest.approx(expected, abs=1e-6)

    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as archive:
        for p in images:
            archive.add(p, arcname=p.name)
            meta = tmp_path / f"{p.stem}.json"
            meta.write_text("{}")
            archive.add(meta, arcname=f"{p.stem}.json")  # WebDataset sidecars are passed over
    assert score(setup, str(shard), "-o", str(tmp_path / "tar.csv")) == 0
    rows = read_csv(tmp_path / "tar.csv")
    assert [r["path"] for r in rows] == [f"{shard}/{p.name}" for p in images]
    assert by_name(rows) == pytest.approx(expected, abs=1e-6)

    table = datasets.Dataset.from_dict(
        {"name": [p.name for p in images], "image": [str(p) for p in images]},
        features=datasets.Features({"name": datasets.Value("string"), "image": datasets.Image()}),
    )
    table.save_to_disk(str(tmp_path / "saved"))
    table.to_parquet(str(tmp_path / "table.parquet"))
    for source in (tmp_path / "saved", tmp_path / "table.parquet"):
        out = tmp_path / f"{source.name}.jsonl"
        assert score(setup, str(source), "--id-column", "name", "-o", str(out)) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert {r["id"]: r["score"] for r in rows} == pytest.approx(expected, abs=1e-6)
    out = tmp_path / "index.csv"
    assert score(setup, str(tmp_path / "saved"), "-o", str(out)) == 0
    assert [r["id"] for r in read_csv(out)] == [str(i) for i in range(len(images))]  # row index without --id-column


def test_parquet_output_reads_back_with_datasets(setup, tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "in"
    folder.mkdir()
    for p in all_images(setup)[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG nope")
    out = tmp_path / "scores.parquet"
    assert score(setup, str(folder), "-o", str(out)) == 1
    table = datasets.Dataset.from_parquet(str(out))
    assert table.column_names == ["path", "key", "score", "error"] and len(table) == 5
    rows = {Path(r["path"]).name: r for r in table}
    assert rows["broken.png"]["score"] is None and "not an image" in rows["broken.png"]["error"]
    expected = direct(setup, sorted(folder.glob("img*.png")))
    assert {k: r["score"] for k, r in rows.items() if k != "broken.png"} == pytest.approx(expected, abs=1e-6)
    assert not (tmp_path / "scores.parquet.journal.jsonl").exists()


def test_control_characters_in_names_keep_one_line_per_image(setup, tmp_path, capsys):
    folder = tmp_path / "odd"
    save_image(folder / "two\nlines.png", 1)
    save_image(folder / "tab\there.png", 2)
    (folder / "bad\nname.png").write_bytes(b"junk")
    assert score(setup, str(folder)) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith(f"{folder}/tab\\there.png\t")
    assert captured.out.splitlines()[1].startswith(f"{folder}/two\\nlines.png\t")
    assert len(captured.out.splitlines()) == 2
    assert f"{folder}/bad\\nname.png\tERROR\t" in captured.err
    out = tmp_path / "odd.csv"
    assert score(setup, str(folder), "-o", str(out)) == 1
    assert len(out.read_text().splitlines()) == 4  # header + one line per image


def test_device_dtype_and_override_keys_are_checked(setup, capsys, monkeypatch):
    image = str(all_images(setup)[0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert score(setup, image, "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err
    assert score(setup, image, "--device", "tpu") == 2
    assert "--device must be one of" in capsys.readouterr().err
    assert score(setup, image, "--processor-arg", "crop_mode=grid") == 2
    err = capsys.readouterr().err
    assert "--processor-arg crop_mode: not a setting of TinyIqaImageProcessor" in err and err.count("\n") == 1
    assert score(setup, image, "--model-arg", "no_such_field=1") == 2
    assert "--model-arg no_such_field: not a setting of TinyIqaConfig" in capsys.readouterr().err
    assert score(setup, image, "--model-arg", "hidden_size=8", "--processor-arg", "do_resize=true") == 0
    for word in ("auto", "fp32", "bf16", "float16"):
        assert scoring.torch_dtype(word) in ("auto", torch.float32, torch.bfloat16, torch.float16)
    assert score(setup, image, "--dtype", "bf16") == 0


def test_ctrl_c_flushes_and_says_how_to_resume(setup, tmp_path, monkeypatch, capsys):
    real = scoring.PipelineScorer.predict
    calls = []

    def interrupted_on_third_batch(self, prepared):
        calls.append(len(prepared))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, prepared)

    monkeypatch.setattr(scoring.PipelineScorer, "predict", interrupted_on_third_batch)
    out = tmp_path / "out.csv"
    assert score(setup, str(setup["photos"]), "-o", str(out)) == 130
    err = capsys.readouterr().err
    assert err.strip() == "hf-iqa score: interrupted after 6 of 10 images; rerun with --resume"
    assert len(read_csv(out)) == 6
    monkeypatch.setattr(scoring.PipelineScorer, "predict", real)
    assert score(setup, str(setup["photos"]), "-o", str(out), "--resume") == 0
    rows = read_csv(out)
    assert sorted(r["path"] for r in rows) == [str(p) for p in all_images(setup)]


class RegionModel(TinyIqaModel):
    def render_regions(self, pixels, outputs, index=0):
        from PIL import Image

        return Image.new("RGB", (4, 4), (index * 40, 0, 0))


def test_visualizations_keep_the_relative_path(setup, tmp_path, monkeypatch):
    import hf_iqa

    real_pipeline = hf_iqa.pipeline

    def with_regions(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        pipe.model.__class__ = RegionModel
        return pipe

    monkeypatch.setattr("hf_iqa.pipeline", with_regions)
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    save_image(first, 1)
    save_image(second, 2)
    pictures = tmp_path / "pictures"
    out = tmp_path / "out.jsonl"
    assert score(setup, str(first), str(second), "-o", str(out), "--save-visualizations", str(pictures)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    saved = [Path(r["visualization"]) for r in rows]
    assert len(set(saved)) == 2 and all(p.is_file() for p in saved)
    assert saved[0] == pictures / scoring.visual_name(str(first)).__add__("_regions.png")


# ---------------------------------------------------------------------------------------------------------------
# Subprocesses: SIGKILL + resume, python -m hf_iqa, two processes under torchrun
# ---------------------------------------------------------------------------------------------------------------

DRIVER = """
import os, sys, time
sys.path.insert(0, {tests_dir!r})
from tests.test_evaluation import TinyIqaModel, register_tiny_model
register_tiny_model()
delay = float(os.environ.get("TINY_DELAY", "0"))
if delay:
    forward = TinyIqaModel.forward
    def slow(self, *args, **kwargs):
        time.sleep(delay)
        return forward(self, *args, **kwargs)
    TinyIqaModel.forward = slow
from hf_iqa.cli import main
sys.exit(main(sys.argv[1:]))
"""


def driver_command(tmp_path: Path) -> list[str]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests_dir=str(TESTS_DIR)))
    return [sys.executable, str(driver)]


def subprocess_env(**extra: str) -> dict[str, str]:
    root = str(REPO_ROOT)
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)


def test_sigkill_then_resume_keeps_rows_and_scores_only_the_rest(setup, tmp_path):
    folder = tmp_path / "photos"
    for p in all_images(setup):
        (folder / p.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / p.parent.name / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out.csv"
    command = [*driver_command(tmp_path), "score", "--model", setup["model"], str(folder), "-o", str(out),
               "-b", "2", "--workers", "1", "--no-progress"]  # fmt: skip

    def start_and_wait_for(rows: int, *extra: str) -> subprocess.Popen:
        process = subprocess.Popen([*command, *extra], env=subprocess_env(TINY_DELAY="0.5"), stderr=subprocess.PIPE,
                                   text=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_text().count("\n") >= rows + 1:  # header + rows
                break
            time.sleep(0.05)
        return process

    process = start_and_wait_for(2)  # SIGTERM (a scheduler stopping the job): one line, exit 130
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    message = process.stderr.read()
    assert "interrupted after" in message and "rerun with --resume" in message and "Traceback" not in message
    assert len(read_csv(out)) >= 2
    process = start_and_wait_for(4, "--resume")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    first = read_csv(out)
    assert 4 <= len(first) < 10, "the run was not killed half-way"
    for row in first:  # scored images replaced by garbage: a rerun that decoded them would write error rows
        Path(row["path"]).write_bytes(b"garbage")
    completed = subprocess.run([*command, "--resume"], env=subprocess_env(), capture_output=True, text=True,
                               timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = read_csv(out)
    assert len(rows) == 10 and rows[: len(first)] == first
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.rglob("*.png"))
    expected = direct(setup, all_images(setup))
    assert by_name(rows) == pytest.approx(expected, abs=1e-6)


def test_python_dash_m_is_the_command_line(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "hf_iqa", "score", "--help"], env=subprocess_env(),
                               capture_output=True, text=True, timeout=120)  # fmt: skip
    assert completed.returncode == 0 and "usage: hf-iqa score" in completed.stdout and "--resume" in completed.stdout


def test_two_processes_equal_one_process_row_for_row(setup, tmp_path):
    single = tmp_path / "single.csv"
    assert score(setup, str(setup["photos"]), "-o", str(single)) == 0
    double = tmp_path / "double.csv"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += driver_command(tmp_path)[1:]
    command += ["score", "--model", setup["model"], str(setup["photos"]), "-o", str(double), "-b", "3",
                "--no-progress", "--device", "cpu"]  # fmt: skip
    completed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    one, two = read_csv(single), read_csv(double)
    assert [r["path"] for r in two] == [r["path"] for r in one]  # every image once, in input order
    np.testing.assert_allclose([float(r["score"]) for r in two], [float(r["score"]) for r in one], atol=1e-6)
    assert not (tmp_path / "double.csv.parts").exists()


def test_processes_share_inputs_disjointly_and_tar_shards_whole(setup, tmp_path, monkeypatch):
    images = all_images(setup)
    shards = []
    for number in range(3):
        shard = tmp_path / f"{number:05d}.tar"
        with tarfile.open(shard, "w") as archive:
            for p in images[number * 3 : number * 3 + 3]:
                archive.add(p, arcname=p.name)
        shards.append(str(shard))
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(
        tarfile, "open", lambda name, *a, **k: opened.append(Path(name).name) or real_open(name, *a, **k)
    )
    for sources, whole in ((shards, True), (shards[:1], False), ([str(setup["photos"]), *shards[:1]], False)):
        inputs = scoring.open_inputs(sources)
        single = [(item.key, tuple(item.index)) for item in inputs.items()]
        shares = []
        for process in range(2):
            opened.clear()
            shares.append(
                [(item.key, tuple(item.index)) for item in inputs.items(process_index=process, num_processes=2)]
            )
            if whole:  # with at least as many shards as processes, no process reads another's shard
                assert opened == [Path(s).name for s in shards[process::2]]
        assert not set(shares[0]) & set(shares[1])
        assert sorted(shares[0] + shares[1], key=lambda pair: pair[1]) == single


def test_parquet_output_interrupted_then_resumed_has_each_image_once(setup, tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    real = scoring.PipelineScorer.predict
    calls = []

    def interrupted_on_second_batch(self, prepared):
        calls.append(len(prepared))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, prepared)

    monkeypatch.setattr(scoring.PipelineScorer, "predict", interrupted_on_second_batch)
    out = tmp_path / "out.parquet"
    assert score(setup, str(setup["photos"]), "-o", str(out)) == 130
    assert len(datasets.Dataset.from_parquet(str(out))) == 3  # what was scored is readable as Parquet
    assert (tmp_path / "out.parquet.journal.jsonl").exists()
    monkeypatch.setattr(scoring.PipelineScorer, "predict", real)
    for _ in range(2):  # a second --resume of a finished run changes nothing
        assert score(setup, str(setup["photos"]), "-o", str(out), "--resume") == 0
        table = datasets.Dataset.from_parquet(str(out), cache_dir=str(tmp_path / f"cache{_}"))
        assert sorted(table["path"]) == [str(p) for p in all_images(setup)]
        assert not (tmp_path / "out.parquet.journal.jsonl").exists()
    assert by_name(list(table)) == pytest.approx(direct(setup, all_images(setup)), abs=1e-6)
