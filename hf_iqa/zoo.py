"""Model names users can type (`liqe-mix`, `qualiclip`, ...) and where each one's weights come from.

Resolution order for a name (`resolve`):
1. the converted Hub repo (safetensors + config + code), when the entry names one and it can be reached;
2. else the original checkpoint where its authors or pyiqa publish it on the Hub, fetched with `hf_hub_download`
   (so mirrors, `HF_ENDPOINT`, the HF cache and offline mode all work), loaded with `weights_only=True`,
   converted once with the same converter as `hf-iqa convert`, and cached as a safetensors folder keyed by the
   original's sha256 under `$HF_IQA_CACHE` (default `$HF_HOME/hf_iqa`);
3. else one clear error naming the file to download and the `hf-iqa convert` command to run (both work as
   printed).

Hashes of the originals: trust on first use. No pinned digests exist yet, so the sha256 of an original is
recorded (under `<cache>/trusted/`) the first time it is converted successfully, and every later use hashes the
file again and refuses it, with a clear error, when the digest differs from the record. When a digest is known,
pin it in `OriginalFile.sha256` below; a pinned digest is checked instead of the record.

Whether the Hub is reachable is asked once, with one request and a short timeout (`PROBE_TIMEOUT_S`) and no
retries; when it is not (or `HF_HUB_OFFLINE=1`), only the local caches are used, so a first use without network
fails in seconds, not after minutes of retries.

The cache survives concurrency and kills: each converted folder is built under an inter-process lock
(`filelock`; the operating system releases it when a process dies), in a staging folder that is renamed into
place only when complete; staging folders of killed conversions are removed by the next conversion.

Progress (download bars, conversion stages) goes to stderr; `progress=False` or the environment variable
`HF_IQA_NO_PROGRESS=1` hides it.

A folder or a Hub id `org/name` is returned unchanged; a name that is neither (a typo) is one
`UnknownModelError` naming the closest names, a local path that does not exist is "no such model folder", and a Hub
id that is neither cached nor reachable is one error: none of these touches the network more than the one probe.
The table of names lives in `hf_iqa.zoo_entries` (re-exported here). This module imports neither torch nor
transformers at module level (`hf-iqa list` stays fast).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from hf_iqa.converters._support import say
from hf_iqa.progress import progress_enabled
from hf_iqa.zoo_entries import (  # noqa: F401  (the public names of the table are re-exported here)
    _ENTRIES,
    PYIQA_WEIGHTS,
    ModelNotAvailableError,
    OriginalFile,
    UnknownModelError,
    ZooEntry,
    _closest_names,
    get_entry,
    known_names,
    list_models,
    register,
)

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0  # one request, no retries: is the Hub reachable at all?
# Part of the converted-folder cache key: bump it when folders converted by an earlier hf_iqa no longer load or
# score correctly, so they are converted again. 2: LIQE's prompt features renamed (`prompt_text_features`), UniQA
# stores its prompt ensembles' features.
CONVERTED_FORMAT = 2
STALE_LEGACY_STAGING_S = 3600  # staging folders of older hf_iqa versions (no lock) are removed after an hour


def cache_root() -> Path:
    if os.environ.get("HF_IQA_CACHE"):
        return Path(os.environ["HF_IQA_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hf_iqa"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


# ----------------------------------------------------------------------------------------------------------------
# The Hub: reachable or not, downloads with or without bars
# ----------------------------------------------------------------------------------------------------------------
_PROBES: dict[str, tuple[float, bool]] = {}


def hub_reachable(repo_id: str = PYIQA_WEIGHTS, filename: str = "README.md") -> bool:
    """False in offline mode, or when one metadata request (no retries, `PROBE_TIMEOUT_S`) gets no answer from the
    Hub; an HTTP answer of any status counts as reachable. Remembered for a minute per endpoint."""
    from huggingface_hub import constants, get_hf_file_metadata
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        return False
    endpoint = constants.ENDPOINT
    known = _PROBES.get(endpoint)
    if known and time.monotonic() - known[0] < 60:
        return known[1]
    try:
        get_hf_file_metadata(f"{endpoint}/{repo_id}/resolve/main/{filename}", timeout=PROBE_TIMEOUT_S)
        reachable = True
    except HfHubHTTPError:
        reachable = True
    except Exception as error:  # connection refused, DNS failure, timeout, proxy errors ...
        logger.info("hf_iqa: the Hub at %s is not reachable (%s)", endpoint, _one_line(error))
        reachable = False
    _PROBES[endpoint] = (time.monotonic(), reachable)
    return reachable


def _tqdm_class(progress: bool):
    """huggingface_hub's bar class, silenced when progress is off."""
    from huggingface_hub.utils import tqdm

    if progress:
        return None

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _convert_command(entry: ZooEntry, output_dir: str) -> str:
    files = " ".join(f"{o.option} {o.filename}" for o in entry.originals)
    options = " ".join(entry.convert_options)
    return " ".join(p for p in ("hf-iqa convert", entry.family, files, options, "--output-dir", output_dir) if p)


