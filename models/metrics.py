"""Credit-scoring metrics on predicted default probabilities.

scikit-learn supplies AUC, the ROC curve (for KS), the Brier score and log-loss; expected
calibration error and the population stability index are short enough to state here.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score CDFs of goods and bads.

    >>> round(ks_statistic(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])), 3)
    1.0
    """
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Compute the expected calibration error over equal-width bins.

    The mean absolute gap between predicted and observed default rate per bin, weighted by the
    share of rows in each bin.

    >>> round(expected_calibration_error(np.array([0, 1, 0, 1]), np.array([0.5] * 4)), 3)
    0.0
    >>> round(expected_calibration_error(np.array([0, 0]), np.array([0.3, 0.3])), 3)
    0.3
    """
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        rows = which == b
        total += rows.mean() * abs(float(p[rows].mean()) - float(y[rows].mean()))
    return float(total)


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of ``actual`` scores against ``expected`` scores, on deciles of ``expected``.

    Below 0.1 is usually read as stable, above 0.25 as a shift.

    >>> rng = np.random.default_rng(0)
    >>> a = rng.random(10_000)
    >>> population_stability_index(a, rng.random(10_000)) < 0.01
    True
    >>> population_stability_index(a, a ** 3) > 0.25
    True
    """
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-6, None), np.clip(a, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def score_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, KS, Gini, Brier score, log-loss and expected calibration error.

    >>> m = score_metrics(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6]))
    >>> m["auc"], m["gini"]
    (1.0, 1.0)
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y, p))
    return {
        "auc": auc,
        "ks": ks_statistic(y, p),
        "gini": 2.0 * auc - 1.0,
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }
