"""RMIA, the relative membership inference attack, scored against reference models.

Zarifzadeh, Liu, Chen, Mehrotra and Shokri (2024), "Low-Cost High-Power Membership Inference
Attacks" (ICML). The attacker holds the target model's probability of each candidate's true
label, ``Pr(x | theta)``, and the same from reference models trained on data drawn from the
population it is assumed to have (none of them trained on a candidate: the offline attack).
``Pr(x)``, the probability over models not trained on ``x``, is approximated from the OUT
references by ``((1 + a) mean_out(x) + (1 - a)) / 2`` (the paper's offline correction, ``a``
tuned by attacking one reference model with the others). The likelihood ratio of a candidate
against a population record ``z`` the target never trained on is

    LR(x, z) = (Pr(x | theta) / Pr(x)) / (Pr(z | theta) / Pr(z)),

and the score is the share of the population records with ``LR(x, z) > gamma``. With one set
of population records and ``gamma = 1`` the score is a non-decreasing function of
``Pr(x | theta) / Pr(x)`` alone (:func:`rmia_scores` counts the records below that ratio), so
every threshold on the score is a threshold on the ratio: :func:`relative_ratio` ranks the
candidates without the share's ties, and the ROC, AUC and TPR at low FPR are computed on it.

The figures: AUC with a bootstrap percentile interval (members and non-members resampled
apart, a public-seeded generator), TPR at 0.1% and 1% FPR with Clopper-Pearson intervals
(:mod:`privacy.membership_attack`). Pure numpy, scipy and scikit-learn: no torch, no flwr.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from privacy.membership_attack import low_fpr_figures

OFFLINE_A_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
"""The offline coefficients tried when tuning ``a`` (fixed before any score is seen)."""

_FLOOR = 1e-12  # a probability of 0 would make the ratio infinite


def label_probability(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Return each row's probability of its true label, ``Pr(x | theta)``.

    >>> label_probability(np.array([1.0, 0.0]), np.array([0.9, 0.9])).round(2).tolist()
    [0.9, 0.1]
    """
    p = np.asarray(scores, dtype=np.float64)
    out = np.where(np.asarray(labels) > 0.5, p, 1.0 - p)
    return np.maximum(out, _FLOOR)


def population_probability(reference: np.ndarray, offline_a: float) -> np.ndarray:
    """Return ``Pr(x)`` from OUT reference models (columns), with the offline correction.

    >>> population_probability(np.array([[0.2, 0.4]]), 1.0).round(6).tolist()
    [0.3]
    >>> population_probability(np.array([[0.2, 0.4]]), 0.0).round(6).tolist()
    [0.65]
    """
    if not 0.0 <= offline_a <= 1.0:
        raise ValueError(f"offline_a must lie in [0, 1], got {offline_a}")
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 2 or reference.shape[1] == 0:
        raise ValueError(f"reference probabilities must be rows x models, got {reference.shape}")
    mean_out = reference.mean(axis=1)
    return np.maximum((1 + offline_a) / 2 * mean_out + (1 - offline_a) / 2, _FLOOR)


def relative_ratio(target: np.ndarray, reference: np.ndarray, offline_a: float) -> np.ndarray:
    """Return ``Pr(x | theta) / Pr(x)`` per row (the RMIA score's order, without its ties)."""
    return np.asarray(target, dtype=np.float64) / population_probability(reference, offline_a)


def rmia_scores(target_x: np.ndarray, reference_x: np.ndarray, target_z: np.ndarray,
                reference_z: np.ndarray, *, offline_a: float, gamma: float = 1.0) -> np.ndarray:
    """Return the RMIA score: the share of population records ``z`` with ``LR(x, z) > gamma``.

    ``target_*``: the target's probability of each row's true label; ``reference_*``: the same
    under each reference model (rows x models), none of which trained on the row.

    >>> x = rmia_scores(np.array([0.9, 0.5]), np.array([[0.5], [0.5]]), np.array([0.5, 0.7]),
    ...                 np.array([[0.5], [0.5]]), offline_a=1.0)
    >>> x.tolist()
    [1.0, 0.0]
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    ratio_x = relative_ratio(target_x, reference_x, offline_a)
    ratio_z = np.sort(relative_ratio(target_z, reference_z, offline_a))
    if len(ratio_z) == 0:
        raise ValueError("RMIA needs population records z")
    # LR(x, z) > gamma  <=>  ratio_z < ratio_x / gamma
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)


def bootstrap_auc(members: np.ndarray, non_members: np.ndarray, *, confidence: float,
                  resamples: int, rng: np.random.Generator) -> tuple[float, list[float]]:
    """Return the AUC of ``members`` against ``non_members`` and its bootstrap interval.

    Percentile interval over ``resamples`` draws, members and non-members resampled apart.

    >>> auc, (low, high) = bootstrap_auc(np.arange(50.0) + 25, np.arange(50.0), confidence=0.95,
    ...                                  resamples=200, rng=np.random.default_rng(0))
    >>> auc, low < auc < high
    (0.875, True)
    """
    members = np.asarray(members, dtype=np.float64)
    non_members = np.asarray(non_members, dtype=np.float64)
    truth = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    auc = float(roc_auc_score(truth, np.r_[members, non_members]))
    draws = np.empty(resamples)
    for i in range(resamples):
        m = members[rng.integers(0, len(members), len(members))]
        n = non_members[rng.integers(0, len(non_members), len(non_members))]
        draws[i] = roc_auc_score(truth, np.r_[m, n])
    tail = (1 - confidence) / 2
    return auc, [float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))]


def tune_offline_a(paired_members: np.ndarray, paired_non_members: np.ndarray,
                   reference_members: np.ndarray, reference_non_members: np.ndarray) -> float:
    """Pick ``a`` from :data:`OFFLINE_A_GRID` by attacking a reference model with the others.

    ``paired_*``: one reference model's probability of the true label on rows it trained on
    (members) and on rows none trained on (non-members); ``reference_*``: the other reference
    models' on the same rows (none trained on any of them). The ``a`` with the highest AUC wins
    (the smallest on a tie), as ML Privacy Meter tunes it on a paired model.
    """
    truth = np.r_[np.ones(len(paired_members)), np.zeros(len(paired_non_members))]
    best, best_auc = OFFLINE_A_GRID[0], -1.0
    for a in OFFLINE_A_GRID:
        ratio = np.r_[relative_ratio(paired_members, reference_members, a),
                      relative_ratio(paired_non_members, reference_non_members, a)]
        auc = float(roc_auc_score(truth, ratio))
        if auc > best_auc + 1e-12:
            best, best_auc = a, auc
    return best


def rmia_figures(member_ratio: np.ndarray, non_member_ratio: np.ndarray, *, confidence: float,
                 resamples: int, seed: int) -> dict[str, Any]:
    """AUC (bootstrap interval) and TPR at 0.1% and 1% FPR (Clopper-Pearson) of the ratios."""
    rng = np.random.default_rng(seed)
    log_members, log_others = np.log(member_ratio), np.log(non_member_ratio)
    auc, interval = bootstrap_auc(log_members, log_others, confidence=confidence,
                                  resamples=resamples, rng=rng)
    return {"attack_auc": auc, "attack_auc_interval": interval,
            "auc_interval_method": f"bootstrap percentile, {resamples} resamples",
            "members": len(log_members), "non_members": len(log_others),
            "confidence": confidence,
            "tpr_at_fpr": low_fpr_figures(log_members, log_others, confidence)}
