"""A membership attack's figure at low false-positive rates: TPR at 0.1% and 1% FPR.

The figure the strongest attacks are compared by (Carlini et al. 2022, "Membership Inference
Attacks From First Principles"): an attack that finds a few members with near certainty is a
privacy failure even when its AUC is near 0.5. The threshold is the score that lets through at
most ``fpr`` of the non-members; the TPR's interval is Clopper-Pearson on the members. The
threshold is read from the same non-members, so at 0.1% FPR on a few thousand of them it rests
on a handful of rows: read the interval, and the number of non-members beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

LOW_FPRS: tuple[float, ...] = (0.001, 0.01)


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float,
               confidence: float) -> dict[str, Any]:
    """Return the TPR at false-positive rate at most ``fpr``, with its interval.

    Members are flagged when their score is above the threshold; ties with it are not.

    >>> out = tpr_at_fpr(np.arange(100.0) + 50, np.arange(100.0), 0.01, 0.95)
    >>> out["tpr"], out["fpr"], out["false_positives"]
    (0.51, 0.01, 1)
    """
    members = np.asarray(members, dtype=np.float64)
    others = np.sort(np.asarray(non_members, dtype=np.float64))
    if len(members) == 0 or len(others) == 0:
        raise ValueError("tpr_at_fpr needs members and non-members")
    allowed = int(np.floor(fpr * len(others) + 1e-9))
    # the lowest threshold that lets at most `allowed` non-members through
    threshold = others[len(others) - allowed - 1] if allowed < len(others) else -np.inf
    true_pos = int((members > threshold).sum())
    false_pos = int((others > threshold).sum())
    interval = binomtest(true_pos, len(members)).proportion_ci(confidence, method="exact")
    return {"tpr": true_pos / len(members), "tpr_interval": [float(interval.low),
                                                             float(interval.high)],
            "fpr": false_pos / len(others), "false_positives": false_pos,
            "threshold": float(threshold)}


def low_fpr_figures(members: np.ndarray, non_members: np.ndarray,
                    confidence: float) -> dict[str, dict[str, Any]]:
    """TPR at each of :data:`LOW_FPRS`, keyed by the FPR as text (``"0.001"``, ``"0.01"``)."""
    return {f"{fpr:g}": tpr_at_fpr(members, non_members, fpr, confidence) for fpr in LOW_FPRS}
