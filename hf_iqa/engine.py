"""The one scoring loop: a stream of inputs -> decoding and preprocessing in threads, at most a fixed number of
batches ahead -> the model in batches -> one result per input, in input order.

`hf-iqa score`, `hf-iqa benchmark` and the `bench/` scripts all run through `score_stream`. This module also holds
what those commands share: the `--dtype`/`--device` words, the input kinds (files, folders, lists, `datasets`
datasets, tar shards), the output writers (CSV, JSONL, Parquet) with resume, and the torchrun/accelerate sharding.

Nothing here imports torch or transformers at module level, so command-line help stays fast.
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import os
import signal
import stat
import sys
import tarfile
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hf_iqa.io import IMAGE_EXTENSIONS, ImageLoadError

# ---------------------------------------------------------------------------------------------------------------
# --dtype / --device: one table for every command
# ---------------------------------------------------------------------------------------------------------------

DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}  # fmt: skip
DEVICE_HELP = "auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N, mps"


class UsageError(ValueError):
    """A problem the user caused and can fix (bad option, unavailable device, existing output): one line, exit 2."""


def add_runtime_arguments(parser: Any, dtype_default: str = "float32") -> None:
    """`--dtype` and `--device` with the same words and defaults in every command."""
    parser.add_argument("--dtype", default=dtype_default, choices=sorted(DTYPES),
                        help=f"model precision; auto = as saved in the checkpoint (default {dtype_default})")  # fmt: skip
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="largest image accepted, width x height as its file declares it (default 89478485, "
                        "Pillow's bomb threshold; 0: no limit); bigger files are error rows")  # fmt: skip


def apply_image_limit(max_pixels: int | None) -> None:
    """`--max-pixels`: hf_iqa's own size check (`hf_iqa.io.MAX_PIXELS`) decides and reports each file, so Pillow's
    process-wide bomb warning is silenced for the command."""
    import warnings

    from PIL import Image

    from hf_iqa import io as image_io

    if max_pixels is not None:
        image_io.MAX_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def torch_dtype(word: str) -> Any:
    """`auto` or a torch dtype for a `--dtype` word."""
    if word not in DTYPES:
        raise UsageError(f"--dtype must be one of {sorted(DTYPES)}, got {word!r}")
    if DTYPES[word] == "auto":
        return "auto"
    import torch

    return getattr(torch, DTYPES[word])


def resolve_device(word: str | None, local_rank: int | None = None) -> str:
    """The torch device for a `--device` word; an unavailable device is a `UsageError`. Under torchrun/accelerate
    `auto` and a bare `cuda` mean this process's GPU (LOCAL_RANK)."""
    import torch

    word = (word or "auto").strip().lower()
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world_size() > 1 else 0
    if word == "auto":
        if torch.cuda.is_available():
            return f"cuda:{local_rank % torch.cuda.device_count()}"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind, _, number = word.partition(":")
    if kind == "cpu" and not number:
        return "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {word}: CUDA is not available on this machine (torch {torch.__version__})")
        index = int(number) if number.isdigit() else local_rank
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {word}: only {torch.cuda.device_count()} CUDA device(s) here")
        return f"cuda:{index}"
    if kind == "mps" and not number:
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise UsageError("--device mps: MPS is not available on this machine")
        return "mps"
    raise UsageError(f"--device must be one of: {DEVICE_HELP}; got {word!r}")


def disable_progress_bars() -> None:
    """`--no-progress`: also transformers' "Loading weights" and huggingface_hub's download bars."""
    from huggingface_hub.utils import disable_progress_bars as hub_disable
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    hub_disable()


# ---------------------------------------------------------------------------------------------------------------
# Loading a model with checked --model-arg / --processor-arg keys
# ---------------------------------------------------------------------------------------------------------------

LOADING_KEYS = {"attn_implementation", "revision", "device_map", "low_cpu_mem_usage", "quantization_config",
                "subfolder", "cache_dir", "local_files_only", "token", "max_memory"}  # fmt: skip


