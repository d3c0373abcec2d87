"""`hf-iqa demo`: the scoring behind the web app on tiny models, and the running app called through gradio_client."""

from __future__ import annotations

import csv
import os
import re
import socket

import pytest
from PIL import Image

import hf_iqa
from hf_iqa import demo
from hf_iqa.cli import build_parser
from tests.models.dog_iqa.test_pipeline_dog_iqa import dog_dir  # noqa: F401  (fixture: a tiny Dog-IQA folder)
from tests.test_pipeline_cli import liqe_dir  # noqa: F401  (fixture: a tiny converted LIQE folder)
from tests.testing_utils import random_image


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_photos")
    paths = []
    for i, (w, h) in enumerate([(300, 240), (256, 320)]):
        paths.append(str(root / f"photo{i}.jpg"))
        random_image(w, h, seed=30 + i).save(paths[-1], quality=90)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return paths, str(root / "broken.jpg")


@pytest.fixture(autouse=True)
def fresh_model_cache(monkeypatch):
    monkeypatch.setattr(demo, "_PIPELINES", {})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_scores_equal_the_pipeline_and_problems_are_reported(liqe_dir, photos):  # noqa: F811
    good, broken = photos
    outcome = demo.score([good[0], broken, good[1]], [str(liqe_dir), "./no/such/folder"])
    expected = hf_iqa.pipeline(model=str(liqe_dir))(good)
    scored = [r for r in outcome["rows"] if r.get("result")]
    assert [r["image"] for r in scored] == ["photo0.jpg", "photo1.jpg"]
    assert [r["result"] for r in scored] == expected  # the whole dicts, not only the score
    assert outcome["meta"] == {str(liqe_dir): {"range": (1.0, 5.0), "higher_is_better": True}}
    assert any(m.startswith("broken.jpg: corrupt") or m.startswith("broken.jpg:") for m in outcome["messages"])
    assert any(m.startswith("./no/such/folder: ") and "no such model folder" in m for m in outcome["messages"])
    html = demo.render_scores(outcome)
    shown = re.findall(r'data-image="([^"]+)" data-model="[^"]+">([0-9.]+)<', html)
    assert shown == [("photo0.jpg", f"{expected[0]['score']:.4f}"), ("photo1.jpg", f"{expected[1]['score']:.4f}")]
    assert "range 1-5, higher is better" in html
    details = demo.render_details(outcome)
    for field in ("level_probs", "scene_probs", "distortion_probs"):
        assert details.count(f"<b>{field}</b>") == 2


def test_unavailable_zoo_model_says_what_to_do_offline(photos):
    outcome = demo.score(photos[0][:1], ["liqe"])
    assert outcome["rows"] == [] and outcome["meta"] == {}
    (message,) = outcome["messages"]
    assert message.startswith("liqe: ") and "hf-iqa convert" in message and "offline" in message


def test_models_are_loaded_once(liqe_dir, photos, monkeypatch):  # noqa: F811
    calls = []
    original = hf_iqa.pipeline
    monkeypatch.setattr(hf_iqa, "pipeline", lambda **kw: calls.append(kw) or original(**kw))
    first = demo.score(photos[0], [str(liqe_dir)])
    second = demo.score(photos[0], [str(liqe_dir)])
    assert len(calls) == 1
    assert [r["result"] for r in first["rows"]] == [r["result"] for r in second["rows"]]


def test_csv_holds_every_output(liqe_dir, photos, tmp_path):  # noqa: F811
    good, broken = photos
    outcome = demo.score([*good, broken], [str(liqe_dir)])
    path = demo.write_csv([demo.flat_row(r, outcome["meta"]) for r in outcome["rows"]], directory=str(tmp_path))
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    assert [r["image"] for r in rows] == ["broken.jpg", "photo0.jpg", "photo1.jpg"]
    assert rows[0]["error"] and rows[0]["score"] == ""
    expected = hf_iqa.pipeline(model=str(liqe_dir))(good)
    for row, result in zip(rows[1:], expected):
        assert float(row["score"]) == result["score"] and row["score_max"] == "5.0"
        assert row["higher_is_better"] == "True" and row["scene"] == result["scene"]
        assert float(row["level_probs.good"]) == result["level_probs"]["good"]
    assert demo.write_csv([], directory=str(tmp_path)) != path  # a fresh file per request, nothing overwritten


