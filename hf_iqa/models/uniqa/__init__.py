from .configuration_uniqa import UniQaConfig
from .image_processing_uniqa import UniQaImageProcessor
from .modeling_uniqa import UniQaModel, UniQaOutput, UniQaPreTrainedModel

AUTO_CLASSES = {"config": UniQaConfig, "model": UniQaModel, "image_processor": UniQaImageProcessor}

__all__ = ["UniQaConfig", "UniQaImageProcessor", "UniQaModel", "UniQaOutput", "UniQaPreTrainedModel", "AUTO_CLASSES"]