def _manual_instructions(entry: ZooEntry, reason: str) -> str:
    """One short message: why, then commands that work when copied as printed."""
    lines = [f"hf_iqa: cannot get the weights of {entry.name!r}: {reason}."]
    if not entry.originals:
        if entry.manual:
            lines.append(entry.manual)
        return "\n".join(lines)
    folder = f"./{entry.name}"
    lines.append(
        f"Download the original into the current folder (needs network), convert it, then use {folder} as the model "
        f"(--model {folder}):"
    )
    for original in entry.originals:
        lines.append(f"  hf download {original.repo_id} {original.filename} --local-dir .")
    lines.append(f"  {_convert_command(entry, folder)}")
    return "\n".join(lines)


def _try_converted_repo(entry: ZooEntry, revision: str | None, online: bool, progress: bool) -> str | None:
    from huggingface_hub import snapshot_download

    if not entry.hub_repo:
        return None
    try:
        return snapshot_download(
            entry.hub_repo, revision=revision, local_files_only=not online, tqdm_class=_tqdm_class(progress)
        )
    except Exception as error:  # not published, not cached, not reachable: fall back to the original
        logger.info("hf_iqa: converted repo %s not available (%s); trying the original checkpoint", entry.hub_repo,
                    type(error).__name__)  # fmt: skip
        return None


def _download(entry: ZooEntry, original: OriginalFile, online: bool, progress: bool) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if online and not isinstance(try_to_load_from_cache(original.repo_id, original.filename), str):
        say(f"hf_iqa: {entry.name}: downloading {original.filename} from {original.repo_id}", progress)
    try:
        return Path(
            hf_hub_download(
                original.repo_id, original.filename, local_files_only=not online, tqdm_class=_tqdm_class(progress)
            )
        )
    except Exception as error:  # not cached offline; HTTP errors, a cache entry that vanished, a full disk ...
        if not online and isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            reason = f"{original.filename} is not in the Hugging Face cache and the Hub is not reachable"
        else:
            reason = f"downloading {original.filename} failed ({type(error).__name__}: {_one_line(error)})"
    raise ModelNotAvailableError(_manual_instructions(entry, reason))


# ----------------------------------------------------------------------------------------------------------------
# Trust on first use
# ----------------------------------------------------------------------------------------------------------------
def _record_path(original: OriginalFile) -> Path:
    return cache_root() / "trusted" / f"{original.repo_id.replace('/', '--')}--{original.filename}.json"


