"""The provenance record: right digests, resume refusals naming what differs, safe sidecar I/O, no torch needed."""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from hf_iqa import provenance as prov


def make_folder(path, weights=b"weights-1"):
    """A fake model folder: the provenance layer hashes files and never loads the model."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(weights)
    (path / "config.json").write_text('{"model_type": "liqe"}')
    return path


def record(folder, **kwargs):
    return prov.run_record("tiny-liqe", str(folder), **kwargs)


def test_record_has_the_sha256_of_the_weights(tmp_path):
    folder = make_folder(tmp_path / "m", os.urandom(3 << 20))
    rec = record(folder, dtype="bfloat16", max_pixels=1000, exif_transpose=True, not_compared={"batch_size": 8})
    want = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert rec["comparable"]["model"]["files"]["model.safetensors"] == want
    assert rec["comparable"]["dtype"] == "bfloat16" and rec["comparable"]["max_pixels"] == 1000
    assert "batch_size" not in rec["comparable"] and rec["info"]["not_compared"] == {"batch_size": 8}
    assert rec["info"]["folder"] == str(folder) and rec["info"]["hub_id"] is None
    assert rec["info"]["time"].endswith("+00:00")
    assert rec["versions"]["numpy"] == __import__("numpy").__version__
    assert "tiny-liqe (weights model.safetensors sha256 " + want[:12] in prov.record_summary(rec)


def test_changed_weights_are_refused_naming_the_weights(tmp_path):
    folder = make_folder(tmp_path / "m")
    stored = record(folder)
    (folder / "model.safetensors").write_bytes(b"weights-2, retrained")
    with pytest.raises(prov.ProvenanceMismatch) as err:
        prov.check_resume(stored, record(folder), output="scores.csv")
    message = str(err.value)
    assert "\n" not in message and message.startswith("scores.csv was written with model tiny-liqe (weights model.")
    assert hashlib.sha256(b"weights-1").hexdigest()[:12] in message
    assert hashlib.sha256(b"weights-2, retrained").hexdigest()[:12] in message


def test_a_resave_by_another_transformers_is_the_same_model_but_a_changed_setting_is_not(tmp_path):
    folder = make_folder(tmp_path / "m")
    stored = record(folder)
    (folder / "config.json").write_text('{"transformers_version": "9.9", "model_type": "liqe"}')
    assert prov.check_resume(stored, record(folder)) == []
    (folder / "config.json").write_text('{"model_type": "liqe", "logit_scale": 50}')
    with pytest.raises(prov.ProvenanceMismatch, match=r"model tiny-liqe \(config config.json sha256 "):
        prov.check_resume(stored, record(folder))


def test_another_model_arg_is_refused_naming_it(tmp_path):
    folder = make_folder(tmp_path / "m")
    stored = record(folder, model_args={"temperature": 1.0})
    with pytest.raises(prov.ProvenanceMismatch, match=r'--model-arg \{"temperature": 2.0\}'):
        prov.check_resume(stored, record(folder, model_args={"temperature": 2.0}))
    with pytest.raises(prov.ProvenanceMismatch, match="--exif-transpose false"):
        prov.check_resume(record(folder, exif_transpose=False), record(folder, exif_transpose=True))


def test_same_settings_are_accepted_and_versions_only_warn(tmp_path):
    folder = make_folder(tmp_path / "m")
    stored = record(folder, model_args={"n": (1, 2)}, max_pixels=5, not_compared={"batch_size": 1})
    prov.write_sidecar(tmp_path / "scores.csv", stored)
    current = prov.run_record("./m", str(folder), model_args={"n": (1, 2)}, max_pixels=5)  # named otherwise
    assert prov.check_resume(prov.read_record(tmp_path / "scores.csv"), current) == []
    current["versions"]["transformers"] = "99.0"
    (warning,) = prov.check_resume(stored, current, output="scores.csv")
    assert "transformers" in warning and "99.0" in warning


def test_missing_record_is_refused_unless_trusted(tmp_path):
    current = record(make_folder(tmp_path / "m"))
    assert prov.read_record(tmp_path / "scores.csv") is None
    with pytest.raises(prov.ProvenanceMismatch, match="scores.csv has no provenance record.*--trust-unrecorded"):
        prov.check_resume(None, current, output="scores.csv")
    assert prov.check_resume(None, current, output="scores.csv", trust_unrecorded=True)


@pytest.mark.parametrize(
    "kind, reason",
    [("bad json", "not valid JSON"), ("list", "not an object"), ("too large", "limit 1048576"),
     ("fifo", "not a regular file"), ("symlink", "a symlink"), ("no comparable", "'comparable' missing"),
     ("digests a list", "not a model with digests")],
)  # fmt: skip
def test_damaged_sidecar_gives_one_line(tmp_path, kind, reason):
    side = tmp_path / "scores.csv.meta.json"
    if kind == "bad json":
        side.write_text('{"format": 1, ')
    elif kind == "list":
        side.write_text("[1, 2]")
    elif kind == "too large":
        side.write_text(json.dumps({"format": 1, "pad": "x" * (2 << 20)}))
    elif kind == "fifo":
        os.mkfifo(side)
    elif kind == "symlink":
        (tmp_path / "elsewhere.json").write_text(json.dumps(record(make_folder(tmp_path / "m"))))
        side.symlink_to(tmp_path / "elsewhere.json")
    elif kind == "no comparable":
        side.write_text('{"format": 1, "versions": {}, "info": {}}')
    else:
        side.write_text('{"format": 1, "comparable": {"model": {"files": [1]}}, "versions": {}, "info": {}}')
    with pytest.raises(prov.ProvenanceError) as err:
        prov.read_record(tmp_path / "scores.csv")  # a FIFO would block here without O_NONBLOCK
    assert str(err.value).startswith(str(side)) and reason in str(err.value) and "\n" not in str(err.value)


def test_sidecar_is_atomic_and_never_written_through_a_symlink(tmp_path):
    rec = record(make_folder(tmp_path / "m"))
    path = prov.write_sidecar(tmp_path / "scores.csv", rec)
    assert path == tmp_path / "scores.csv.meta.json" and prov.read_record(tmp_path / "scores.csv") == rec
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "scores.csv.meta.json"]  # no temporary left
    target = tmp_path / "precious.txt"
    target.write_text("mine")
    (tmp_path / "out.csv.meta.json").symlink_to(target)
    with pytest.raises(prov.ProvenanceError, match="not a regular file"):
        prov.write_sidecar(tmp_path / "out.csv", rec)
    assert target.read_text() == "mine" and (tmp_path / "out.csv.meta.json").is_symlink()
    with pytest.raises(prov.ProvenanceError, match="cannot write the provenance record"):
        prov.write_sidecar(tmp_path / "no-such-folder" / "out.csv", rec)


def test_parquet_schema_metadata_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rec = record(make_folder(tmp_path / "m"))
    table = pa.table({"path": ["a.jpg"], "score": [3.5]})
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **prov.parquet_metadata(rec)})
    pq.write_table(table, tmp_path / "scores.parquet")
    assert prov.read_record(tmp_path / "scores.parquet") == rec
    pq.write_table(pa.table({"path": ["a.jpg"]}), tmp_path / "old.parquet")
    assert prov.read_record(tmp_path / "old.parquet") is None


def test_hub_snapshot_gives_id_and_revision(tmp_path):
    sha = "0123456789abcdef0123456789abcdef01234567"
    folder = make_folder(tmp_path / "hub" / "models--chaofengc--liqe-mix" / "snapshots" / sha)
    rec = record(folder)
    assert (rec["info"]["hub_id"], rec["info"]["revision"]) == ("chaofengc/liqe-mix", sha)
    assert prov.hub_snapshot(make_folder(tmp_path / "models--x" / "other")) == (None, None)
    assert prov.run_record("org/name", "org/name")["info"]["hub_id"] == "org/name"  # not downloaded: id only


def test_imports_and_records_without_torch(tmp_path):
    folder = make_folder(tmp_path / "m")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from hf_iqa import provenance as p\n"
        f"r = p.run_record('m', {str(folder)!r}); assert 'torch' in r['versions']\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0 and out.strip() == "ok", err