def parse_key_values(items: Iterable[str], option: str = "--model-arg") -> dict[str, Any]:
    """KEY=VALUE items (values parsed as JSON when they are JSON, else kept as text)."""
    options = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{option} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def check_override_keys(model: str, model_kwargs: dict, processor_kwargs: dict, trust_remote_code: bool) -> None:
    """Refuse keys the model's config or image processor does not know (transformers would silently keep them)."""
    import inspect

    from transformers import AutoConfig, AutoImageProcessor

    if model_kwargs:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        unknown = sorted(k for k in model_kwargs if k not in LOADING_KEYS and not hasattr(config, k))
        if unknown:
            raise UsageError(f"--model-arg {', '.join(unknown)}: not a setting of {type(config).__name__} ({model})")
    if processor_kwargs:
        processor = AutoImageProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
        known = set(processor.to_dict()) | set(inspect.signature(type(processor).__init__).parameters)
        known |= {k for k in dir(processor) if not k.startswith("_")}
        unknown = sorted(k for k in processor_kwargs if k not in known)
        if unknown:
            raise UsageError(
                f"--processor-arg {', '.join(unknown)}: not a setting of {type(processor).__name__} ({model})"
            )


def load_pipeline(
    model: str,
    *,
    dtype: str = "float32",
    device: str | None = "auto",
    model_kwargs: dict | None = None,
    processor_kwargs: dict | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """`hf_iqa.pipeline` for a zoo name, folder or Hub id, after checking the override keys; a model or option
    the model rejects is a `UsageError`."""
    import hf_iqa
    from hf_iqa.zoo import resolve

    device = resolve_device(device)
    source = resolve(model)
    check_override_keys(source, model_kwargs or {}, processor_kwargs or {}, trust_remote_code)
    with _library_warnings_held() as held:
        try:
            loaded = hf_iqa.pipeline(
                model=source,
                device=device,
                dtype=torch_dtype(dtype),
                processor_kwargs=processor_kwargs or None,
                model_kwargs=model_kwargs or None,
                trust_remote_code=trust_remote_code,
            )
        except (ValueError, TypeError) as error:  # e.g. a --model-arg / --processor-arg value the model rejects
            held.clear()  # a load report before a failure only repeats the reason
            raise UsageError(f"cannot load {model}: {root_cause(error)}") from None
    return loaded


def root_cause(error: BaseException) -> str:
    """The message a user needs. transformers' pipeline wraps a failed `from_pretrained` into "Could not load model
    ... See the original errors:" followed by whole tracebacks; keep only the first original `XError: message`."""
    text = str(error)
    if "See the original errors" not in text:
        return text
    for line in text.splitlines():
        head, sep, message = line.partition(": ")
        if sep and not line.startswith(" ") and head.split(".")[-1].endswith(("Error", "Exception")):
            return message.strip()
    return text.splitlines()[0]


class _library_warnings_held:
    """Hold the transformers logger's records while a model loads: replayed if the load succeeds, dropped if it
    fails (then the one-line error says why), so a failed load never prints a load report and a traceback."""

    def __enter__(self) -> list:
        import logging

        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger("transformers")
        self.handlers, self.propagate = self.logger.handlers[:], self.logger.propagate
        holder = logging.Handler()
        holder.emit = self.records.append  # type: ignore[method-assign]
        self.logger.handlers, self.logger.propagate = [holder], False
        return self.records

    def __exit__(self, *exc_info) -> None:
        self.logger.handlers, self.logger.propagate = self.handlers, self.propagate
        for record in self.records:
            self.logger.handle(record)


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One input: `key` names it in the results (a path, `shard.tar/member`, or a dataset id); `source` is what is
    decoded (a path, bytes, a `datasets` image dict or a PIL image); `error` is a problem found while listing."""

    key: str
    source: Any = None
    error: str | None = None
    index: Any = -1  # position in the input stream, e.g. (source number, position in it): sharding, merge order


@dataclass
class Inputs:
    """What a command scores: a re-iterable stream of `Item`s, how many (None when only known by reading them,
    e.g. tar shards or streamed datasets), the result column that names an input, and the local files read."""

    iterate: Callable[[Callable[[str], bool], int, int], Iterator[Item]]
    total: int | None
    key_field: str = "path"
    files: list[Path] = field(default_factory=list)

    def items(
        self, skip: Callable[[str], bool] = lambda key: False, process_index: int = 0, num_processes: int = 1
    ) -> Iterator[Item]:
        """This process's items in stream order, each with its `index` (`[source, position]`, comparable across
        processes); `skip(key)` items (already done) are passed over without being read. Processes share the items
        round-robin, or whole tar shards when there are at least as many shards as processes (then no process
        reads another's shards)."""
        yield from self.iterate(skip, process_index, num_processes)


def escape_name(name: str) -> str:
    """A name with control characters (newline, tab, escape...) written as `\\n`, `\\t`, `\\x1b`, so that text
    outputs keep one line per image."""
    if not any(unicodedata.category(c) == "Cc" for c in name):
        return name
    specials = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(specials.get(c, f"\\x{ord(c):02x}") if unicodedata.category(c) == "Cc" else c for c in name)


FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
              stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory"}  # fmt: skip


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as an image file without opening it (a FIFO would block), or None."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else "no such file"
    except OSError as error:
        if error.errno == 40:  # ELOOP
            return "symbolic link loop"
        return f"cannot access ({error.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return f"not a regular file: {FILE_KINDS.get(stat.S_IFMT(info.st_mode), 'a special file')}"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def visual_name(key: str) -> str:
    """A relative path made from an input's key (its path without the root, `..` parts renamed), so that pictures
    written for inputs keep their folders and no two inputs share a name."""
    from pathlib import PurePath

    parts = [part for part in PurePath(key).parts if part not in ("/", "\\", "", ".")]
    if parts and PurePath(key).drive and parts[0].startswith(PurePath(key).drive):
        parts = parts[1:]
    return "/".join("__" if part == ".." else escape_name(part) for part in parts) or "_"


def _has_image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_folder(root: Path) -> Iterator[Item]:
    """Image files under `root` (recursive, sorted, symbolic links followed once), plus error items for what cannot
    be an image although named like one: broken links, link loops, unreadable folders, FIFOs and other special
    files, folders named like images that hold no image."""
    visited: set[tuple[int, int]] = set()

    def walk(folder: Path) -> Iterator[Item]:
        try:
            info = os.stat(folder)
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            yield Item(str(folder), error=f"cannot read folder ({error.strerror})")
            return
        identity = (info.st_dev, info.st_ino)
        if identity in visited:
            yield Item(
                str(folder),
                error="link to a folder already scanned (a loop or a duplicate; its images are listed once)",
            )
            return
        visited.add(identity)
        for entry in entries:
            path = Path(entry.path)
            looks_like_image = _has_image_suffix(entry.name)
            problem = file_problem(path)
            if problem == "is a directory, not an image file":
                found = False
                for item in walk(path):
                    found = True
                    yield item
                if not found and looks_like_image:
                    yield Item(str(path), error="is a directory (named like an image) with no image in it")  # fmt: skip
            elif looks_like_image:
                yield Item(str(path), source=str(path), error=problem)
            elif entry.is_symlink() and problem and "link" in problem:
                yield Item(str(path), error=problem)  # a broken link might have been anything

    yield from walk(root)


def _dataset_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _looks_like_hub_id(text: str) -> bool:
    if text.startswith("hf://datasets/"):
        return True
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not _has_image_suffix(text) and not os.path.exists(text)


def _read_list(path: Path, image_column: str | None) -> list[str]:
    """Paths from a text file (one per line) or a CSV/TSV (the --image-column, else a path-like column, else the
    first one). Relative paths are relative to the list's folder."""
    base = path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() in (".csv", ".tsv"):
            reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            columns = reader.fieldnames or []
            column = image_column or next(
                (c for c in ("path", "image", "file", "filename", "file_name", "image_path") if c in columns),
                columns[0] if columns else None,
            )
            if column not in columns:
                raise UsageError(f"{path}: no column {column!r} (columns: {columns})")
            names = [row[column] for row in reader if row.get(column)]
        else:
            names = [line.rstrip("\n\r") for line in handle]
            names = [n for n in names if n.strip() and not n.lstrip().startswith("#")]
    return [name if os.path.isabs(name) else str(base / name) for name in names]


def _image_column(features: Any, asked: str | None) -> str:
    if asked:
        if asked not in features:
            raise UsageError(f"--image-column {asked!r} is not a column of the dataset (columns: {list(features)})")
        return asked
    from datasets import Image

    found = [name for name, feature in features.items() if isinstance(feature, Image)]
    if found:
        return found[0]
    for name in ("image", "img", "path", "file_name"):
        if name in features:
            return name
    raise UsageError(f"no image column found; pass --image-column (columns: {list(features)})")


def _open_dataset(source: str, split: str | None) -> Any:
    """A `datasets` Dataset (memory-mapped) or IterableDataset (streamed) for a save_to_disk folder, a parquet or
    arrow file, or a Hub id."""
    try:
        import datasets
    except ImportError:
        raise UsageError(
            f"{source}: reading datasets needs the datasets package: pip install 'hf-iqa[data]'"
        ) from None
    path = Path(source)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
    elif path.suffix.lower() == ".arrow":
        loaded = datasets.Dataset.from_file(str(path))
    elif path.suffix.lower() == ".parquet":
        loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True)
    else:
        name = source.removeprefix("hf://datasets/")
        try:
            loaded = datasets.load_dataset(name, split=split or "train", streaming=True)
        except Exception as error:  # offline, unknown id, private repo: one line
            raise UsageError(f"{source}: cannot open the dataset ({type(error).__name__}: {error})") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split is None:
            if len(loaded) != 1:
                raise UsageError(f"{source} has the splits {list(loaded)}: choose one with --split")
            split = next(iter(loaded))
        if split not in loaded:
            raise UsageError(f"{source} has no split {split!r} (splits: {list(loaded)})")
        loaded = loaded[split]
    return loaded


