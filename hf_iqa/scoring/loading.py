"""Loading a model for scoring: resolved once, loaded once, with the `--model-arg`/`--processor-arg` keys checked
on the very config and processor that are used (transformers would silently keep an unknown key)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from typing import Any

from hf_iqa.scoring.runtime import DEFAULT_DTYPE, UsageError, resolve_device, torch_dtype

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


def _load_model(model: str, source: str, model_kwargs: dict, dtype: Any, trust_remote_code: bool) -> Any:
    """The model with its config overrides; the config is read once, and the keys it does not use are refused."""
    from transformers import AutoConfig, AutoModel

    overrides = {k: v for k, v in model_kwargs.items() if k not in LOADING_KEYS}
    loading = {k: v for k, v in model_kwargs.items() if k in LOADING_KEYS}
    config, unused = AutoConfig.from_pretrained(
        source, trust_remote_code=trust_remote_code, return_unused_kwargs=True, **overrides,
        **{k: v for k, v in loading.items() if k in ("revision", "subfolder", "cache_dir", "token")},
    )  # fmt: skip
    unknown = sorted(k for k in unused if not hasattr(config, k))
    if unknown:
        raise UsageError(f"--model-arg {', '.join(unknown)}: not a setting of {type(config).__name__} ({model})")
    return AutoModel.from_pretrained(
        source, config=config, dtype=dtype, trust_remote_code=trust_remote_code, **loading
    ).eval()


def _load_processor(model: str, source: str, processor_kwargs: dict, trust_remote_code: bool) -> Any:
    """The image processor with its overrides, refusing keys its class does not define."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code, **processor_kwargs)
    kind = type(processor)
    known = set(inspect.signature(kind.__init__).parameters) | {k for k in dir(kind) if not k.startswith("_")}
    unknown = sorted(k for k in processor_kwargs if k not in known)
    if unknown:
        raise UsageError(f"--processor-arg {', '.join(unknown)}: not a setting of {kind.__name__} ({model})")
    return processor


def load_pipeline(
    model: str,
    *,
    dtype: str = DEFAULT_DTYPE,
    device: str | None = "auto",
    model_kwargs: dict | None = None,
    processor_kwargs: dict | None = None,
    trust_remote_code: bool = False,
    source: str | None = None,
) -> Any:
    """`hf_iqa.pipeline` for a zoo name, folder or Hub id: the name is resolved once (`source`, when the caller
    has resolved it already), the model, config and processor loaded once (overrides checked on them); a model or
    option the model rejects is a `UsageError`."""
    import hf_iqa
    from hf_iqa.zoo import resolve

    device = resolve_device(device)
    source = source or resolve(model)
    weights_dtype = torch_dtype(dtype)
    with _library_warnings_held() as held:
        try:
            processor = (  # a model loaded here (config overrides) needs its processor named too
                _load_processor(model, source, processor_kwargs or {}, trust_remote_code)
                if processor_kwargs or model_kwargs
                else None
            )
            loaded_model = (
                _load_model(model, source, model_kwargs, weights_dtype, trust_remote_code) if model_kwargs else source
            )
            extra = {"image_processor": processor} if processor is not None else {}
            if isinstance(loaded_model, str):
                extra["dtype"] = weights_dtype
            loaded = hf_iqa.pipeline(model=loaded_model, device=device, trust_remote_code=trust_remote_code, **extra)
        except UsageError:
            held.clear()
            raise
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


def resolve_model(model: str) -> str:
    """The folder (or Hub id) a model name stands for: an `hf-iqa export onnx` folder as it is, anything else
    through the zoo (which may download and convert an original checkpoint once)."""
    from hf_iqa.onnx.runtime import is_onnx_folder
    from hf_iqa.zoo import resolve

    return model if is_onnx_folder(model) else resolve(model)


def load_scorer(
    model: str,
    source: str,
    *,
    dtype: str = DEFAULT_DTYPE,
    device: str | None = "auto",
    model_kwargs: dict | None = None,
    processor_kwargs: dict | None = None,
    trust_remote_code: bool = False,
    visualize: bool = False,
    max_pixels: int | None = None,
    resize_short_side: int | None = None,
    exif_transpose: bool = True,
) -> Any:
    """What the loop drives for a resolved model: an onnxruntime `OnnxScorer` for an `hf-iqa export onnx` folder
    (no torch needed), otherwise a `PipelineScorer` around the image-quality pipeline. `exif_transpose`: turn
    images by their EXIF orientation (True, as a viewer shows them) or keep the stored pixels (False)."""
    from hf_iqa.onnx.runtime import OnnxScorer, is_onnx_folder
    from hf_iqa.scoring.loop import ImageScorer, PipelineScorer

    if is_onnx_folder(source):
        if model_kwargs or visualize or resize_short_side:
            raise UsageError(
                "an ONNX export takes no --model-arg, --save-visualizations or --resize-short-side (set them at export)"
            )
        try:
            onnx_scorer = OnnxScorer(source, processor_kwargs=processor_kwargs or None)
            return ImageScorer(onnx_scorer, max_pixels=max_pixels, exif_transpose=exif_transpose)
        except (ImportError, ValueError, TypeError) as error:
            raise UsageError(f"cannot load {model}: {root_cause(error)}") from None
    pipe = load_pipeline(model, dtype=dtype, device=device, model_kwargs=model_kwargs,
                         processor_kwargs=processor_kwargs, trust_remote_code=trust_remote_code, source=source)  # fmt: skip
    return PipelineScorer(pipe, visualize=visualize, max_pixels=max_pixels, resize_short_side=resize_short_side,
                          exif_transpose=exif_transpose)  # fmt: skip
