"""Performance of a model before the outcomes arrive, from its calibrated probabilities.

This is the idea of NannyML's confidence-based performance estimation (CBPE): if the model's
probabilities ``p`` are calibrated and P(default | columns) has not changed since training,
each applicant is a defaulter with probability ``p``. Then the expected default rate is the
mean of ``p``, and the expected AUC counts each applicant as ``p`` of a defaulter and ``1 - p``
of a non-defaulter (:func:`estimated_auc`). The assumption cannot be checked without outcomes;
when they arrive, :func:`calibration_check` says whether it held.

>>> rng = np.random.default_rng(0)
>>> p = rng.beta(1, 8, 50_000)
>>> y = (rng.random(50_000) < p).astype(int)
>>> from models.metrics import rank_auc
>>> abs(estimated_auc(p) - rank_auc(p, y)) < 0.01
True
>>> calibration_check(y, p)["trusted"], calibration_check(y, np.clip(p / 2, 0, 1))["trusted"]
(True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.metrics import histogram_auc

__all__ = ["ASSUMPTION", "Z_LIMIT", "calibration_check", "estimated_auc",
           "estimated_default_rate"]

ASSUMPTION = ("the model's probabilities are calibrated on the training population and "
              "P(default | columns) is the same in this period (only the mix of applicants "
              "may move); shifts of the columns are allowed, a change of the relation is not")
Z_LIMIT = 3.0
"""Observed defaults this many standard errors from the estimate: the assumption failed."""


def estimated_default_rate(p: np.ndarray) -> float:
    """Return the expected default rate of calibrated probabilities ``p``."""
    return float(np.mean(np.asarray(p, dtype=np.float64)))


def estimated_auc(p: np.ndarray) -> float:
    """Return the expected AUC of calibrated probabilities ``p`` (ties count half).

    >>> estimated_auc(np.array([0.0, 1.0]))
    1.0
    """
    values, which = np.unique(np.asarray(p, dtype=np.float64), return_inverse=True)
    pos = np.bincount(which, weights=values[which], minlength=len(values))
    neg = np.bincount(which, weights=1.0 - values[which], minlength=len(values))
    return histogram_auc(pos, neg)


def calibration_check(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Compare observed defaults with the estimate: trusted unless they differ by Z_LIMIT.

    The standard error is that of a sum of independent Bernoulli(``p``) outcomes.
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    expected, observed = float(p.sum()), float(y.sum())
    se = float(np.sqrt(np.sum(p * (1 - p)))) or 1.0
    z = (observed - expected) / se
    return {"observed_default_rate": observed / len(y), "estimated_default_rate": expected / len(y),
            "z": z, "trusted": bool(abs(z) < Z_LIMIT)}