def _dataset_items(source: str, split: str | None, image_column: str | None, id_column: str | None):
    loaded = _open_dataset(source, split)
    features = loaded.features or {}
    column = _image_column(features, image_column)
    if id_column and id_column not in features:
        raise UsageError(f"--id-column {id_column!r} is not a column of {source} (columns: {list(features)})")
    from datasets import Image

    if isinstance(features.get(column), Image):
        loaded = loaded.cast_column(column, Image(decode=False))  # decoded in the loader threads
    loaded = loaded.select_columns([c for c in (column, id_column) if c])
    total = len(loaded) if hasattr(loaded, "__len__") else None

    def iterate(skip: Callable[[str], bool], process_index: int, num_processes: int) -> Iterator[Item]:
        for number, row in enumerate(loaded):
            if number % num_processes != process_index:
                continue
            key = str(row[id_column]) if id_column else str(number)
            yield Item(key, index=[0, number]) if skip(key) else Item(key, source=row[column], index=[0, number])

    return iterate, total


def _tar_items(path: Path, source: int, skip: Callable[[str], bool], mine: Callable[[int], bool]) -> Iterator[Item]:
    """Members of a tar shard (WebDataset / img2dataset layout), read sequentially without extracting; members not
    named like images (`.json`, `.txt` sidecars) are passed over, and so are (unread) members of other processes."""
    position = -1
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if not _has_image_suffix(member.name):
                    continue
                position += 1
                if not mine(position):
                    continue
                key, index = f"{path}/{member.name}", [source, position]
                if skip(key):
                    yield Item(key, index=index)
                elif not member.isfile():
                    yield Item(key, error="tar member is not a regular file", index=index)
                else:
                    handle = archive.extractfile(member)
                    yield Item(key, source=handle.read() if handle else b"", index=index)
    except (tarfile.TarError, OSError, EOFError) as error:
        if mine(0):
            yield Item(str(path), error=f"cannot read tar shard ({error})", index=[source, -1])


