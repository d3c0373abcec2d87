"""The output contract of hf_iqa/models/__init__.py, checked for every registered model family."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from transformers import AutoConfig, AutoModel
from transformers.image_processing_backends import PilBackend

import hf_iqa

FAMILIES = sorted(hf_iqa.registered_models())


def test_every_model_folder_is_registered():
    assert FAMILIES == ["dog_iqa", "liqe", "qualiclip", "uniqa"]


@pytest.mark.parametrize("family", FAMILIES)
def test_config_carries_score_range_direction_and_labels(family):
    config = hf_iqa.registered_models()[family]["config"]()
    low, high = config.score_range
    assert isinstance(low, float) and isinstance(high, float) and low < high
    assert config.higher_is_better is True
    assert isinstance(config.output_labels, dict)
    for field, labels in config.output_labels.items():
        assert isinstance(field, str) and all(isinstance(label, str) for label in labels)
    assert config.model_type.startswith("hf_iqa_") and AutoConfig.for_model(config.model_type).__class__ is type(
        config
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_classes_and_output_starts_with_scores(family):
    classes = hf_iqa.registered_models()[family]
    config_class = classes["config"]
    assert AutoModel._model_mapping[config_class] is classes["model"]
    assert issubclass(classes["image_processor"], PilBackend)  # no torchvision needed
    output_class = inspect.signature(classes["model"].forward).return_annotation
    module = inspect.getmodule(classes["model"])
    outputs = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
               if dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__ and "Output" in cls.__name__]  # fmt: skip
    assert outputs, f"{family}: no ModelOutput class in {module.__name__} ({output_class})"
    for output in outputs:
        assert dataclasses.fields(output)[0].name == "scores", output
