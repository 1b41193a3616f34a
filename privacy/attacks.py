"""Empirical privacy audits: what an attacker actually learns, next to what DP promises.

Membership inference (a loss-threshold attack, Yeom et al. 2018): the attacker scores each
record by the log-likelihood the model gives its true label; members (training rows) tend to
score higher. The threshold is calibrated on the validation rows at a fixed false-positive
rate, and the attack is then measured on fresh rows: training rows against every test row.
An (epsilon, delta)-DP training bounds every such test by
``TPR <= exp(epsilon) * FPR + delta`` and ``1 - FPR <= exp(epsilon) * (1 - TPR) + delta``;
with Clopper-Pearson bounds on the measured rates this gives an epsilon lower bound at the
stated confidence (Jagielski et al. 2020; Nasr et al. 2021). The train/test assignment is a keyed
hash of the ID and the public seed: membership is a coin only for an attacker who does not know
them.

Label leakage (vertical federation; Li et al. 2022, "Label leakage and protection in two-party
split learning"): a passive party sees, for each of its records, the gradient of the loss with
respect to the embedding it sent. With a sigmoid head the gradient carries ``p - y``: defaults
(the rare class) get larger gradients pointing the other way. The party scores each record by
the gradient's norm and by its projection on the gradients' principal direction (oriented so
that the smaller side is "default"), without any label.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from privacy.membership_attack import low_fpr_figures
from privacy.settings import AuditSettings

_TINY = np.finfo(np.float64).tiny


def label_log_likelihood(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-record log-likelihood of the true label (the negative loss): the attack score."""
    p = scores.astype(np.float64)
    return np.where(labels > 0.5, np.log(np.maximum(p, _TINY)),
                    np.log(np.maximum(1.0 - p, _TINY)))


def epsilon_lower_bound(true_pos: int, members: int, false_pos: int, non_members: int,
                        delta: float, confidence: float) -> dict[str, float]:
    """Epsilon that a test with these counts proves, at ``confidence``, for a DP training.

    >>> epsilon_lower_bound(50, 1000, 50, 1000, 1e-5, 0.95)["epsilon_lower_bound"]
    0.0
    >>> round(epsilon_lower_bound(900, 1000, 10, 1000, 1e-5, 0.95)["epsilon_lower_bound"], 2)
    3.87
    """
    tpr_ci = binomtest(true_pos, members).proportion_ci(confidence, method="exact")
    fpr_ci = binomtest(false_pos, non_members).proportion_ci(confidence, method="exact")
    tpr_lo, fpr_hi = tpr_ci.low, fpr_ci.high
    bounds = [0.0]
    if tpr_lo - delta > 0 and fpr_hi > 0:
        bounds.append(math.log((tpr_lo - delta) / fpr_hi))
    if 1 - fpr_hi - delta > 0 and 1 - tpr_lo > 0:
        bounds.append(math.log((1 - fpr_hi - delta) / (1 - tpr_lo)))
    return {"epsilon_lower_bound": max(bounds), "tpr": true_pos / members,
            "fpr": false_pos / non_members, "tpr_lower": float(tpr_lo),
            "fpr_upper": float(fpr_hi)}


def auc_interval(auc: float, positives: int, negatives: int,
                 confidence: float) -> tuple[float, float]:
    """Confidence interval of an AUC (Hanley and McNeil 1982, normal approximation).

    >>> lo, hi = auc_interval(0.5, 10_000, 10_000, 0.95)
    >>> round(lo, 3), round(hi, 3)
    (0.492, 0.508)
    """
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc ** 2)
                + (negatives - 1) * (q2 - auc ** 2)) / max(positives * negatives, 1)
    half = float(ndtri(1 - (1 - confidence) / 2)) * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def _stratified(member_labels: np.ndarray, shares: dict[int, float], total: int,
                rng: np.random.Generator) -> np.ndarray:
    """Pick up to ``total`` members with the measured non-members' label shares."""
    shares = {c: v for c, v in shares.items() if (member_labels == c).any()}
    total_share = sum(shares.values())
    shares = {c: v / total_share for c, v in shares.items()} if total_share else shares
    by_label = {c: np.flatnonzero(member_labels == c) for c in shares}
    # the largest sample whose label mix matches, within what each class has
    scale = min([total] + [len(by_label[c]) / shares[c] for c in shares if shares[c] > 0])
    picked = [rng.permutation(by_label[c])[: int(scale * shares[c])] for c in shares]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


