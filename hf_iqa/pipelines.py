"""The `image-quality` task for package users (`hf_iqa.pipeline`), and the hooks that make every saved hf_iqa
folder carry it. Named like transformers' `pipelines` package, so that `hf_iqa.pipeline` is only the function.

The pipeline class itself lives in `pipeline_image_quality.py`, a flat remote-code file. Here the package:
- registers it as the `image-quality` task (so `import hf_iqa; transformers.pipeline("image-quality", model=...)`
  works);
- makes every registered hf_iqa config write `custom_pipelines` into `config.json` and copy the pipeline file and
  the image loader it imports (`io.py`) next to it on `save_pretrained` (which `model.save_pretrained`, `push_to_hub` and the converters all go through), so
  `transformers.pipeline(model=folder, trust_remote_code=True)` works where hf_iqa is not installed;
- keeps `transformers.pipeline("image-quality", model=folder)` working with the package installed: transformers
  refuses a task listed in `custom_pipelines` without `trust_remote_code=True`, even when the task is registered
  locally, so configs loaded by the package answer "not a remote task" for it (`_RemoteTasks`). With hf_iqa
  installed, `pipeline("image-quality", model=folder)`, `pipeline(model=folder)` (task read from
  `custom_pipelines`), their `trust_remote_code=True` forms and `hf_iqa.pipeline(model=folder)` all use the
  package's own pipeline and model classes.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import AutoImageProcessor, AutoModel
from transformers import pipeline as transformers_pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from . import io, pipeline_image_quality
from .models import registered_models
from .pipeline_image_quality import CUSTOM_PIPELINES, TASK, ImageQualityPipeline, describe_output

__all__ = ["CUSTOM_PIPELINES", "PIPELINE_FILE", "TASK", "ImageQualityPipeline", "describe_output", "pipeline"]

PIPELINE_FILE = Path(pipeline_image_quality.__file__)
LOADER_FILE = Path(io.__file__)

PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ImageQualityPipeline, pt_model=AutoModel, type="image")


def _carry_pipeline_on_save(config_cls: type) -> None:
    """`config_cls.save_pretrained` also writes `custom_pipelines` and copies the pipeline file (idempotent)."""
    original = config_cls.save_pretrained
    if getattr(original, "_hf_iqa_pipeline", False):
        return

    @functools.wraps(original)
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any):
        os.makedirs(save_directory, exist_ok=True)
        # before the config is written: `save_pretrained(push_to_hub=True)` uploads files newer than its start
        for source in (PIPELINE_FILE, LOADER_FILE):  # the pipeline and the image loader it imports
            shutil.copyfile(source, Path(save_directory) / source.name)
        missing = object()
        previous = self.__dict__.get("custom_pipelines", missing)
        self.custom_pipelines = {**(previous if isinstance(previous, dict) else {}), **copy.deepcopy(CUSTOM_PIPELINES)}
        try:
            return original(self, save_directory, *args, **kwargs)
        finally:  # the in-memory config is left as it was
            if previous is missing:
                del self.custom_pipelines
            else:
                self.custom_pipelines = previous

    save_pretrained._hf_iqa_pipeline = True
    config_cls.save_pretrained = save_pretrained


class _RemoteTasks(dict):
    """`config.custom_pipelines` as the installed package loads it: the same entries (saved back unchanged), but
    `task in custom_pipelines` is False for the tasks this package registers itself. `transformers.pipeline()`
    only asks `in` to decide whether to fetch the remote pipeline file and demand `trust_remote_code=True`; with
    hf_iqa installed the local class serves the task instead (with or without a task name)."""

    def __contains__(self, task: object) -> bool:
        return task != TASK and super().__contains__(task)


def _local_task_on_load(config_cls: type) -> None:
    """Configs loaded by the package's classes get their `custom_pipelines` wrapped in `_RemoteTasks` (idempotent)."""
    original = config_cls.from_dict.__func__
    if getattr(original, "_hf_iqa_pipeline", False):
        return

    @functools.wraps(original)
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        loaded = original(cls, config_dict, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        remote = getattr(config, "custom_pipelines", None)
        if isinstance(remote, dict) and not isinstance(remote, _RemoteTasks):
            config.custom_pipelines = _RemoteTasks(remote)
        return loaded

    from_dict._hf_iqa_pipeline = True
    config_cls.from_dict = classmethod(from_dict)


for _classes in registered_models().values():
    _carry_pipeline_on_save(_classes["config"])
    _local_task_on_load(_classes["config"])


def pipeline(
    task: str = TASK,
    model: Any = None,
    processor_kwargs: dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs,
) -> ImageQualityPipeline:
    """`transformers.pipeline` for the image-quality task with this package's pipeline class.

    `model` may be a zoo name (`hf_iqa.list_models()`), a folder, a Hub id or a model instance.
    `processor_kwargs` override image-processor settings (e.g. `{"protocol": "pyiqa"}` for LIQE); `model_kwargs`
    go to `from_pretrained` and may override config fields (e.g. `{"task": "aesthetics"}` for UniQA,
    `{"prompt_logit_scale": 50.0}` for QualiCLIP); other kwargs go to `transformers.pipeline` (`device`, `dtype`).
    """
    if task != TASK:
        raise ValueError(f"hf_iqa.pipeline only builds the {TASK!r} task, got {task!r}")
    if isinstance(model, os.PathLike):
        model = str(model)
    if isinstance(model, str):
        from .zoo import resolve

        model = resolve(model, kwargs.get("revision"))
    trust = kwargs.get("trust_remote_code")
    if (processor_kwargs or model_kwargs) and not isinstance(model, str):
        raise ValueError("processor_kwargs / model_kwargs need `model` to be a name, folder or Hub id")
    if processor_kwargs or (model_kwargs and "image_processor" not in kwargs):
        kwargs["image_processor"] = AutoImageProcessor.from_pretrained(
            model, trust_remote_code=trust, **(processor_kwargs or {})
        )
    if model_kwargs:  # transformers.pipeline has its own `task` argument, so config overrides are applied here
        dtype = kwargs.pop("dtype", None)
        model = AutoModel.from_pretrained(model, trust_remote_code=trust, dtype=dtype or "auto", **model_kwargs)
    return transformers_pipeline(TASK, model=model, pipeline_class=ImageQualityPipeline, **kwargs)