def open_inputs(
    paths: Iterable[str],
    *,
    from_list: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
) -> Inputs:
    """Turn the command line's inputs into one stream: image files, folders (recursive), `--from-list` files, tar
    shards, and `datasets` datasets (a save_to_disk folder, a .parquet/.arrow file or a Hub id; alone)."""
    paths = list(paths)
    files: list[Path] = []
    dataset_sources = [p for p in paths if _is_dataset(p)]
    if dataset_sources:
        if len(paths) != 1 or from_list:
            raise UsageError("a dataset input is scored on its own (give one dataset and no other input)")
        if not _looks_like_hub_id(paths[0]):
            files.append(Path(paths[0]))
        iterate, total = _dataset_items(paths[0], split, image_column, id_column)
        return Inputs(iterate, total, "id", files)

    sources: list[tuple[str, Any]] = []  # ("items", list[Item]) or ("tar", Path)
    names = list(paths)
    if from_list:
        list_path = Path(from_list)
        if not list_path.is_file():
            raise UsageError(f"--from-list {from_list}: no such file")
        files.append(list_path)
        names += _read_list(list_path, image_column)
    total: int | None = 0
    listed: list[Item] = []
    for name in names:
        path = Path(name)
        if path.suffix.lower() == ".tar" and path.is_file():
            if listed:
                sources.append(("items", listed))
                listed = []
            sources.append(("tar", path))
            files.append(path)
            total = None
        elif path.is_dir():
            listed.extend(scan_folder(path))
        else:
            listed.append(Item(name, source=name, error=file_problem(path)))
            files.append(path)
    if listed:
        sources.append(("items", listed))
    if total is not None:
        total = sum(len(items) for kind, items in sources if kind == "items")

    tars = sum(kind == "tar" for kind, _ in sources)

    def iterate(skip: Callable[[str], bool], process_index: int, num_processes: int) -> Iterator[Item]:
        tar_number = 0
        for number, (kind, content) in enumerate(sources):
            if kind == "tar":
                if tars >= num_processes:  # whole shards per process
                    mine = (lambda _: True) if tar_number % num_processes == process_index else None
                else:
                    mine = lambda position: position % num_processes == process_index  # noqa: E731
                tar_number += 1
                if mine is not None:
                    yield from _tar_items(content, number, skip, mine)
                continue
            for position, item in enumerate(content):
                if position % num_processes != process_index:
                    continue
                index = [number, position]
                yield Item(item.key, index=index) if skip(item.key) else Item(item.key, item.source, item.error, index)

    return Inputs(iterate, total, "path", files)


