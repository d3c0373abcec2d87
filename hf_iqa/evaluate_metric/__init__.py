"""A local `evaluate` module for the IQA correlation metrics (optional: `pip install evaluate`).

import evaluate
from hf_iqa.evaluate_metric import IQA_CORRELATION_PATH
metric = evaluate.load(IQA_CORRELATION_PATH)        # offline: a local file, nothing is downloaded
metric.compute(predictions=[...], references=[...], fit="logistic4")   # with 95 % intervals
metric.compute(predictions=[...], references=[...], compare_with=[...])  # + paired test against a second model
"""

from pathlib import Path

IQA_CORRELATION_PATH = str(Path(__file__).with_name("iqa_correlation.py"))
