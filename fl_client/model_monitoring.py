"""The lender's view of a watched model: score and grade-mix PSI, outcomes or the estimate.

No flwr here. The figures (:func:`model_figures`) are computed where the scores are: by
``credit-fl monitor`` in simulation, and on a deployment at the lender's node, which sends
these figures and nothing else (``query.monitor_model``, :mod:`deployment.monitoring_node`).
The verdicts (:func:`judge`: a status against the thresholds, whether the label-free estimate
can be trusted) are the caller's, so a node sends figures, not decisions.

>>> rng = np.random.default_rng(0)
>>> ref = rng.beta(1, 8, 2_000)
>>> manifest = {"scorecard": {"base_points": 600, "base_odds": 50, "pdo": 20,
...             "grades": ["A", "B"], "grade_floors": [620]}}
>>> figures = model_figures(ref, (rng.random(2_000) < ref).astype(int), ref[::-1],
...                         None, manifest)
>>> figures["score_psi"] < 1e-12, figures["outcomes"]
(True, None)
>>> judge(figures, watch=0.1, act=0.25, inputs_act=False)["status"]
'stable'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from credit_data.errors import DataError
from credit_data.stability import psi, status_of
from fl_client.scoring_task import scorecard_of
from models.metrics import population_stability_index, score_metrics
from models.performance_estimate import (
    ASSUMPTION,
    Z_LIMIT,
    estimated_auc,
    estimated_default_rate,
)
from models.scorecard import grades_of, points

__all__ = ["AUC_TOLERANCE", "judge", "model_figures"]

AUC_TOLERANCE = 0.02
"""With outcomes, a label-free AUC this far from the measured one is not trusted."""


def _counts(grades: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return np.array([int((grades == g).sum()) for g in names], dtype=np.int64)


def _rate_by_grade(y: np.ndarray, grades: np.ndarray, names: tuple[str, ...],
                   min_count: int) -> dict[str, float | None]:
    """Each grade's default rate; None for a grade of fewer than ``min_count`` rows."""
    return {name: (float(y[grades == name].mean()) if (grades == name).sum() >= min_count
                   else None) for name in names}


def model_figures(reference_scores: np.ndarray, reference_labels: np.ndarray,
                  probability: np.ndarray, labels: np.ndarray | None,
                  manifest: dict[str, Any], grades: np.ndarray | None = None, *,
                  min_count: int = 1) -> dict[str, Any]:
    """Return the lender's figures of a period against training; no status, no verdict.

    ``reference_*``: the run's test split (its calibrated scores and outcomes);
    ``probability``: the period's scores; ``labels``: its outcomes, or None; ``manifest``: the
    lender's bundle's (its scorecard grades the scores); ``grades``: the period's grades as
    scoring gave them (default: graded here from ``probability``). Keys: ``rows``, ``score_psi``,
    ``grade_psi``, ``grade_mix``, ``training``, ``estimate`` (``auc``, ``default_rate``,
    ``assumption``) and ``outcomes`` (null without outcomes). ``min_count``: the fewest rows a
    figure describes (``monitor.min_count``; a deployed node's own floor at least): a smaller
    period is refused, a smaller grade's default rate is null.
    """
    card = scorecard_of(manifest)
    ref_p = np.asarray(reference_scores, dtype=np.float64)
    ref_y = np.asarray(reference_labels, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    if len(p) < min_count:
        raise DataError(f"the period has {len(p)} scored applicants, fewer than "
                        f"monitor.min_count={min_count}: its model section would describe "
                        "too few of them")
    ref_grades = np.asarray(grades_of(points(ref_p, card), card), dtype=object).astype(str)
    grades = np.asarray(grades_of(points(p, card), card) if grades is None else grades,
                        dtype=object).astype(str)
    ref_counts, counts = _counts(ref_grades, card.grades), _counts(grades, card.grades)
    out: dict[str, Any] = {
        "rows": len(p), "score_psi": population_stability_index(ref_p, p),
        "grade_psi": psi(ref_counts, counts),
        "grade_mix": {"training": dict(zip(card.grades, (ref_counts / len(ref_p)).tolist(),
                                           strict=True)),
                      "period": dict(zip(card.grades, (counts / len(p)).tolist(), strict=True))},
        "training": {"auc": score_metrics(ref_y, ref_p)["auc"],
                     "default_rate": float(ref_y.mean()),
                     "default_rate_by_grade": _rate_by_grade(ref_y, ref_grades, card.grades,
                                                             min_count)},
        "estimate": {"auc": estimated_auc(p), "default_rate": estimated_default_rate(p),
                     "assumption": ASSUMPTION},
        "outcomes": None,
    }
    if labels is not None:
        y = np.asarray(labels, dtype=np.float64)
        metrics = score_metrics(y, p)
        se = float(np.sqrt(np.sum(p * (1 - p)))) or 1.0  # of a sum of Bernoulli(p) outcomes
        out["outcomes"] = {"auc": metrics["auc"], "ks": metrics["ks"], "ece": metrics["ece"],
                           "brier": metrics["brier"], "default_rate": float(y.mean()),
                           "default_rate_by_grade": _rate_by_grade(y, grades, card.grades,
                                                                   min_count),
                           "calibration_z": float((y.sum() - p.sum()) / se)}
    return out


def judge(figures: dict[str, Any], *, watch: float, act: float,
          inputs_act: bool) -> dict[str, Any]:
    """Return ``figures`` with the model's ``status`` and the estimate's ``trusted`` and ``why``.

    The status is the worse of the score's and the grade mix's PSI; the estimate is not
    trusted when outcomes contradict the calibration (more than ``Z_LIMIT`` standard errors) or
    its AUC is more than :data:`AUC_TOLERANCE` from the measured one, or, without outcomes,
    when the inputs (``inputs_act``: a party at ``act``) moved too far for its assumption.
    """
    out = {k: v for k, v in figures.items() if k not in ("training", "estimate", "outcomes")}
    statuses = [status_of(figures[k], watch, act) for k in ("score_psi", "grade_psi")]
    out["status"] = "act" if "act" in statuses else "watch" if "watch" in statuses else "stable"
    out |= {"training": figures["training"], "estimate": dict(figures["estimate"]),
            "outcomes": figures["outcomes"]}
    estimate, outcomes = out["estimate"], figures["outcomes"]
    if outcomes is not None:
        gap = estimate["auc"] - outcomes["auc"]
        if not abs(outcomes["calibration_z"]) < Z_LIMIT:
            trusted, why = False, (
                f"observed default rate {outcomes['default_rate']:.4f} is "
                f"{outcomes['calibration_z']:+.1f} standard errors from the estimate "
                f"{estimate['default_rate']:.4f}: P(default | columns) changed, the "
                "label-free estimate cannot be trusted")
        elif abs(gap) > AUC_TOLERANCE:
            trusted, why = False, (
                f"the estimated AUC is {gap:+.3f} from the measured one (tolerance "
                f"{AUC_TOLERANCE}): the probabilities are not calibrated enough in their spread "
                "for a label-free AUC")
        else:
            trusted, why = True, ("observed defaults and AUC agree with the calibrated "
                                  "probabilities")
    elif inputs_act:
        trusted, why = False, ("inputs moved beyond monitor.act and no outcomes check the "
                               "assumption: the estimate is unverified, do not rely on it")
    else:
        trusted, why = True, "no outcomes yet; inputs stable enough for the assumption"
    estimate |= {"trusted": trusted, "why": why}
    return out