def test_the_download_says_what_produced_it(liqe_dir, photos, tmp_path):  # noqa: F811
    """Next to the CSV, `<csv>.meta.json`: per model the provenance record (as named and resolved, digests of its
    files, dtype, device, versions, time); a model that could not be loaded has none."""
    import json

    from hf_iqa.provenance import folder_digests

    outcome = demo.score(photos[0], [str(liqe_dir), "./no/such/folder"], max_pixels=1_000_000)
    path = demo.write_csv([demo.flat_row(r, outcome["meta"]) for r in outcome["rows"]], directory=str(tmp_path))
    meta_path = demo.write_provenance(path, [str(liqe_dir), "./no/such/folder"], max_pixels=1_000_000)
    assert meta_path == path + ".meta.json"
    document = json.loads(open(meta_path, encoding="utf-8").read())
    assert document["produced_by"] == "hf-iqa demo" and document["scores"] == "hf_iqa_scores.csv"
    (record,) = document["records"].values()
    assert record["info"]["model"] == str(liqe_dir) and record["info"]["device"] == "cpu"
    assert record["comparable"]["model"]["files"] == folder_digests(liqe_dir) != {}
    assert record["comparable"]["dtype"] == "float32" and record["comparable"]["max_pixels"] == 1_000_000
    assert record["versions"]["hf-iqa"] and record["versions"]["torch"] and record["info"]["time"]


def test_dog_iqa_region_map_and_region_scores(dog_dir):  # noqa: F811
    image = str(dog_dir / "img0.png")
    outcome = demo.score([image], [str(dog_dir / "dog")])
    (row,) = outcome["rows"]
    expected = hf_iqa.pipeline(model=str(dog_dir / "dog"))(image, return_visualization=True)
    picture = expected.pop("visualization")
    assert row["result"] == expected
    ((shown, caption),) = outcome["pictures"]
    assert shown.size == picture.size and shown.tobytes() == picture.tobytes()
    assert caption.startswith("img0.png") and f"{expected['score']:.4f}" in caption
    details = demo.render_details(outcome)
    assert details.count("<tr><td>") == expected["num_regions"]


def test_too_many_images_are_reported_not_scored(liqe_dir, photos, monkeypatch):  # noqa: F811
    monkeypatch.setattr(demo, "MAX_IMAGES", 1)
    outcome = demo.score(photos[0], [str(liqe_dir)])
    assert [(r["image"], r["model"]) for r in outcome["rows"] if r.get("result")] == [("photo0.jpg", str(liqe_dir))]
    assert outcome["messages"] == ["photo1.jpg: not scored: at most 1 images per request"]


def test_uploads_pass_the_raster_only_gate(liqe_dir, photos, tmp_path, monkeypatch):  # noqa: F811
    """An EPS payload named .png is refused with one line, before any decoder outside the raster list (a fake `gs`
    first on PATH records being started); an unreadable file is one row and one message for all models."""
    tools = tmp_path / "bin"
    tools.mkdir()
    called = tmp_path / "gs_called"
    (tools / "gs").write_text(f"#!/bin/sh\ntouch {called}\n")
    (tools / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    eps = tmp_path / "evil.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    big = tmp_path / "big.png"
    Image.new("L", (400, 300)).save(big)
    outcome = demo.score([str(eps), photos[0][0], str(big)], [str(liqe_dir), str(liqe_dir)], max_pixels=100_000)
    assert not called.exists()
    problems = [(r["image"], r["error"]) for r in outcome["rows"] if not r.get("result")]
    assert [name for name, _ in problems] == ["evil.png", "big.png"]
    assert "not an image hf_iqa can read" in problems[0][1] and "100,000" in problems[1][1]
    assert [m.split(":")[0] for m in outcome["messages"]] == ["evil.png", "big.png"]
    assert outcome["images"] == ["photo0.jpg"]


def test_cli_binds_locally_and_never_shares_by_default(monkeypatch):
    from hf_iqa.commands import demo as command

    parser, chosen = build_parser(["demo"])
    args = parser.parse_args(["demo"])
    assert chosen == "demo" and args.host == "127.0.0.1" and args.port == 7860 and args.share is False
    assert args.max_pixels is None and command.DEFAULT_MODELS == demo.DEFAULT_MODELS
    seen = {}
    monkeypatch.setattr(demo, "launch", lambda models, **kw: seen.update(models=models, **kw))
    args = parser.parse_args(["demo", "--model", "a", "--model", "b", "--port", "9999", "--max-pixels", "1000"])
    assert command.run(args) == 0
    assert seen == {"models": ["a", "b"], "host": "127.0.0.1", "port": 9999, "share": False, "max_pixels": 1000,
                    "exif_transpose": True}  # fmt: skip
    assert command.run(parser.parse_args(["demo", "--no-exif-transpose"])) == 0
    assert seen["exif_transpose"] is False


def test_uploads_are_turned_by_their_exif_tag_unless_told(liqe_dir, tmp_path):  # noqa: F811
    """A phone photo (orientation 6) is scored as a viewer shows it; `exif_transpose=False` scores the stored
    pixels, and the download's record says which."""
    import json

    import numpy as np

    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    random_image(96, 48, seed=5).save(path, quality=95, exif=exif.tobytes())
    pipe = hf_iqa.pipeline(model=str(liqe_dir))
    with Image.open(path) as opened:
        stored = np.asarray(opened.convert("RGB")).copy()
    for turn, pixels in ((True, np.ascontiguousarray(np.rot90(stored, k=-1))), (False, stored)):
        outcome = demo.score([str(path)], [str(liqe_dir)], exif_transpose=turn)
        assert outcome["rows"][0]["result"]["score"] == pytest.approx(pipe(pixels)["score"], abs=1e-6)
        rows = [demo.flat_row(r, outcome["meta"]) for r in outcome["rows"]]
        csv_path = demo.write_csv(rows, directory=str(tmp_path / str(turn)))
        meta = json.loads(open(demo.write_provenance(csv_path, [str(liqe_dir)], exif_transpose=turn)).read())
        assert next(iter(meta["records"].values()))["comparable"]["exif_transpose"] is turn


def test_app_through_gradio_client(liqe_dir, photos):  # noqa: F811
    from gradio_client import Client, handle_file

    app = demo.build_demo([str(liqe_dir)])
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
               max_file_size=demo.MAX_UPLOAD)  # fmt: skip
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        good, broken = photos
        scores_html, messages, details, regions, table, csv_file, meta_file = client.predict(
            [handle_file(p) for p in [*good, broken]], [str(liqe_dir)], api_name="/score"
        )
    finally:
        app.close()
    expected = hf_iqa.pipeline(model=str(liqe_dir))(good)
    shown = re.findall(r'class="hf-iqa-score"[^>]*>([0-9.]+)<', scores_html)
    assert shown == [f"{r['score']:.4f}" for r in expected]
    assert "broken.jpg" in messages and "scene_probs" in details and regions == []
    assert [row[2] for row in table["data"][1:]] == [round(r["score"], 4) for r in expected]
    rows = list(csv.DictReader(open(csv_file, encoding="utf-8")))
    assert [float(r["score"]) for r in rows if r["score"]] == [r["score"] for r in expected]
    assert str(liqe_dir) in open(meta_file, encoding="utf-8").read() and meta_file.endswith(".csv.meta.json")


