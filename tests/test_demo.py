"""`hf-iqa demo`: the scoring behind the web app on tiny models, and the running app called through gradio_client."""

from __future__ import annotations

import csv
import json
import re
import socket

import pytest

import hf_iqa
from hf_iqa import demo, provenance
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


def test_too_many_images_are_reported_not_scored(photos, monkeypatch):
    monkeypatch.setattr(demo, "MAX_IMAGES", 1)
    good, bad = demo.read_images(photos[0])
    assert good == [("photo0.jpg", photos[0][0])]
    assert bad == [("photo1.jpg", "not scored: at most 1 images per request")]


def test_cli_binds_locally_and_never_shares_by_default(monkeypatch):
    parser, chosen = build_parser(["demo"])
    args = parser.parse_args(["demo"])
    assert chosen == "demo" and args.host == "127.0.0.1" and args.port == 7860 and args.share is False
    seen = {}
    monkeypatch.setattr(demo, "launch", lambda models, **kw: seen.update(models=models, **kw))
    args = parser.parse_args(["demo", "--model", "a", "--model", "b", "--port", "9999"])
    assert demo.run(args) == 0
    assert seen == {"models": ["a", "b"], "host": "127.0.0.1", "port": 9999, "share": False}


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
    record = json.loads(open(meta_file, encoding="utf-8").read())["models"][str(liqe_dir)]
    weights = next(liqe_dir.glob("*.safetensors"))
    assert record["comparable"]["model"]["files"][weights.name] == provenance.file_sha256(weights)


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


def test_a_request_of_32_large_canvas_pngs_stays_bounded(liqe_dir, tmp_path):  # noqa: F811
    """Uploads are decoded one at a time while the model runs (issue 24): a request of 32 small PNG files of
    5000x5000 pixels (75 MB each once decoded, 2.4 GB together) raises the peak memory of the process by no more
    than one decoded image and a batch of model inputs above a request of one such file (bound: 400 MB)."""
    import shutil
    import sys

    from PIL import Image

    from tests.testing_utils import run_command

    first = tmp_path / "canvas00.png"
    Image.new("RGB", (5000, 5000), (90, 140, 200)).save(first)
    for i in range(1, 32):
        shutil.copy(first, tmp_path / f"canvas{i:02d}.png")
    code = (
        "import resource, sys\nfrom hf_iqa import demo\n"
        "paths = sys.argv[2:]\nout = demo.score(paths, [sys.argv[1]])\n"
        "assert len([r for r in out['rows'] if r.get('result')]) == len(paths), out['messages']\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    paths = sorted(str(p) for p in tmp_path.glob("canvas*.png"))

    def peak_mb(files: list[str]) -> int:
        result = run_command([sys.executable, "-c", code, str(liqe_dir), *files], timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        return int(result.stdout.split()[-1])

    one, all_32 = peak_mb(paths[:1]), peak_mb(paths)
    assert all_32 - one < 400, f"32 uploads peaked {all_32} MB against {one} MB for one"