def _is_dataset(name: str) -> bool:
    path = Path(name)
    if path.is_dir():
        return _dataset_folder(path)
    if path.suffix.lower() in (".parquet", ".arrow"):
        return True
    return _looks_like_hub_id(name)


def load_item_image(item: Item) -> Any:
    """The RGB PIL image of an item through `hf_iqa.io.load_image`; raises `ImageLoadError` naming the item."""
    from PIL import Image, UnidentifiedImageError

    from hf_iqa.io import load_image

    source = item.source
    if isinstance(source, dict):  # a `datasets` Image(decode=False) value
        source = source.get("bytes") or source.get("path")
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageLoadError(item.key, "file is empty (0 bytes)")
        try:
            opened = Image.open(io.BytesIO(source))
        except UnidentifiedImageError:
            raise ImageLoadError(item.key, "not an image file Pillow can read (unknown or corrupt format)") from None
        except (Image.DecompressionBombError, OSError, ValueError) as error:
            raise ImageLoadError(item.key, f"cannot read image ({error})") from None
        return load_image(opened, source=item.key)
    if isinstance(source, (str, os.PathLike)):
        problem = file_problem(source)  # never open a FIFO or a device
        if problem:
            raise ImageLoadError(item.key, problem)
        return load_image(source)
    if source is None:
        raise ImageLoadError(item.key, "no image")
    return load_image(source, source=item.key)


# ---------------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------------


class Scorer(Protocol):
    """What the loop drives: `prepare` runs in loader threads (decode + preprocess), `predict` on the caller's
    thread (one model call per batch, one result dict per prepared input)."""

    def prepare(self, item: Item) -> Any: ...

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]: ...


@dataclass
class Result:
    item: Item
    output: dict[str, Any] | None = None
    error: str | None = None


def _describe(error: BaseException) -> str:
    if isinstance(error, ImageLoadError):
        return error.problem
    return f"{type(error).__name__}: {error}"


def score_stream(
    items: Iterable[Item],
    scorer: Scorer,
    *,
    batch_size: int = 8,
    workers: int = 4,
    prefetch_batches: int = 2,
) -> Iterator[Result]:
    """One `Result` per item, in input order. At most `prefetch_batches` batches are being prepared or waiting
    ahead of the batch the model is scoring (a bounded window of futures, not an eager `map`), so memory does not
    grow with the number of items. An item that fails to load, or to score alone, is an error result; a batch that
    fails is scored again one item at a time so that only the bad item fails."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    window_size = max(1, prefetch_batches) * batch_size
    iterator = iter(items)
    window: deque[tuple[Item, Future | None]] = deque()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="hf_iqa-load")

    def prepare(item: Item) -> Any:
        return scorer.prepare(item)

    def fill(limit: int) -> None:
        while len(window) < limit:
            item = next(iterator, None)
            if item is None:
                return
            window.append((item, None if item.error else pool.submit(prepare, item)))

    def run_batch(batch: list[tuple[Item, Any]]) -> list[Result]:
        try:
            outputs = scorer.predict([prepared for _, prepared in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"the model returned {len(outputs)} results for {len(batch)} images")
            return [Result(item, output) for (item, _), output in zip(batch, outputs)]
        except Exception as error:
            if len(batch) == 1:
                return [Result(batch[0][0], error=_describe(error))]
            return [result for one in batch for result in run_batch([one])]

    try:
        fill(window_size)
        while window:
            taken = [window.popleft() for _ in range(min(batch_size, len(window)))]
            fill(window_size)  # the next batches are prepared while this one is scored
            results: list[Result | None] = []
            batch: list[tuple[Item, Any]] = []
            for item, future in taken:
                if future is None:
                    results.append(Result(item, error=item.error))
                    continue
                try:
                    batch.append((item, future.result()))
                    results.append(None)
                except Exception as error:
                    results.append(Result(item, error=_describe(error)))
            scored = iter(run_batch(batch) if batch else [])
            for result in results:
                yield result if result is not None else next(scored)
    finally:
        for _, future in window:
            if future is not None:
                future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-image model inputs: tensors along dim 0, ragged lists concatenated."""
    import torch

    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.cat(values, dim=0)
        elif isinstance(values[0], list):
            batch[key] = [v for value in values for v in value]
        else:
            batch[key] = values
    return batch