def test_launch_settings(monkeypatch, capsys):
    """What `hf-iqa demo` and app.py pass to Gradio: local address, no share link, the upload cap; a model that
    cannot be loaded is reported at start and the app still starts."""
    import gradio as gr

    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    demo.launch(["./missing/model"])
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] == 7860 and seen["share"] is False
    assert seen["max_file_size"] == demo.MAX_UPLOAD == "50mb"
    assert "hf-iqa demo: ./missing/model: no such model folder\n" in capsys.readouterr().out


BOUND_SCRIPT = """
import json, resource, sys
from hf_iqa import demo
model, paths = sys.argv[1], sys.argv[2:]
demo.get_pipeline(model)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = demo.score(paths, [model])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scored = sum(1 for row in outcome["rows"] if row.get("result"))
print(json.dumps({"loaded_mb": loaded / 1024, "peak_mb": peak / 1024, "scored": scored}))
"""

REQUEST_BOUND_MB = 512  # one decoded image at ~14 bytes/pixel (350 MB at 25 Mpx) + a batch; all 32 first: > 2.4 GB


def test_a_request_of_32_large_canvas_pngs_stays_under_the_bound(liqe_dir, tmp_path):  # noqa: F811
    """32 PNGs of a few KB that each decode to 5000x5000 RGB (75 MB): decoded one at a time, the request raises
    the process's peak RSS by less than REQUEST_BOUND_MB over the loaded model (the whole process stayed under
    1 GB here, torch included); the code that decoded the whole request first needed 32 x 75 MB more."""
    import json
    import signal
    import subprocess
    import sys

    paths = []
    for i in range(32):
        paths.append(str(tmp_path / f"canvas{i:02d}.png"))
        Image.new("1", (5000, 5000), i % 2).save(paths[-1])
    assert max(os.path.getsize(p) for p in paths) < 16_000
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-c", BOUND_SCRIPT, str(liqe_dir), *paths], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err[-3000:]
    figures = json.loads(out.strip().splitlines()[-1])
    print(figures)
    assert figures["scored"] == 32
    assert figures["peak_mb"] - figures["loaded_mb"] < REQUEST_BOUND_MB, figures


def test_demo_help_imports_nothing_heavy():
    """`hf-iqa demo --help` reads only hf_iqa/commands/demo.py: no Gradio, torch, transformers, not even Pillow."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom hf_iqa.cli import main\ntry:\n    main(['demo', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('gradio', 'torch', 'transformers', 'PIL', 'numpy') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                            start_new_session=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--max-pixels N" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
