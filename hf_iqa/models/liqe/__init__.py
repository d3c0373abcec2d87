from .configuration_liqe import LiqeConfig
from .image_processing_liqe import LiqeImageProcessor
from .modeling_liqe import LiqeModel, LiqeOutput, LiqePreTrainedModel

AUTO_CLASSES = {"config": LiqeConfig, "model": LiqeModel, "image_processor": LiqeImageProcessor}

__all__ = ["LiqeConfig", "LiqeImageProcessor", "LiqeModel", "LiqeOutput", "LiqePreTrainedModel", "AUTO_CLASSES"]
