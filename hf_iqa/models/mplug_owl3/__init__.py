"""mPLUG-Owl3 (`mPLUG/mPLUG-Owl3-7B-240728`), the MLLM backbone of Dog-IQA, for transformers 5.

An MLLM, not an IQA model: deliberately no `AUTO_CLASSES` (so it is not in `hf_iqa.registered_models()`);
`hf_iqa.models.register_all()` calls its `register_auto_classes()`, i.e. `register_mplug_owl3()`, which registers
model type `mplugowl3` (the published name) with the Auto classes; afterwards
`AutoModelForCausalLM.from_pretrained("mPLUG/mPLUG-Owl3-7B-240728")` builds these classes (local classes win over
the repo's `auto_map`, so no `trust_remote_code` is needed and the published remote code is never run).
"""

from .configuration_mplug_owl3 import MplugOwl3Config
from .image_processing_mplug_owl3 import MplugOwl3ImageProcessor, placeholder_text, select_grid
from .modeling_mplug_owl3 import (
    MplugOwl3ForConditionalGeneration,
    MplugOwl3PreTrainedModel,
    default_dtype,
    quantization_config,
)
from .processing_mplug_owl3 import MplugOwl3Processor, render_chat

_registered = False


def register_mplug_owl3() -> None:
    """Register `mplugowl3` with AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText,
    AutoImageProcessor and AutoProcessor (idempotent), and mark the classes for `auto_map` on `save_pretrained`."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    AutoConfig.register(MplugOwl3Config.model_type, MplugOwl3Config, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        auto_class.register(MplugOwl3Config, MplugOwl3ForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(
        MplugOwl3Config, image_processor_classes={"pil": MplugOwl3ImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(MplugOwl3Config, MplugOwl3Processor, exist_ok=True)
    MplugOwl3Config.register_for_auto_class()
    MplugOwl3ForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")
    MplugOwl3ImageProcessor.register_for_auto_class("AutoImageProcessor")
    MplugOwl3Processor.register_for_auto_class("AutoProcessor")
    _registered = True


register_auto_classes = register_mplug_owl3  # what hf_iqa.models.register_all() calls for folders without AUTO_CLASSES


__all__ = [
    "MplugOwl3Config",
    "MplugOwl3ForConditionalGeneration",
    "MplugOwl3ImageProcessor",
    "MplugOwl3PreTrainedModel",
    "MplugOwl3Processor",
    "default_dtype",
    "placeholder_text",
    "quantization_config",
    "register_mplug_owl3",
    "render_chat",
    "select_grid",
]
