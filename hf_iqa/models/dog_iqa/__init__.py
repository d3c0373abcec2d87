"""Dog-IQA: training-free IQA from SAM2 regions and a multimodal LLM (arXiv 2410.02505)."""

from .configuration_dog_iqa import DogIqaConfig
from .image_processing_dog_iqa import DogIqaImageProcessor
from .modeling_dog_iqa import DogIqaCache, DogIqaModel, DogIqaOutput, DogIqaPreTrainedModel, aggregate_scores

AUTO_CLASSES = {"config": DogIqaConfig, "model": DogIqaModel, "image_processor": DogIqaImageProcessor}

__all__ = [
    "AUTO_CLASSES",
    "DogIqaCache",
    "DogIqaConfig",
    "DogIqaImageProcessor",
    "DogIqaModel",
    "DogIqaOutput",
    "DogIqaPreTrainedModel",
    "aggregate_scores",
]
