"""hf_iqa: blind image quality assessment models (LIQE, QualiCLIP, UniQA, Dog-IQA) as native transformers models.

`import hf_iqa` registers every model with transformers' Auto classes and the `image-quality` pipeline task.
"""

from .io import ImageLoadError, load_image
from .models import register_all, registered_models

register_all()

from .models.mplug_owl3 import register_mplug_owl3  # noqa: E402  (an MLLM backbone, not an IQA model)

register_mplug_owl3()

from .pipeline import ImageQualityPipeline, pipeline  # noqa: E402  (needs the registered classes)
from .quality_metric import QualityMetric  # noqa: E402
from .zoo import ModelNotAvailableError, list_models, load, resolve  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ImageLoadError", "ImageQualityPipeline", "ModelNotAvailableError", "list_models", "load", "load_image",
    "pipeline", "QualityMetric", "register_all", "registered_models", "resolve",
]  # fmt: skip