class PipelineScorer:
    """Scores with an `ImageQualityPipeline`'s own preprocess and forward; results through the output contract
    (`hf_iqa.pipelines.describe_output`). `resize_short_side` resizes before the processor (benchmark protocols)."""

    def __init__(self, pipe: Any, *, visualize: bool = False, resize_short_side: int | None = None):
        self.pipe = pipe
        self.visualize = visualize
        self.resize_short_side = resize_short_side

    def prepare(self, item: Item) -> dict[str, Any]:
        image = load_item_image(item)
        if self.resize_short_side:
            from PIL import Image

            width, height = image.size
            scale = self.resize_short_side / min(width, height)
            if scale != 1:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                image = image.resize(size, Image.BICUBIC)
        return self.pipe.preprocess(image)

    def predict(self, prepared: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from hf_iqa.pipelines import describe_output

        outputs = self.pipe.forward(collate(prepared), return_visualization=self.visualize)
        scores = outputs.get("scores")
        if scores is None or scores.dim() != 1 or scores.shape[0] != len(prepared):
            shape = None if scores is None else tuple(scores.shape)
            raise RuntimeError(
                f"{type(self.pipe.model).__name__} broke the output contract: `scores` must have shape "
                f"({len(prepared)},), got {shape}"
            )
        results = [describe_output(outputs, i, self.pipe.model.config) for i in range(len(prepared))]
        if self.visualize:
            for result, picture in zip(results, outputs["visualization"]):
                result["visualization"] = picture
        return results


# ---------------------------------------------------------------------------------------------------------------
# Processes (torchrun / accelerate launch)
# ---------------------------------------------------------------------------------------------------------------


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def shard(items: Iterable[Item], process_index: int, num_processes: int) -> Iterator[Item]:
    """This process's disjoint share of the stream: every `num_processes`-th item, by stream position."""
    for item in items:
        if item.index % num_processes == process_index:
            yield item


def barrier() -> None:
    """Wait for every process (a gloo group, joined on first use); a no-op for a single process."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    dist.barrier()


# ---------------------------------------------------------------------------------------------------------------
# Outputs: CSV / JSONL / Parquet, resumable
# ---------------------------------------------------------------------------------------------------------------

OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet")


def flatten(result: dict[str, Any]) -> dict[str, Any]:
    """{"scene_probs": {"animal": 0.1}} -> {"scene_probs.animal": 0.1}; lists as JSON text (CSV cells)."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{label}": v for label, v in value.items()})
        elif isinstance(value, list):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


def _complete_lines(path: Path) -> Iterator[str]:
    """Lines of a file ended by a newline; a last line cut short by a kill is not trusted."""
    with open(path, encoding="utf-8", newline="") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield line