def _check_digest(original: OriginalFile, path: Path, digest: str) -> None:
    """Refuse a file whose sha256 differs from the pinned digest or from the one recorded at first use."""
    if original.sha256:
        if digest != original.sha256:
            raise ModelNotAvailableError(
                f"hf_iqa: refusing {path}: its sha256 is {digest}, but hf_iqa pins {original.sha256} for "
                f"{original.repo_id}/{original.filename}; the file is corrupt or was replaced. Delete it from the "
                "Hugging Face cache and try again."
            )
        return
    record = _record_path(original)
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as error:
        raise ModelNotAvailableError(f"hf_iqa: cannot read the digest record {record}: {_one_line(error)}") from None
    if recorded.get("sha256") != digest:
        raise ModelNotAvailableError(
            f"hf_iqa: refusing {original.repo_id}/{original.filename}: its sha256 is now {digest}, but the copy first "
            f"used here (recorded {recorded.get('recorded', '?')} in {record}) had {recorded.get('sha256')}. It was "
            "replaced upstream or in the cache; if you trust the new file, delete that record and run again."
        )


def _record_digest(original: OriginalFile, digest: str) -> None:
    """Write the first-use record unless one exists (created atomically: a hard link never replaces a file)."""
    if original.sha256:
        return
    record = _record_path(original)
    if record.exists():
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    data = {"repo_id": original.repo_id, "filename": original.filename, "sha256": digest,
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    handle, tmp = tempfile.mkstemp(prefix=".record-", dir=record.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
        os.link(tmp, record)
    except FileExistsError:  # another process recorded first; its digest was checked against ours before
        pass
    finally:
        os.unlink(tmp)


# ----------------------------------------------------------------------------------------------------------------
# The converted-folder cache: one lock per folder, atomic publication, stale staging removed
# ----------------------------------------------------------------------------------------------------------------
_STAGING = ".staging-"


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _lock(target: Path):
    from filelock import FileLock

    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{target.name}.lock"))


def _remove_stale_staging(parent: Path, own_target: Path) -> None:
    """Staging folders left by killed conversions: ours (we hold the lock), other folders' when their lock is
    free, and unlocked ones of older hf_iqa versions once they are an hour old."""
    from filelock import Timeout

    for staging in parent.iterdir():
        if not staging.name.startswith(".") or not staging.is_dir():
            continue
        if staging.name.startswith(_STAGING):
            target_name = staging.name[len(_STAGING) :].rsplit("-", 1)[0]
            if target_name != own_target.name:
                lock = _lock(parent / target_name)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue  # being converted right now
                try:
                    shutil.rmtree(staging, ignore_errors=True)
                finally:
                    lock.release()
                continue
        elif time.time() - staging.stat().st_mtime < STALE_LEGACY_STAGING_S:
            continue
        shutil.rmtree(staging, ignore_errors=True)


def _build_once(entry: ZooEntry, paths: list[Path], target: Path, progress: bool) -> str:
    """Run the entry's converter into `target` unless a finished folder is already there. Processes converting
    the same folder wait for each other (the first converts, the others use its result)."""
    from filelock import Timeout

    if _complete(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(target)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"hf_iqa: {entry.name}: another process is converting it; waiting for it to finish", progress)
        lock.acquire()
    try:
        if _complete(target):
            return str(target)
        _remove_stale_staging(target.parent, target)
        names = ", ".join(p.name for p in paths) or "its config"
        say(f"hf_iqa: {entry.name}: first use: converting {names} once into {target}", progress)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{target.name}-", dir=target.parent))
        try:
            try:
                entry.convert(paths, staging, progress=progress)
            except Exception as error:
                logger.debug("conversion of %s failed", entry.name, exc_info=True)
                raise ModelNotAvailableError(
                    f"hf_iqa: cannot convert {names} into {entry.name!r}: {type(error).__name__}: {_one_line(error)}"
                ) from None
            if target.exists():  # an unfinished folder of an older version; we hold the lock, nobody writes it
                shutil.rmtree(target)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()
    say(f"hf_iqa: {entry.name}: ready ({target})", progress)
    return str(target)


# ----------------------------------------------------------------------------------------------------------------
# Resolution
# ----------------------------------------------------------------------------------------------------------------
def _check_required_repos(entry: ZooEntry, online: bool) -> None:
    """Offline, a model that loads other Hub repos (Dog-IQA) needs them in the cache: say which, and how."""
    from huggingface_hub import try_to_load_from_cache

    if online or not entry.requires:
        return
    missing = [repo for repo in entry.requires if not isinstance(try_to_load_from_cache(repo, "config.json"), str)]
    if missing:
        commands = " && ".join(f"hf download {repo}" for repo in missing)
        raise ModelNotAvailableError(
            f"hf_iqa: cannot load {entry.name!r}: it needs the checkpoints {', '.join(missing)}, which are not in the "
            f"Hugging Face cache, and the Hub is not reachable. With network access, fill the cache once: {commands}"
        )


def _from_original(entry: ZooEntry, online: bool, progress: bool) -> str:
    if entry.convert is None:
        raise ModelNotAvailableError(_manual_instructions(entry, "its weights are not published on the Hub"))
    if not entry.originals:  # nothing to download (config-only models): build the folder once
        _check_required_repos(entry, online)
        return _build_once(entry, [], cache_root() / "converted" / f"{entry.name}-default", progress)
    paths, digests = [], []
    for original in entry.originals:
        path = _download(entry, original, online, progress)
        digest = _sha256(path)
        _check_digest(original, path, digest)
        paths.append(path)
        digests.append(digest)
    key = hashlib.sha256(f"format {CONVERTED_FORMAT}:{''.join(digests)}".encode()).hexdigest()[:16]
    folder = _build_once(entry, paths, cache_root() / "converted" / f"{entry.name}-{key}", progress)
    for original, digest in zip(entry.originals, digests):
        _record_digest(original, digest)
    return folder


def _looks_like_local_path(name: str) -> bool:
    """Clearly meant as a folder on this machine: absolute, home- or dot-relative, deeper than `org/name`, or its
    parent folder (or its first component) exists here. Anything else with one slash is a Hub id."""
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name.count("/") > 1:
        return True
    if os.sep != "/" and os.sep in name:
        return True
    parent = os.path.dirname(name.rstrip("/" + os.sep))
    return bool(parent) and os.path.isdir(parent)


def _cached_hub_model(repo_id: str, revision: str | None) -> bool:
    """The Hub model's config is in the local Hugging Face cache (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except Exception:  # an id the Hub would refuse (bad characters ...): not cached
        return False


def _check_unknown_name(name: str, revision: str | None) -> None:
    """One line, and no network retries, for a name that is neither a zoo name, a folder, nor a reachable Hub id."""
    if _looks_like_local_path(name):
        raise ModelNotAvailableError(f"{name}: no such model folder")
    if "/" not in name:  # not `org/name`: a mistyped zoo name
        closest = _closest_names(name)
        hint = f"; did you mean: {', '.join(closest)}?" if closest else " (see `hf-iqa list`)"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    if not _cached_hub_model(name, revision) and not hub_reachable():
        raise ModelNotAvailableError(
            f"{name}: not in the local Hugging Face cache, and the Hub is not reachable (offline mode or no network)"
        )


def resolve(name_or_path: str, revision: str | None = None, progress: bool | None = None) -> str:
    """A local folder or Hub id for `name_or_path` (see the module docstring for the order). Raises
    `ModelNotAvailableError` (one clear message) when a zoo name's weights cannot be obtained or converted.
    `progress`: download bars and conversion stages on stderr (default: on unless HF_IQA_NO_PROGRESS is set)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    entry = get_entry(name_or_path)
    if entry is None:
        _check_unknown_name(name_or_path, revision)
        return name_or_path
    progress = progress_enabled(progress)
    probe = (
        entry.originals[0]
        if entry.originals
        else OriginalFile(entry.requires[0], "config.json")
        if entry.requires
        else None
    )
    online = hub_reachable(probe.repo_id, probe.filename) if probe else hub_reachable()
    return _try_converted_repo(entry, revision, online, progress) or _from_original(entry, online, progress)


def load(name_or_path: str, revision: str | None = None, progress: bool | None = None, **kwargs):
    """`AutoModel.from_pretrained` for a zoo name, a folder or a Hub id (kwargs: dtype, device_map, ...)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(resolve(name_or_path, revision, progress), **kwargs)
