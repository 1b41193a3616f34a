import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from federation.protocol import auc_of_scores
from models.metrics import (
    expected_calibration_error,
    ks_statistic,
    population_stability_index,
    score_metrics,
)

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
