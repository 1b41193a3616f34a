"""Issue 21, point 5: a rare label (fraud) is measured as fraud teams measure it.

Average precision, recall at 1% and 5% false positives, and the share of positives in the
riskiest 1% and 5%, from the lender's score summary, checked against the same figures computed
from the rows; and every run on a label under 5% positive reports them.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_curve

from models.metrics import ScoreSummary, rare_label_metrics, report_metrics
from tests.conftest import run_experiment


def _rows(n: int = 50_000, rate: float = 0.015, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 2.5 * y - 4.5)))
    return y, p


@pytest.mark.unit
def test_rare_label_metrics_from_the_summary_match_the_rows():
    y, p = _rows()
    got = rare_label_metrics(ScoreSummary.of(y, p))
    assert got["average_precision"] == pytest.approx(average_precision_score(y, p), abs=0.005)
    fpr, tpr, _ = roc_curve(y, p)
    for rate in (0.01, 0.05):
        assert got["recall_at_fpr"][f"{rate:g}"] == pytest.approx(np.interp(rate, fpr, tpr),
                                                                  abs=0.01)
        riskiest = np.argsort(-p)[:int(rate * len(p))]
        assert got["caught_in_riskiest"][f"{rate:g}"] == pytest.approx(
            y[riskiest].sum() / y.sum(), abs=0.01)
    assert got["positive_rate"] == pytest.approx(y.mean())
    # a useless ranking: precision at the base rate, recall as much as the share flagged
    noise = rare_label_metrics(ScoreSummary.of(y, np.random.default_rng(1).random(len(y))))
    assert noise["average_precision"] == pytest.approx(y.mean(), abs=0.005)
    assert noise["caught_in_riskiest"]["0.05"] == pytest.approx(0.05, abs=0.02)


@pytest.mark.unit
def test_only_a_label_under_five_percent_gets_them():
    rare, common = _rows(rate=0.015), _rows(rate=0.2)
    for (y, p), expected in ((rare, True), (common, False)):
        summary = ScoreSummary.of(y, p)
        metrics = report_metrics({"train": summary, "val": summary, "test": summary})
        assert ("rare_label" in metrics["test"]) is expected


@pytest.mark.unit
def test_a_fraud_run_reports_them(tmp_path):
    results = run_experiment(["federation=centralized", "data.label=fraud",
                              "data.n_customers=10000", "train.epochs=3"], tmp_path)
    rare = results["metrics"]["test"]["rare_label"]
    assert rare["positive_rate"] < 0.05
    assert rare["average_precision"] > 2 * rare["positive_rate"]  # better than chance
    report = (tmp_path / "report.md").read_text()
    assert "## Rare label: `fraud` as fraud teams measure it" in report
