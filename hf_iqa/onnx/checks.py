"""What the exporter and its variants refuse with, and how a variant's scores are compared with fp32."""

from __future__ import annotations

import numpy as np


class ExportError(ValueError):
    """The model cannot be exported, or the exported graph does not reproduce it (nothing was saved)."""


def drift(reference: np.ndarray, variant: np.ndarray) -> dict[str, float]:
    """max |Δ| and Spearman's rank correlation between two score vectors."""
    from scipy.stats import spearmanr

    return {
        "max_abs_difference": float(np.abs(reference - variant).max()),
        "srcc": float(spearmanr(reference, variant).statistic),
    }