def _drop_partial_line(path: Path) -> None:
    with open(path, "rb+") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        if size == 0:
            return
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return
        chunk = 1 << 16
        position = size
        while position > 0:
            start = max(0, position - chunk)
            handle.seek(start)
            data = handle.read(position - start)
            newline = data.rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return
            position = start
        handle.truncate(0)


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV, JSONL or Parquet output (complete lines only for text formats)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif suffix == ".csv":
        yield from csv.DictReader(_complete_lines(path))
    else:
        for line in _complete_lines(path):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class TextWriter:
    """Appends rows to a CSV or JSONL file, flushed after every batch. The CSV header comes from the first scored
    row (error rows before it wait), or from the file when resuming. Names are escaped in CSV (one line per row)."""

    def __init__(self, path: Path, key_field: str, append: bool):
        self.path = path
        self.key_field = key_field
        self.format = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        self.columns: list[str] | None = None
        self.waiting: list[dict[str, Any]] = []
        if append and path.exists():
            _drop_partial_line(path)
            if self.format == "csv":
                with open(path, newline="", encoding="utf-8") as handle:
                    self.columns = next(csv.reader(handle), None)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a" if append else "w", newline="", encoding="utf-8")
        self.writer: Any = None
        if self.columns:
            self.writer = csv.DictWriter(self.handle, fieldnames=self.columns, extrasaction="ignore")

    def write(self, row: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self.handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        row = flatten(row)
        row[self.key_field] = escape_name(str(row[self.key_field]))
        if self.writer is None:
            if row.get("error") is not None:
                self.waiting.append(row)
                return
            self._start([self.key_field, *(k for k in row if k not in (self.key_field, "error")), "error"])
        self.writer.writerow(row)

    def _start(self, columns: list[str]) -> None:
        self.columns = columns
        self.writer = csv.DictWriter(self.handle, fieldnames=columns, extrasaction="ignore")
        self.writer.writeheader()
        for waiting in self.waiting:
            self.writer.writerow(waiting)
        self.waiting = []

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        if self.format == "csv" and self.writer is None and self.waiting:  # nothing scored: error rows only
            self._start([self.key_field, "score", "error"])
        self.handle.close()


def _parquet_value_type(values: list[Any]) -> Any:
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def write_parquet(path: Path, rows: Callable[[], Iterator[dict[str, Any]]], key_field: str) -> int:
    """Write `rows()` (called twice: the schema pass, then the data) as a Parquet file in row groups, atomically
    (a temporary file renamed into place). Nested results are flattened like CSV columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    samples: dict[str, list[Any]] = {}
    for row in rows():
        for key, value in flatten(row).items():
            column = samples.setdefault(key, [])
            if value is not None and len(column) < 64:
                column.append(value)
    columns = [key_field, *(k for k in samples if k not in (key_field, "error")), "error"]
    schema = pa.schema([(c, pa.string() if c in (key_field, "error") else _parquet_value_type(samples.get(c, [])))
                        for c in columns])  # fmt: skip
    temporary = path.with_name(f".{path.name}.tmp")
    count = 0
    with pq.ParquetWriter(temporary, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows():
            flat = flatten(row)
            chunk.append({c: _cast(flat.get(c), schema.field(c).type) for c in columns})
            if len(chunk) >= 10_000:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count += len(chunk)
                chunk = []
        writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
        count += len(chunk)
    os.replace(temporary, path)
    return count


def _cast(value: Any, arrow_type: Any) -> Any:
    import pyarrow as pa

    if value is None:
        return None
    if arrow_type == pa.string():
        return (
            value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        )
    return value


class Output:
    """Where result rows go, resumable. CSV and JSONL are appended to directly. Parquet cannot be appended to
    safely, so rows go to a JSONL journal beside it (`<name>.parquet.journal.jsonl`) which is turned into the
    Parquet file at the end, or on interruption (the journal is kept until a run completes, so `--resume`
    continues from it). Under torchrun/accelerate every process appends to its own JSONL part
    (`<name>.parts/rank-K-of-N.jsonl`, rows tagged with their stream position) and process 0 merges the parts into
    the output in input order at the end; `--resume` reads the output and every part."""

    def __init__(self, path: str | os.PathLike, key_field: str, *, resume: bool, overwrite: bool):
        self.path = Path(path)
        self.key_field = key_field
        self.resume = resume
        self.overwrite = overwrite
        suffix = self.path.suffix.lower()
        if suffix not in OUTPUT_SUFFIXES:
            raise UsageError(f"--output must end in .csv, .jsonl or .parquet, got {str(path)!r}")
        self.parquet = suffix == ".parquet"
        self.journal = self.path.with_name(self.path.name + ".journal.jsonl")
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.world, self.rank = world_size(), rank()
        self.part = self.parts / f"rank-{self.rank}-of-{self.world}.jsonl"
        self.writer: TextWriter | None = None
        self.kept_errors = 0

    def check(self, inputs: Iterable[Path]) -> None:
        """Refuse to replace an earlier output without --resume/--overwrite, and an output that is an input."""
        for source in inputs:
            try:
                same = source.exists() and self.path.exists() and os.path.samefile(source, self.path)
            except OSError:
                same = False
            if same or source.resolve() == self.path.resolve():
                raise UsageError(f"--output {self.path} is also an input; choose another output file")
        leftovers = [p for p in (self.path, self.journal, self.parts) if p.exists()]
        if leftovers and not (self.resume or self.overwrite):
            raise UsageError(f"{leftovers[0]} exists; pass --resume to continue that run or --overwrite to replace it")

    def done_keys(self) -> set[str]:
        """Keys of the inputs already in the output, its journal and its parts (complete rows only); how many of
        them are error rows goes to `kept_errors` (a resumed run still exits 1 for them)."""
        if not self.resume:
            return set()
        done: set[str] = set()
        sources = [self.path] if self.path.exists() else []
        if self.parquet and self.journal.exists():
            sources.append(self.journal)
        if self.parts.is_dir():
            sources.extend(sorted(self.parts.glob("rank-*.jsonl")))
        self.kept_errors = 0
        for source in sources:
            for row in read_rows(source):
                if row.get(self.key_field) is not None:
                    key = str(row[self.key_field])
                    self.kept_errors += bool(row.get("error")) and key not in done
                    done.add(key)
        return done

    def open(self) -> None:
        if self.overwrite and not self.resume and self.rank == 0:
            import shutil

            for leftover in (self.journal, self.path):
                leftover.unlink(missing_ok=True)
            shutil.rmtree(self.parts, ignore_errors=True)
        barrier()
        if self.world > 1:
            self.parts.mkdir(parents=True, exist_ok=True)
            self.writer = TextWriter(self.part, self.key_field, append=True)
        elif self.parquet:
            self._seed_journal()
            self.writer = TextWriter(self.journal, self.key_field, append=True)
        else:
            self.writer = TextWriter(self.path, self.key_field, append=self.resume)

    def write(self, row: dict[str, Any], index: int) -> None:
        if self.world > 1:
            row = {**row, "_n": index}
        self.writer.write(row)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, complete: bool) -> None:
        """Close this process's file; on completion process 0 merges parts / converts the journal."""
        self.writer.close()
        if self.world > 1:
            if not complete:
                return
            barrier()
            if self.rank == 0:
                self._merge_parts()
            barrier()
        elif self.parquet:
            self._convert_journal(keep_journal=not complete)

    def _merge_parts(self) -> None:
        import shutil

        parts = sorted(self.parts.glob("rank-*.jsonl"))

        def merged() -> Iterator[dict[str, Any]]:
            streams = [read_rows(p) for p in parts]
            for row in heapq.merge(*streams, key=lambda r: r.get("_n", -1)):
                row.pop("_n", None)
                yield row

        if self.parquet:
            self._seed_journal()
            journal = TextWriter(self.journal, self.key_field, append=True)
            for row in merged():
                journal.write(row)
            journal.close()
            self._convert_journal(keep_journal=False)
        else:
            writer = TextWriter(self.path, self.key_field, append=self.path.exists())
            for row in merged():
                writer.write(row)
            writer.close()
        shutil.rmtree(self.parts, ignore_errors=True)

    def _seed_journal(self) -> None:
        """Resuming a Parquet output without a journal (an earlier run completed): its rows start the journal, which
        is always the whole truth while a run is unfinished."""
        if self.resume and self.path.exists() and not self.journal.exists():
            writer = TextWriter(self.journal, self.key_field, append=False)
            for row in read_rows(self.path):
                writer.write({k: v for k, v in row.items() if v is not None})
            writer.close()

    def _convert_journal(self, keep_journal: bool) -> None:
        if not self.journal.exists():
            return
        write_parquet(self.path, lambda: read_rows(self.journal), self.key_field)
        if not keep_journal:
            self.journal.unlink()


class StdoutWriter:
    """`path<TAB>score` lines on stdout, `path<TAB>ERROR<TAB>problem` on stderr; names escaped."""

    def write(self, row: dict[str, Any], index: int) -> None:
        name = escape_name(str(next(iter(row.values()))))
        if row.get("error"):
            print(f"{name}\tERROR\t{escape_name(row['error'])}", file=sys.stderr)
        else:
            print(f"{name}\t{row['score']:.6f}")

    def flush(self) -> None:
        sys.stdout.flush()

    def close(self, complete: bool) -> None:
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------------
# Interruption
# ---------------------------------------------------------------------------------------------------------------


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a run, with how far it got."""

    def __init__(self, scored: int, total: int | None):
        self.scored, self.total = scored, total
        of = f" of {total}" if total is not None else ""
        super().__init__(f"interrupted after {scored}{of} images; rerun with --resume")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def handle_sigterm() -> None:
    """SIGTERM (a scheduler's stop, `kill`) stops a run the same way as Ctrl-C."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
