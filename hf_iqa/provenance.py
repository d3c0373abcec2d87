"""What produced an output: a small JSON record stored next to every score file, so that `--resume` never mixes
models, weights or settings in one file, and a reader can tell later whether two outputs are comparable.

A record has three parts:
- `comparable`: what must match for `--resume` to append rows (the model's file digests, the `--model-arg` and
  `--processor-arg` overrides, dtype, max-pixels, exif-transpose). A difference is refused with one line.
- `versions`: hf_iqa, transformers, torch, onnxruntime, Pillow, numpy. A difference only warns: a new release can
  move scores in the last digits, but refusing would strand every half-finished run at each upgrade.
- `info`: how the run was named and where it ran (model name as typed, folder, Hub id and revision, device,
  command line, time, settings that do not change scores such as batch size). Never compared.

Stored as `<output>.meta.json` (written atomically) and, for Parquet, also in the schema metadata under b"hf_iqa".
Imports neither torch nor transformers: versions come from importlib.metadata.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = 1
SIDECAR_SUFFIX = ".meta.json"
PARQUET_KEY = b"hf_iqa"
MAX_SIDECAR_BYTES = 1 << 20
# Files whose bytes decide the scores: weights, and the JSON configs that hold the folder's defaults.
HASHED_SUFFIXES = (".safetensors", ".bin", ".onnx", ".json")
VERSION_PACKAGES = ("hf-iqa", "transformers", "torch", "onnxruntime", "pillow", "numpy")
SLOW_HASH_BYTES = 2 << 30  # above this, say on stderr why the start takes a moment
LABELS = {"model": "model", "model_args": "--model-arg", "processor_args": "--processor-arg", "dtype": "--dtype",
          "max_pixels": "--max-pixels", "exif_transpose": "--exif-transpose"}  # fmt: skip

_digests: dict[tuple[str, int, int, int], str] = {}


class ProvenanceError(ValueError):
    """A record that cannot be read (damaged, too large, not a regular file) or written: one line, exit 2."""


class ProvenanceMismatch(ProvenanceError):
    """`--resume` onto an output written by another model, other weights or other settings."""


def file_sha256(path: str | os.PathLike) -> str:
    """Streamed sha256 of one file, remembered for the process keyed by (path, size, mtime_ns, inode) so that a
    benchmark of many datasets hashes each checkpoint once. Cost: about 0.4 s per 400 MB from the page cache on
    one core (measured, 2026-12), a cold disk read at disk speed; no digest is cached on disk, where a stale entry
    would certify weights that changed under the same size and time."""
    path = os.path.abspath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def config_sha256(path: str | os.PathLike) -> str:
    """sha256 of a JSON config with `transformers_version` dropped (every save rewrites it, while the settings
    stay the same), keys sorted; the raw bytes' digest for a file over 1 MB (tokenizer.json) or not an object."""
    try:
        config = json.loads(Path(path).read_bytes()) if os.path.getsize(path) < 1 << 20 else None
    except (ValueError, UnicodeDecodeError):
        config = None
    if not isinstance(config, dict):
        return file_sha256(path)
    config.pop("transformers_version", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def folder_digests(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every weight and JSON config file under `folder` (relative path -> hex), hidden entries skipped."""
    root = Path(folder)
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix in HASHED_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    total = sum(p.stat().st_size for p in files)
    if total > SLOW_HASH_BYTES:
        print(f"hashing {total / 2**30:.1f} GiB of weights in {root} for the provenance record", file=sys.stderr)
    return {p.relative_to(root).as_posix(): (config_sha256 if p.suffix == ".json" else file_sha256)(p) for p in files}


def hub_snapshot(folder: str | os.PathLike) -> tuple[str | None, str | None]:
    """(Hub id, commit) for a folder inside the Hugging Face cache (`.../models--ORG--NAME/snapshots/<sha>/...`);
    (None, None) elsewhere. "--" cannot occur in a Hub id, so it maps back to "/" without ambiguity."""
    parts = Path(folder).resolve().parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return parts[i - 1][len("models--") :].replace("--", "/"), parts[i + 1]
    return None, None


def package_versions() -> dict[str, str | None]:
    """Installed versions (None when absent); onnxruntime also as its GPU build."""
    found: dict[str, str | None] = {}
    for name in VERSION_PACKAGES:
        for dist in (name, f"{name}-gpu") if name == "onnxruntime" else (name,):
            try:
                found[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                found[name] = None
    return found


def _plain(value: Any) -> Any:
    """The JSON form of a value, so that a record compares equal to itself after a write and a read."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))


def run_record(
    model: str,
    resolved: str,
    *,
    model_args: dict | None = None,
    processor_args: dict | None = None,
    dtype: str = "float32",
    max_pixels: int | None = None,
    exif_transpose: bool | None = None,
    device: str | None = None,
    not_compared: dict | None = None,
) -> dict:
    """The record of a run: `model` as the user named it, `resolved` the folder (or Hub id) it resolved to,
    `model_args`/`processor_args` the overrides of the folder's defaults (`--model-arg`, `--processor-arg` and any
    processor_kwargs, merged), `not_compared` settings that cannot change a score (e.g. {"batch_size": 32})."""
    is_folder = os.path.isdir(resolved)
    hub_id, revision = hub_snapshot(resolved) if is_folder else (None, None)
    files = folder_digests(resolved) if is_folder else {}
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "python -m " + Path(argv[0]).parent.name
    elif argv:
        argv[0] = os.path.basename(argv[0])
    comparable = {
        "model": {"files": files} if files else {"resolved": resolved},
        "model_args": dict(model_args or {}),
        "processor_args": dict(processor_args or {}),
        "dtype": str(dtype),
        "max_pixels": max_pixels,
        "exif_transpose": exif_transpose,
    }
    info = {
        "model": model,
        "folder": os.path.abspath(resolved) if is_folder else None,
        "hub_id": hub_id if is_folder else resolved,
        "revision": revision,
        "device": device,
        "not_compared": dict(not_compared or {}),
        "argv": argv,
        "python": sys.version.split()[0],
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return {"format": FORMAT, "comparable": _plain(comparable), "versions": package_versions(), "info": _plain(info)}


def sidecar_path(output_path: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(output_path)}{SIDECAR_SUFFIX}")


def write_sidecar(output_path: str | os.PathLike, record: dict) -> Path:
    """Write `<output>.meta.json` atomically (temporary file in the same folder, then os.replace), refusing a
    symlink or anything but a regular file at that path: the record never lands somewhere the user did not name."""
    path = sidecar_path(output_path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ProvenanceError(f"{path}: exists and is not a regular file; remove it or choose another --output")
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide the record from the output's readers
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ProvenanceError(f"{path}: cannot write the provenance record ({e.strerror or e})") from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def parquet_metadata(record: dict) -> dict[bytes, bytes]:
    """Schema metadata for a Parquet output: `schema.with_metadata({**(schema.metadata or {}), **this})`."""
    return {PARQUET_KEY: json.dumps(record, sort_keys=True).encode()}


def _checked(text: str | bytes, where: str) -> dict:
    """A parsed record, or one line naming `where` and what is wrong."""
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProvenanceError(f"{where}: damaged provenance record (not valid JSON: {e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("format"), int):
        raise ProvenanceError(f"{where}: damaged provenance record (not an object with an integer 'format')")
    if record["format"] > FORMAT:
        raise ProvenanceError(f"{where}: provenance record format {record['format']} is newer; upgrade hf_iqa")
    for part in ("comparable", "versions", "info"):
        if not isinstance(record.get(part), dict):
            raise ProvenanceError(f"{where}: damaged provenance record ('{part}' missing or not an object)")
    model = record["comparable"].get("model")
    files = model.get("files", {}) if isinstance(model, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ProvenanceError(f"{where}: damaged provenance record ('comparable.model' is not a model with digests)")
    return record


def _read_sidecar(path: Path) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        reason = "a symlink" if path.is_symlink() else e.strerror
        raise ProvenanceError(f"{path}: cannot read provenance record ({reason})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ProvenanceError(f"{path}: provenance record is not a regular file")
        if st.st_size > MAX_SIDECAR_BYTES:
            raise ProvenanceError(f"{path}: provenance record is {st.st_size} bytes (limit {MAX_SIDECAR_BYTES})")
        return _checked(f.read(MAX_SIDECAR_BYTES + 1), str(path))


def read_record(output_path: str | os.PathLike) -> dict | None:
    """The record of an existing output: its sidecar, else (Parquet, pyarrow installed) the schema metadata;
    None when the output has none (written before records existed)."""
    side = sidecar_path(output_path)
    if side.is_symlink() or side.exists():
        return _read_sidecar(side)
    if Path(output_path).suffix == ".parquet" and Path(output_path).is_file():
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return None
        try:
            meta = pq.read_schema(output_path).metadata or {}
        except Exception as e:  # pyarrow raises several types for a damaged footer
            raise ProvenanceError(f"{output_path}: cannot read the Parquet schema ({e})") from None
        if PARQUET_KEY in meta:
            return _checked(meta[PARQUET_KEY], f"{output_path} (schema metadata)")
    return None


def _model_text(record: dict, file: str | None = None) -> str:
    """`liqe-mix (weights model.safetensors sha256 ab12cd34ef56…)`: the model's name and one file's digest
    (`file`, else its first weight file)."""
    model = record["comparable"]["model"]
    files = model.get("files") or {}
    name = record.get("info", {}).get("model") or model.get("resolved", "?")
    file = file or next((f for f in files if not f.endswith(".json")), None)
    if file is None:
        return str(name)
    kind = "config" if file.endswith(".json") else "weights"
    return f"{name} ({kind} {file} " + (f"sha256 {files[file][:12]}…)" if file in files else "absent)")


def _differences(old: dict, new: dict) -> list[tuple[str, str, str]]:
    """(label, stored, current) for every comparable setting that differs; for the model, the first differing
    weight file (else config file) is named."""
    found = []
    for key in sorted(set(old["comparable"]) | set(new["comparable"])):
        a, b = old["comparable"].get(key), new["comparable"].get(key)
        if key == "exif_transpose":  # unrecorded (records written before the choice existed): turned, as then
            a, b = (True if value is None else value for value in (a, b))
        if a == b:
            continue
        if key == "model":
            fa, fb = a.get("files") or {}, (b or {}).get("files") or {}
            changed = sorted(
                (f for f in set(fa) | set(fb) if fa.get(f) != fb.get(f)), key=lambda f: (f.endswith(".json"), f)
            )
            file = changed[0] if fa and fb else None
            found.append(("model", _model_text(old, file), _model_text(new, file)))
        else:
            found.append((LABELS.get(key, key), json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)))
    return found


def check_resume(
    stored: dict | None, current: dict, *, output: str = "the output", trust_unrecorded: bool = False
) -> list[str]:
    """Whether `--resume` may append the current run's rows to `output`. Raises ProvenanceMismatch (one line) when
    a comparable setting differs, or when there is no record unless `trust_unrecorded`; returns one warning line
    per differing package version."""
    if stored is None:
        if trust_unrecorded:
            return [f"{output} has no provenance record; resuming as told (--trust-unrecorded)"]
        raise ProvenanceMismatch(
            f"{output} has no provenance record (written by an older hf_iqa?), so it cannot be checked to come from "
            "this model and settings; rerun with --resume --trust-unrecorded, --overwrite or another --output"
        )
    diffs = _differences(stored, current)
    if diffs:
        was = ", ".join(f"{label} {a}" for label, a, _ in diffs)
        now = ", ".join(f"{label} {b}" for label, _, b in diffs)
        raise ProvenanceMismatch(
            f"{output} was written with {was}; this run uses {now}; rerun with those settings to continue it, "
            "or with --overwrite or another --output"
        )
    old, new = stored.get("versions", {}), current.get("versions", {})
    return [
        f"{output} was written with {name} {old.get(name)}, this run uses {new.get(name)}; scores may differ slightly"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def record_summary(record: dict) -> str:
    """One short line for the CLI and the demo: model, weights digest, dtype, max-pixels, versions, time."""
    c, v = record["comparable"], record.get("versions", {})
    settings = str(c.get("dtype"))
    if c.get("max_pixels") is not None:
        settings += f", max-pixels {c['max_pixels']}"
    versions = " ".join(f"{k} {v[k]}" for k in ("hf-iqa", "transformers", "torch", "onnxruntime") if v.get(k))
    return f"{_model_text(record)}, {settings}; {versions}; {record['info'].get('time', '?')}"
