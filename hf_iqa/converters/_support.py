"""Light helpers shared by the converters and the zoo (no torch or transformers here, so `hf-iqa list` and
`hf-iqa convert --help` stay fast): the progress switch, a stage bar, and output folders that a converter may
only replace where it wrote them itself (a manifest names its files)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hf_iqa.progress import NO_PROGRESS_ENV, progress_enabled  # noqa: F401  (re-exported for the converters)

MANIFEST = ".hf_iqa_manifest.json"  # written last into every folder a converter fills; lists the files it wrote
STAGING_PREFIX = ".hf_iqa_staging-"


class OutputFolderError(RuntimeError):
    """An output folder a converter must not write into (it holds files the converter did not write)."""


# ----------------------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------------------
class Stages:
    """A bar on stderr whose steps are named stages (`stage("parity check")` advances it and shows the name), so a
    several-minute conversion says what it is doing and how far it is. Disabled -> silent."""

    def __init__(self, title: str, total: int, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            desc=title,
            unit="stage",
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}| [{elapsed}] {postfix}",
        )
        self._started = False
        self._transformers_bars: bool | None = None

    def stage(self, name: str, steps: int | None = None) -> None:
        """Start the next stage; `steps` > 1 shows `name [i/steps]` as `step()` is called."""
        if self._started:
            self.bar.update(1)
        self._started = True
        self._name, self._steps, self._done = name, steps, 0
        self.bar.set_postfix_str(f"{name} [0/{steps}]" if steps else name)

    def step(self) -> None:
        """One step of the current stage (e.g. a chunk of prompts) is done."""
        self._done += 1
        if self._steps:
            self.bar.set_postfix_str(f"{self._name} [{min(self._done, self._steps)}/{self._steps}]")

    def ticking(self, function):
        """`function`, advancing the current stage by one step per call (e.g. a tokenizer called once per chunk)."""

        def call(*args, **kwargs):
            result = function(*args, **kwargs)
            self.step()
            return result

        return call

    def close(self) -> None:
        if self._started and self.bar.n < self.bar.total:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.set_postfix_str("done")
        self.bar.close()

    def __enter__(self) -> Stages:
        # transformers' own bars (writing shards, loading weights) are steps of these stages: hide them meanwhile
        from transformers.utils import logging as transformers_logging

        self._transformers_bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc) -> None:
        if self._transformers_bars:
            from transformers.utils import logging as transformers_logging

            transformers_logging.enable_progress_bar()
        if exc[0] is None:
            self.close()
        else:  # the error message is the one line left
            self.bar.leave = False
            self.bar.close()


def say(message: str, enabled: bool = True) -> None:
    """One status line on stderr (part of the progress output: hidden with it)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Output folders: never delete what the converter did not write
# ----------------------------------------------------------------------------------------------------------------
def _manifest_files(folder: Path) -> set[str] | None:
    """Relative file paths listed by the folder's manifest, or None when there is no readable manifest. Entries
    that would leave the folder (absolute, `..`) are ignored, so a crafted manifest cannot point outside."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    safe = set()
    for name in files if isinstance(files, list) else []:
        parts = Path(str(name)).parts
        if parts and not Path(str(name)).is_absolute() and ".." not in parts:
            safe.add(Path(*parts).as_posix())
    return safe


def _folder_entries(folder: Path) -> set[str]:
    """Relative paths of the files and links under `folder` (not following links), our own staging and manifest
    excluded."""
    entries = set()
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if not d.startswith(STAGING_PREFIX)]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = (rel_root / name).as_posix()
            if rel != MANIFEST:
                entries.add(rel)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return entries


def _is_empty_dir(folder: Path) -> bool:
    """Empty but for our own staging folders."""
    return not any(not p.name.startswith(STAGING_PREFIX) for p in folder.iterdir())


def check_output_dir(output_dir: str | Path, overwrite: bool) -> None:
    """Refuse, before any slow work, an output folder the converter may not write into:
    - a file, or a non-empty folder without a converter manifest (its files are someone else's), even with
      `overwrite`;
    - a folder made by a converter, unless `overwrite` (then only the files the manifest lists are replaced;
      anything else in the folder stays)."""
    output_dir = Path(output_dir)
    if not output_dir.exists() and not output_dir.is_symlink():
        return
    if not output_dir.is_dir():
        raise OutputFolderError(f"{output_dir}: exists and is not a folder; choose a new or empty folder")
    if _is_empty_dir(output_dir):
        return
    own = _manifest_files(output_dir)
    if own is None:
        sample = ", ".join(sorted(p.name for p in output_dir.iterdir() if not p.name.startswith(STAGING_PREFIX))[:3])
        raise OutputFolderError(
            f"{output_dir}: folder is not empty and was not written by an hf_iqa converter (holds {sample}); "
            "choose a new or empty folder (--overwrite only replaces a converter's own files)"
        )
    if not overwrite:
        raise OutputFolderError(
            f"{output_dir}: folder is not empty (an earlier conversion); pass --overwrite to replace its files "
            f"({MANIFEST} lists them; other files in the folder are kept)"
        )


def _write_manifest(folder: Path, files: set[str]) -> None:
    data = {"written_by": "hf_iqa converter", "files": sorted(files)}
    handle, tmp = tempfile.mkstemp(prefix=MANIFEST + ".", dir=folder)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
    os.chmod(tmp, 0o644)  # readable like the files it lists (mkstemp makes it private)
    os.replace(tmp, folder / MANIFEST)


def _remove_empty_parents(path: Path, stop: Path) -> None:
    for parent in path.parents:
        if parent == stop or stop not in parent.parents:
            return
        try:
            parent.rmdir()
        except OSError:
            return


def publish(staging: Path, output_dir: Path, overwrite: bool) -> list[str]:
    """Move a finished conversion from `staging` into `output_dir`: replaces only the files an earlier converter
    run listed in its manifest, refuses to overwrite any other file, writes the new manifest. Returns the
    relative paths written. At every point the manifest lists every converter-written file present."""
    check_output_dir(output_dir, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    new = _folder_entries(staging)
    old = _manifest_files(output_dir) or set()
    clashes = sorted(name for name in new if (output_dir / name).exists() and name not in old)
    if clashes:
        raise OutputFolderError(
            f"{output_dir}: would overwrite files the converter did not write ({', '.join(clashes[:3])}); "
            "move them away or choose another folder"
        )
    _write_manifest(output_dir, old | new)
    for name in sorted(old - new):
        target = output_dir / name
        if target.is_file() or target.is_symlink():
            target.unlink()
            _remove_empty_parents(target, output_dir)
    for name in sorted(new):
        target = output_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and not target.is_symlink():
            raise OutputFolderError(f"{target}: is a folder, the conversion writes a file there")
        os.replace(staging / name, target)
    _write_manifest(output_dir, new)
    return sorted(new)


@contextlib.contextmanager
def staged_output_dir(output_dir: str | Path, overwrite: bool) -> Iterator[Path]:
    """A private staging folder inside `output_dir` to write and verify the conversion in; on success its files
    are published into `output_dir` (see `publish`), on failure it is removed and the folder is left as it was
    (a folder created here is removed again)."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(STAGING_PREFIX + "*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))
    try:
        yield staging
        publish(staging, output_dir, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and output_dir.is_dir() and _is_empty_dir(output_dir):
            output_dir.rmdir()


def program_name(method: str) -> str:
    """How the user ran the converter, for usage lines and errors: the script's name when run as
    `python conversion/convert_<method>.py`, else `hf-iqa convert <method>`."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if script.startswith("convert_") else f"hf-iqa convert {method}"
