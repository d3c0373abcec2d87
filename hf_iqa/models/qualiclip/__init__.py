"""QualiCLIP and QualiCLIP+ (CLIP RN50 at native resolution, 7 antonym prompt pairs)."""

from .configuration_qualiclip import ClipResNetConfig, QualiClipConfig
from .image_processing_qualiclip import QualiClipImageProcessor
from .modeling_qualiclip import ClipResNetVisionModel, QualiClipModel, QualiClipOutput, QualiClipPreTrainedModel

AUTO_CLASSES = {"config": QualiClipConfig, "model": QualiClipModel, "image_processor": QualiClipImageProcessor}

__all__ = [
    "AUTO_CLASSES",
    "ClipResNetConfig",
    "ClipResNetVisionModel",
    "QualiClipConfig",
    "QualiClipImageProcessor",
    "QualiClipModel",
    "QualiClipOutput",
    "QualiClipPreTrainedModel",
]
