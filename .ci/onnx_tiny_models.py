"""CI helper for the "onnx without torch" stage: save tiny random LIQE and UniQA folders (with their image
processors) and a few photos, so that the torch venv can score and export them and the torch-free venv can score
the exports. Usage: python .ci/onnx_tiny_models.py OUT_DIR"""

from __future__ import annotations

import sys
from pathlib import Path

from hf_iqa.onnx.images import parity_images
from tests.onnx.conftest import tiny_model_and_processor

out = Path(sys.argv[1])
for family in ("liqe", "uniqa"):
    model, processor = tiny_model_and_processor(family)
    model.save_pretrained(out / family)
    processor.save_pretrained(out / family)
(out / "photos").mkdir(parents=True)
for index, image in enumerate(parity_images()):
    image.save(out / "photos" / f"{index}.jpg", quality=92)
