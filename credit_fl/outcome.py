"""What every finished run hands to the writers, whatever its mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from credit_data.split import SPLITS
from credit_data.tables import Population
from federation.run_settings import RunSettings
from fl_client.simulation_sources import training_parties as training_parties
from models.metrics import ScoreSummary, caught_by_type


@dataclass(frozen=True)
class RunOutcome:
    """Summaries already computed; :mod:`credit_fl.results` lays them out.

    ``metrics`` come from ``report``, a score summary per split: the same numbers whether
    the rows are at hand or only the summaries reached the server. ``predictions`` (the test
    rows' scores), ``labels`` and ``scores`` (per split, for the membership audit) and
    ``label_leakage`` (per passive party, the label-free attack scores it kept and the true
    labels of those rows) and ``inversion`` (per passive party, the final ``embeddings`` it
    sent the lender and its numeric ``columns`` on the same rows) exist where the runner holds
    the rows: not in a deployment.
    ``references`` are the logistic regressions on the same rows
    (:mod:`credit_fl.logistic_reference`; simulation only).
    """

    settings: RunSettings
    dataset: dict[str, Any]
    model: dict[str, Any]
    metrics: dict[str, Any]
    data_seconds: float
    train_seconds: float
    train_rows_per_s: float
    privacy: dict[str, Any] | None = None
    federation: dict[str, Any] | None = None
    report: dict[str, ScoreSummary] | None = None
    references: dict[str, Any] | None = None
    predictions: pd.DataFrame | None = None
    labels: dict[str, np.ndarray] | None = None
    scores: dict[str, np.ndarray] | None = None
    label_leakage: dict[str, dict[str, np.ndarray]] | None = None
    inversion: dict[str, dict[str, Any]] | None = None


def split_report(y: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                 private: bool = False) -> dict[str, ScoreSummary]:
    """Summarise each split's scores as a node would (no training split under DP)."""
    return {name: ScoreSummary.of(y[name], scores[name]) for name in y
            if not (private and name == "train")}


def oracle_auc(population: Population, label: str, test_ids: np.ndarray,
               test_labels: np.ndarray) -> float | None:
    """AUC of the generator's true probabilities on the test rows (synthetic data only)."""
    if population.truth is None:
        return None
    truth = population.truth[label].reindex(test_ids).to_numpy()
    return float(roc_auc_score(test_labels, truth))


def fraud_types(population: Population, test_ids: np.ndarray, labels: np.ndarray,
                scores: np.ndarray, without: dict[str, np.ndarray] | None = None
                ) -> dict[str, Any] | None:
    """Break a fraud model's test results down by scheme (synthetic data only).

    Per ``truth["fraud_type"]``: how many of the test frauds, and the share caught in the
    riskiest 5% of test applicants; ``without.<party>``: the same with that party's embeddings
    masked (which parties catch which scheme). None for data without the generator's truth.
    """
    if population.truth is None or "fraud_type" not in population.truth:
        return None
    kinds = population.truth["fraud_type"].reindex(test_ids).fillna("").to_numpy(dtype=str)
    out: dict[str, Any] = {k: dict(v) for k, v in caught_by_type(scores, labels, kinds).items()}
    for party, masked in (without or {}).items():
        for kind, caught in caught_by_type(masked, labels, kinds).items():
            out[kind].setdefault("without", {})[party] = caught["caught_in_riskiest_5"]
    return out


def with_fraud_types(metrics: dict[str, Any], population: Population, test_ids: np.ndarray,
                     labels: np.ndarray, scores: np.ndarray,
                     without: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Add ``test.rare_label.by_fraud_type`` to a fraud run's metrics (where it applies)."""
    rare = metrics.get("test", {}).get("rare_label")
    breakdown = fraud_types(population, test_ids, labels, scores, without)
    if rare is None or not breakdown:
        return metrics
    return metrics | {"test": metrics["test"] | {"rare_label": rare | {
        "by_fraud_type": breakdown}}}


def report_positive_rates(report: dict[str, ScoreSummary], private: bool = False
                          ) -> dict[str, float | None]:
    """Default rate per split; under DP the training split's is left out (null).

    With the number of training rows it would give the exact count of defaults among them,
    the very count a private run only ever releases noised.
    """
    return {name: None if private and name == "train" else report[name].defaults
            / report[name].rows for name in SPLITS.values()}


def predictions_frame(ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Lay out the ``id,label,score`` table of the test split."""
    return pd.DataFrame({"id": ids, "label": labels.astype(int), "score": scores})
