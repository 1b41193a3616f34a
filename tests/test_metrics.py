import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from federation.protocol import auc_of_scores
from models.metrics import (
    ScoreSummary,
    expected_calibration_error,
    ks_statistic,
    population_stability_index,
    score_metrics,
    summary_stability_index,
)

pytestmark = pytest.mark.unit

Y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9])


def test_ks_worked_by_hand():
    # thresholds from the top: after 0.35 all but one bad seen (3/4 bads after 0.6 ... )
    # goods CDF vs bads CDF: at score <= 0.3 goods 3/4, bads 0 -> gap 0.75
    assert ks_statistic(Y, P) == pytest.approx(0.75)


def test_ece_worked_by_hand():
    # bins of width 0.1: [0.1]:0 [0.2]:0 [0.3,0.35]:(0,1) [0.4]:0 [0.6]:1 [0.7]:1 [0.9]:1
    gaps = [abs(0.1 - 0), abs(0.2 - 0), abs(0.325 - 0.5) * 2, abs(0.4 - 0), abs(0.6 - 1),
            abs(0.7 - 1), abs(0.9 - 1)]
    assert expected_calibration_error(Y, P) == pytest.approx(sum(gaps) / 8)


def test_psi_worked_by_hand():
    expected = np.array([0.1, 0.2, 0.3, 0.4])
    actual = np.array([0.1, 0.1, 0.1, 0.4])
    # two bins split at the median 0.25: expected 1/2, 1/2; actual 3/4, 1/4
    psi = (0.75 - 0.5) * np.log(0.75 / 0.5) + (0.25 - 0.5) * np.log(0.25 / 0.5)
    assert population_stability_index(expected, actual, bins=2) == pytest.approx(psi)


def test_score_metrics_agree_with_sklearn_and_each_other():
    m = score_metrics(Y, P)
    assert m["auc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["gini"] == pytest.approx(2 * m["auc"] - 1)
    assert m["brier"] == pytest.approx(np.mean((P - Y) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(Y * np.log(P) + (1 - Y) * np.log(1 - P)))
    assert set(m) == {"auc", "ks", "gini", "brier", "log_loss", "ece"}


def test_a_nodes_auc_is_sklearns_roc_auc_ties_included():
    rng = np.random.default_rng(0)
    for n, levels in ((50, 5), (2_000, 40), (10_000, 10_000)):
        y = (rng.random(n) < 0.3).astype(int)
        p = np.round(rng.random(n) * 0.6 + 0.4 * y, 4) if levels > 40 else (
            rng.integers(0, levels, n) + y) / (levels + 1)
        assert auc_of_scores(p.astype(np.float32), y) == pytest.approx(
            roc_auc_score(y, p.astype(np.float32)), abs=1e-12)
    assert auc_of_scores(P, Y) == pytest.approx(roc_auc_score(Y, P))


def test_a_summary_gives_the_row_level_metrics():
    # Prepare: 20,000 rows whose scores carry signal, cut in three disjoint parts
    rng = np.random.default_rng(1)
    y = (rng.random(20_000) < 0.2).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=20_000) + 1.2 * y - 1.5)))
    parts = np.array_split(np.arange(20_000), 3)
    # Execute: summarise each part, then add the summaries up
    pooled = sum((ScoreSummary.of(y[r], p[r]) for r in parts[1:]),
                 ScoreSummary.of(y[parts[0]], p[parts[0]]))
    m, exact = pooled.metrics(), score_metrics(y, p)
    # Assert: exact sums; AUC, KS and ECE within the bins' resolution (pooled summaries carry
    # no node's own figures); one node's summary carries its exact AUC, KS and ECE
    assert pooled.rows == 20_000 and pooled.defaults == int(y.sum())
    assert pooled.exact is None
    assert m["auc"] == pytest.approx(exact["auc"], abs=1e-4)
    assert m["ks"] == pytest.approx(exact["ks"], abs=2e-3)
    assert m["ece"] == pytest.approx(exact["ece"], abs=1e-3)
    for key in ("brier", "log_loss"):
        assert m[key] == pytest.approx(exact[key], rel=1e-9)
    whole = ScoreSummary.of(y, p).metrics()
    for key in exact:
        assert whole[key] == pytest.approx(exact[key], rel=1e-9)
    assert summary_stability_index(ScoreSummary.of(y, p), ScoreSummary.of(y, p ** 2)) == (
        pytest.approx(population_stability_index(p, p ** 2), rel=0.05))


def test_a_summary_survives_its_wire_form_and_refuses_a_malformed_one():
    s = ScoreSummary.of(Y, P)
    back = ScoreSummary.from_record(s.to_record("test."), "test.")
    assert back.metrics() == s.metrics()
    bad = s.to_record("test.") | {"test.positives": [1, 2, 3]}
    with pytest.raises(ValueError, match="test."):
        ScoreSummary.from_record(bad, "test.")


def test_summary_deciles_are_the_row_level_calibration_curve():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 12, 5_000)
    y = (rng.random(5_000) < p).astype(int)
    mean_score, observed = ScoreSummary.of(y, p).deciles()
    order = np.argsort(p)
    groups = np.array_split(order, 10)
    # deciles cut at bin edges (cells about 9% apart in odds): within a few thousandths
    assert mean_score == pytest.approx([p[g].mean() for g in groups], abs=5e-3)
    assert observed == pytest.approx([y[g].mean() for g in groups], abs=0.02)
