"""`evaluate` wrapper of `hf_iqa.metrics.iqa_correlations` (SRCC, KRCC, PLCC, RMSE).

Load it offline with `evaluate.load(hf_iqa.evaluate_metric.IQA_CORRELATION_PATH)`. `evaluate` is in maintenance
mode upstream, so hf_iqa keeps it optional; `hf_iqa.metrics` is the primary API and gives the same numbers.
"""

import datasets
import evaluate

from hf_iqa.metrics import iqa_correlations

_DESCRIPTION = """Correlation between predicted quality scores and subjective labels (MOS): SRCC, KRCC (tau-b), PLCC and
RMSE. With `fit="logistic4"` (default, as LIQE reports) or `"logistic5"`, PLCC/RMSE are computed after a monotone
logistic mapping of the predictions onto the label scale; `fit=None` gives raw PLCC (pyiqa, Dog-IQA)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted quality scores.
    references (list of float): subjective labels (MOS), same length.
    fit (str or None): "logistic4" (default), "logistic5" or None.
Returns:
    dict with srcc, krcc, plcc, rmse, plcc_raw, rmse_raw, fit, fit_params, num_items.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IqaCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references, fit="logistic4"):
        return iqa_correlations(predictions, references, fit=fit)