def membership_attack(member_labels: np.ndarray, member_scores: np.ndarray,
                     held_out_labels: np.ndarray, held_out_scores: np.ndarray, *,
                     delta: float, settings: AuditSettings, seed: int,
                     calibration: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Run the loss-threshold attack; return its AUC (with an interval), rates and bound.

    ``member_*``: the training rows (labels and the model's scores); ``held_out_*``: rows the
    model never saw (the test rows), every one of them measured when ``calibration`` (labels
    and scores of other rows the model did not train on: the validation rows) sets the
    threshold, else half of them set it and half are measured. Validation rows chose the epoch,
    so they calibrate but are never counted as non-members. Members are drawn
    label-stratified, with the measured non-members' default rate: a loss-threshold score
    differs by label, so a different label mix alone would move the attack's AUC.
    ``attack_auc_by_label`` gives the AUC within each label. The audit is the attacker's tool,
    so its sampling follows the public seed.
    """
    rng = np.random.default_rng(seed)
    if len(held_out_labels) < 20 or len(member_labels) < 10:
        raise ValueError(f"the membership audit needs at least 20 held-out and 10 training "
                         f"rows, got {len(held_out_labels)} and {len(member_labels)}")
    if calibration is not None and len(calibration[0]) >= 20:
        held_out_labels = np.r_[held_out_labels, calibration[0]]
        held_out_scores = np.r_[held_out_scores, calibration[1]]
        n = len(held_out_labels) - len(calibration[0])
        measure, calibrate = np.arange(n), np.arange(n, len(held_out_labels))
    else:
        order = rng.permutation(len(held_out_labels))
        calibrate, measure = order[: len(order) // 2], order[len(order) // 2:]
    labels_measured = (held_out_labels[measure] > 0.5).astype(int)
    shares = {c: float((labels_measured == c).mean()) for c in (0, 1)}
    member_classes = (member_labels > 0.5).astype(int)
    picked = _stratified(member_classes, shares, settings.max_members, rng)
    if len(picked) < 10:
        raise ValueError("the membership audit found fewer than 10 training rows to match the "
                         "held-out rows' label mix")
    member = label_log_likelihood(member_labels[picked], member_scores[picked])
    held = label_log_likelihood(held_out_labels, held_out_scores)
    threshold = float(np.quantile(held[calibrate], 1 - settings.fpr, method="higher"))
    true_pos = int((member > threshold).sum())
    false_pos = int((held[measure] > threshold).sum())
    truth = np.r_[np.ones(len(member)), np.zeros(len(measure))]
    attack_auc = float(roc_auc_score(truth, np.r_[member, held[measure]]))
    low, high = auc_interval(attack_auc, len(member), len(measure), settings.confidence)
    by_label = {}
    for c in (0, 1):
        mine, theirs = member[member_classes[picked] == c], held[measure][labels_measured == c]
        if len(mine) and len(theirs):
            by_label[str(c)] = float(roc_auc_score(
                np.r_[np.ones(len(mine)), np.zeros(len(theirs))], np.r_[mine, theirs]))
    out = {"attack": "loss threshold", "attack_auc": attack_auc,
           "attack_auc_interval": [low, high], "attack_auc_by_label": by_label,
           "stratified_by_label": True, "target_fpr": settings.fpr,
           "confidence": settings.confidence, "members": len(member),
           "non_members": len(measure), "calibration_rows": len(calibrate),
           "threshold": threshold,
           "tpr_at_fpr": low_fpr_figures(member, held[measure], settings.confidence)}
    out |= epsilon_lower_bound(true_pos, len(member), false_pos, len(measure), delta,
                               settings.confidence)
    return out


def leakage_scores(gradients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores a passive party can compute from the gradients of one exchange, without labels.

    Returns (norm score, direction score); higher means "more likely a default".

    >>> g = np.array([[0.2, 0.0], [0.1, 0.0], [0.15, 0.0], [-0.8, 0.0]])
    >>> norm, direction = leakage_scores(g)
    >>> int(norm.argmax()), int(direction.argmax())
    (3, 3)
    """
    g = np.asarray(gradients, dtype=np.float64)
    norm = np.linalg.norm(g, axis=1)
    if len(g) < 2 or not np.any(norm > 0):
        return norm, np.zeros(len(g))
    _, _, vt = np.linalg.svd(g, full_matrices=False)
    projection = g @ vt[0]
    # the principal direction separates the two signs of p - y; defaults are the smaller side
    if (projection > 0).sum() > (projection < 0).sum():
        projection = -projection
    return norm, projection


def label_leakage_attack(labels: np.ndarray, norm: np.ndarray,
                        direction: np.ndarray) -> dict[str, Any]:
    """AUC of each label-free attack against the true labels; ``attack_auc`` is the stronger."""
    if labels.min() == labels.max():
        raise ValueError("the label-leakage audit needs rows of both classes")
    norm_auc = float(roc_auc_score(labels, norm))
    direction_auc = float(roc_auc_score(labels, direction))
    return {"rows": int(len(labels)), "norm_auc": norm_auc, "direction_auc": direction_auc,
            "attack_auc": max(norm_auc, direction_auc)}


def membership_epsilon(mode: str, privacy: dict[str, Any] | None) -> dict[str, Any]:
    """Return the epsilon (and delta) DP promises against membership of one whole record.

    Horizontal DP-SGD: a record lives at one lender, so the maximum over lenders. Central DP:
    the record-level epsilon (sensitivity 2C), not the client-level one. Vertical: a record
    touches every party, so the sum over every party and mechanism (basic composition; an
    upper bound), and unbounded unless DP-SGD protects every party's columns.
    """
    if privacy is None:
        return {"epsilon": math.inf, "delta": 0.0, "why": "no differential privacy"}
    if mode == "horizontal":
        if privacy["mechanism"] == "central":
            record = privacy["parties"]["server/record"]
            return {"epsilon": float(record["epsilon"]), "delta": float(record["delta"]),
                    "why": "central DP, record level: one record moves its lender's clipped "
                           "update by up to 2C; composed after the lenders' noisy summaries"}
        return {"epsilon": float(privacy["epsilon"]), "delta": float(privacy["delta"]),
                "why": "each record lives at one lender: the maximum over lenders"}
    entries = privacy["parties"].values()
    if not any(e["mechanism"] == "dpsgd" for e in entries):
        return {"epsilon": math.inf, "delta": 0.0,
                "why": "without DP-SGD the parties' columns have no record-level protection"}
    totals = privacy.get("party_totals") or dict(privacy["parties"])
    return {"epsilon": float(sum(t["epsilon"] for t in totals.values())),
            "delta": float(min(1.0, sum(t["delta"] for t in totals.values()))),
            "why": "a record touches every party: the sum over parties of each party's "
                   "mechanisms composed"}
