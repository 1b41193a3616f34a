"""RMIA (Zarifzadeh et al. 2024): the score against a pairwise count written out here, its
order, the offline correction, and an attack that finds members a loss threshold misses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from credit_data.errors import ConfigError
from credit_data.settings import DataSettings, Source
from credit_fl.checks import check_settings
from federation.run_settings import RunSettings
from federation.settings import FederationSettings, Mode
from privacy.rmia import (
    OFFLINE_A_GRID,
    bootstrap_auc,
    label_probability,
    relative_ratio,
    rmia_figures,
    rmia_scores,
    tune_offline_a,
)
from privacy.settings import AuditSettings

pytestmark = pytest.mark.unit


def _pairwise_rmia(tx, rx, tz, rz, a, gamma):
    """The paper's score, one pair at a time: share of z with LR(x, z) > gamma."""
    out = []
    for i in range(len(tx)):
        px = (1 + a) / 2 * sum(rx[i]) / len(rx[i]) + (1 - a) / 2
        count = 0
        for j in range(len(tz)):
            pz = (1 + a) / 2 * sum(rz[j]) / len(rz[j]) + (1 - a) / 2
            if (tx[i] / px) / (tz[j] / pz) > gamma:
                count += 1
        out.append(count / len(tz))
    return np.array(out)


def test_the_score_is_the_share_of_population_records_it_beats() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    tx, tz = rng.uniform(0.05, 1, 40), rng.uniform(0.05, 1, 60)
    rx, rz = rng.uniform(0.05, 1, (40, 3)), rng.uniform(0.05, 1, (60, 3))
    for a, gamma in ((0.3, 1.0), (1.0, 2.0), (0.0, 0.5)):
        # Execute
        scores = rmia_scores(tx, rx, tz, rz, offline_a=a, gamma=gamma)
        # Assert
        np.testing.assert_allclose(scores, _pairwise_rmia(tx, rx, tz, rz, a, gamma))
        # the score never reverses the ratio's order: thresholds on it are thresholds on the ratio
        ratio = relative_ratio(tx, rx, a)
        order = np.argsort(ratio)
        assert np.all(np.diff(scores[order]) >= 0)


def _world(n: int, rng: np.random.Generator, boost: float):
    """Records of varied difficulty; the target fits its members ``boost`` logits better."""
    difficulty = rng.normal(0.0, 2.0, n)  # the true label's logit under a typical model
    member = rng.random(n) < 0.5
    target = expit(difficulty + rng.normal(0, 0.3, n) + boost * member)
    references = expit(difficulty[:, None] + rng.normal(0, 0.3, (n, 4)))
    return member, target, references


def test_reference_models_find_members_a_loss_threshold_misses() -> None:
    # Prepare: membership moves the likelihood far less than the records' difficulty does
    member, target, references = _world(10_000, np.random.default_rng(2), boost=1.0)
    # Execute
    rmia = rmia_figures(relative_ratio(target[member], references[member], 1.0),
                        relative_ratio(target[~member], references[~member], 1.0),
                        confidence=0.95, resamples=30, seed=0)
    loss = rmia_figures(target[member], target[~member], confidence=0.95, resamples=30, seed=0)
    # Assert: the loss attack's AUC stays near chance; RMIA's, the ratio's, does not
    assert loss["attack_auc"] < 0.66 < 0.85 < rmia["attack_auc"]
    low_rmia, low_loss = rmia["tpr_at_fpr"]["0.01"], loss["tpr_at_fpr"]["0.01"]
    assert low_rmia["tpr_interval"][0] > 5 * low_loss["tpr_interval"][1]
    assert rmia["attack_auc_interval"][0] < rmia["attack_auc"] < rmia["attack_auc_interval"][1]


def test_without_membership_signal_the_attack_is_at_chance() -> None:
    # Prepare
    member, target, references = _world(10_000, np.random.default_rng(3), boost=0.0)
    # Execute
    out = rmia_figures(relative_ratio(target[member], references[member], 1.0),
                       relative_ratio(target[~member], references[~member], 1.0),
                       confidence=0.95, resamples=60, seed=0)
    # Assert: the interval holds 0.5, the TPR at 1% FPR holds 1%
    low, high = out["attack_auc_interval"]
    assert low < 0.5 < high and high - low < 0.03
    tpr = out["tpr_at_fpr"]["0.01"]["tpr_interval"]
    assert tpr[0] < 0.01 < tpr[1]


def test_the_offline_coefficient_is_the_one_that_attacks_the_paired_model_best() -> None:
    # Prepare
    rng = np.random.default_rng(4)
    member, target, references = _world(4_000, rng, boost=1.0)
    # Execute
    a = tune_offline_a(target[member], target[~member], references[member],
                       references[~member])
    # Assert: its AUC is the grid's best, recomputed by ranks
    def auc(value: float) -> float:
        m = relative_ratio(target[member], references[member], value)
        o = relative_ratio(target[~member], references[~member], value)
        return float((m[:, None] > o[None, :]).mean())

    assert a in OFFLINE_A_GRID
    assert auc(a) >= max(auc(v) for v in OFFLINE_A_GRID) - 1e-9


def test_the_auc_interval_is_a_bootstrap_of_the_rows() -> None:
    # Prepare
    rng = np.random.default_rng(5)
    # Execute
    auc, (low, high) = bootstrap_auc(rng.normal(0.5, 1, 400), rng.normal(0, 1, 400),
                                     confidence=0.95, resamples=150, rng=rng)
    # Assert: the Hanley-McNeil half-width at AUC 0.64 on 400 + 400 rows is about 0.038
    assert low < auc < high
    assert 0.05 < high - low < 0.11
    assert label_probability(np.array([0.0]), np.array([1.0]))[0] > 0  # floored, never 0


@pytest.mark.parametrize(("change", "message"), [
    ({"audit": AuditSettings(reference_models=1)}, "at least 2"),
    ({"audit": AuditSettings(reference_epochs=-1)}, "0 \\(as the run\\)"),
    ({"data": DataSettings(source=Source.files), "audit": AuditSettings(reference_models=4)},
     "synthetic"),
    ({"federation": FederationSettings(mode=Mode.horizontal),
      "audit": AuditSettings(reference_models=4)}, "horizontal")])
def test_what_rmia_cannot_run_is_refused_before_training(change: dict, message: str) -> None:
    # Execute / Assert
    with pytest.raises(ConfigError, match=f"audit.reference_.*{message}"):
        check_settings(RunSettings(**change))
