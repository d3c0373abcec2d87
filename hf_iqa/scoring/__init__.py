"""The scoring engine: input kinds (`sources`), the loop (`loop`), result files (`outputs`, `writers`), model
loading (`loading`) and what every run shares (`runtime`). See docs/architecture.md for the data path.

Nothing here imports torch or transformers at module level; `score_stream` and the sources never need them."""

from hf_iqa.io import ImageLoadError
from hf_iqa.scoring.loading import (
    LOADING_KEYS,
    load_pipeline,
    load_scorer,
    parse_key_values,
    resolve_model,
    root_cause,
)
from hf_iqa.scoring.loop import ImageScorer, PipelineScorer, Result, Scorer, collate, load_item_image, score_stream
from hf_iqa.scoring.outputs import KEY, OUTPUT_SUFFIXES, Output, StdoutWriter, parquet_available, visual_name
from hf_iqa.scoring.run import RunOptions, WarningTally, run
from hf_iqa.scoring.runtime import (
    DEFAULT_DTYPE,
    DEVICE_HELP,
    DTYPES,
    Interrupted,
    UsageError,
    barrier,
    disable_progress_bars,
    handle_sigterm,
    rank,
    resolve_device,
    silence_bomb_warning,
    torch_dtype,
    world_size,
)  # fmt: skip
from hf_iqa.scoring.sources import (
    Inputs,
    Item,
    Segment,
    Source,
    SourceOptions,
    escape_name,
    file_problem,
    listed,
    open_inputs,
    register,
    scan_folder,
)  # fmt: skip
from hf_iqa.scoring.writers import flatten, read_rows

__all__ = [
    "DEFAULT_DTYPE", "DEVICE_HELP", "DTYPES", "ImageLoadError", "ImageScorer", "Inputs", "Interrupted", "Item", "KEY",
    "LOADING_KEYS", "OUTPUT_SUFFIXES", "Output", "PipelineScorer", "Result", "RunOptions", "Scorer", "Segment", "Source",
    "SourceOptions", "StdoutWriter", "UsageError", "WarningTally", "barrier", "collate", "disable_progress_bars", "escape_name",
    "file_problem", "flatten", "handle_sigterm", "listed", "load_item_image", "load_pipeline", "load_scorer", "resolve_model", "open_inputs",
    "parquet_available", "parse_key_values", "rank", "read_rows", "register", "resolve_device", "root_cause", "run",
    "scan_folder", "score_stream", "silence_bomb_warning", "torch_dtype", "visual_name", "world_size",
]  # fmt: skip
