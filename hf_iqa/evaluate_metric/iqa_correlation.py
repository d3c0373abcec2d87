"""`evaluate` wrapper of `hf_iqa.metrics.iqa_correlations` (SRCC, KRCC, PLCC, RMSE).

Load it offline with `evaluate.load(hf_iqa.evaluate_metric.IQA_CORRELATION_PATH)`. `evaluate` is in maintenance
mode upstream, so hf_iqa keeps it optional; `hf_iqa.metrics` is the primary API and gives the same numbers.
"""

import datasets
import evaluate

from hf_iqa.metrics import iqa_correlations
from hf_iqa.significance import compare_predictions

_DESCRIPTION = """Correlation between predicted quality scores and subjective labels (MOS): SRCC, KRCC (tau-b), PLCC and
RMSE. With `fit="logistic4"` (default, as LIQE reports) or `"logistic5"`, PLCC/RMSE are computed after a monotone
logistic mapping of the predictions onto the label scale; `fit=None` gives raw PLCC (pyiqa, Dog-IQA)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted quality scores.
    references (list of float): subjective labels (MOS), same length.
    fit (str or None): "logistic4" (default), "logistic5" or None.
    resamples (int): bootstrap resamples of the 95 % intervals (default 1000; 0: no intervals).
    seed (int): seed of the bootstrap (default 0).
    compare_with (list of float, optional): a second model's predictions for the same references: adds
        `paired_test`, the paired bootstrap of the SRCC difference (hf_iqa.significance.compare_predictions).
Returns:
    dict with srcc, krcc, plcc, rmse, plcc_raw, rmse_raw, plcc_fitted, rmse_fitted, fit_requested, fit_status,
    fit, fit_flagged, fit_params, num_items, srcc_ci, plcc_ci, krcc_ci, ci (and paired_test).
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

    def _compute(self, predictions, references, fit="logistic4", resamples=1000, seed=0, compare_with=None):
        result = iqa_correlations(predictions, references, fit=fit, resamples=resamples, seed=seed)
        if compare_with is not None:
            result["paired_test"] = compare_predictions(
                predictions, compare_with, references, resamples=max(resamples, 1), seed=seed
            )
        return result
