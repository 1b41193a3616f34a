"""The one-run canary audit (Steinke, Nasr and Jagielski 2023) and the proof that it bites.

Each test trains the canary twin (:mod:`models.canary_twin`) by the run's own DP-SGD code path
on 2,000 rows for 10 epochs (160 Poisson steps at rate 1/16), a few seconds each. A broken
mechanism is broken where the run's code would be: ``models.local_training.make_private``
(the noise multiplier handed to Opacus) and ``models.split_training.randomized_response`` (the
lender's label flips), while the plan, the run's ledger, still reports the original epsilon.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import models.local_training as local_training
import models.split_training as split_training
from credit_data.errors import ConfigError
from models.canary_twin import TwinPlan, canary_scores, draw_canaries, train_twin
from models.local_training import poisson_sample_rate
from models.networks import MLP
from privacy.accounting import flip_probability, noise_multiplier_for
from privacy.one_run_canaries import audit_guesses, epsilon_lower_bound, max_lower_bound
from privacy.randomness import NoiseSource

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_torch_thread")]

ROWS, COLUMNS, BATCH, EPOCHS, DELTA = 2_000, 12, 128, 10, 1e-5
CANARIES = 500
"""Enough to refute epsilon 1 by a wide margin: every guess right proves up to 4.6 (below); the
broken DP-SGD of these tests gave bounds of 2.0 to 2.6 over 8 runs (1.45 to 2.5 with 300)."""
TOO_FEW = 10
"""With 10 canaries even every guess right proves at most 0.68: epsilon 1 cannot be refuted."""


def _rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, COLUMNS)).astype(np.float32)
    y = (rng.random(ROWS) < 1 / (1 + np.exp(2.5 - 1.5 * x[:, 0]))).astype(np.float32)
    return x, y


def _plan(epsilon: float | None, label_epsilon: float | None = None) -> TwinPlan:
    q = poisson_sample_rate(ROWS, BATCH)
    sigma = (None if epsilon is None
             else noise_multiplier_for(target_epsilon=epsilon, delta=DELTA, sample_rate=q,
                                       steps=EPOCHS * round(1 / q)))
    flip = 0.0 if label_epsilon is None else flip_probability(epsilon=label_epsilon)
    return TwinPlan(epochs=EPOCHS, batch_size=BATCH, lr=1e-3, weight_decay=1e-5,
                    noise_multiplier=sigma, max_grad_norm=1.0, sample_rate=q, delta=DELTA,
                    label_flip=flip)


def _audit(plan: TwinPlan, canaries: int, noise: NoiseSource | None = None
           ) -> tuple[dict, dict | None, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Train the twin; return the membership and label audits, and each one's scores and bits."""
    noise = NoiseSource.fresh() if noise is None else noise
    x, y = _rows()
    drawn = draw_canaries(canaries, label_audit=plan.label_flip > 0, noise=noise)
    twin = train_twin(x, y, drawn, plan, base=MLP(COLUMNS, (64, 32), 0.1), seed=0, noise=noise)
    member, label = canary_scores(twin, drawn)
    members = audit_guesses(member, drawn.member_bits, delta=plan.delta, confidence=0.95)
    labels = (audit_guesses(label, drawn.label_bits, delta=0.0, confidence=0.95)
              if len(drawn.label_bits) else None)
    return members, labels, {"member": (member, drawn.member_bits),
                             "label": (label, drawn.label_bits)}


@pytest.fixture
def noise_divided_by_10(monkeypatch: pytest.MonkeyPatch) -> None:
    """DP-SGD that hands Opacus a tenth of the planned noise; the plan reports the original."""
    honest = local_training.make_private

    def broken(*args, noise_multiplier: float, **kwargs):
        return honest(*args, noise_multiplier=noise_multiplier / 10, **kwargs)

    monkeypatch.setattr(local_training, "make_private", broken)


@pytest.fixture
def flips_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Randomized response that flips nothing, while the plan still reports its epsilon."""
    monkeypatch.setattr(split_training, "randomized_response",
                        lambda y, flip, rng: np.asarray(y, dtype=np.float32).copy())


# --- the theorem, recomputed independently ----------------------------------------------------

def _tails(r: int, eps: float) -> np.ndarray:
    """``t[x] = P[Binomial(r, e^eps / (e^eps + 1)) >= x]`` for x = 0..r+1, from the pmf summed
    term by term (log-gamma coefficients; no scipy)."""
    log_q, log_1q = -math.log1p(math.exp(-eps)), -math.log1p(math.exp(eps))
    log_pmf = np.array([math.lgamma(r + 1) - math.lgamma(j + 1) - math.lgamma(r - j + 1)
                        + j * log_q + (r - j) * log_1q for j in range(r + 1)])
    tails = np.cumsum(np.exp(log_pmf)[::-1])[::-1]
    return np.minimum(np.r_[tails, 0.0], 1.0)


def _paper_bound(m: int, r: int, v: int, delta: float, significance: float) -> float:
    """Steinke, Nasr and Jagielski (2023), Theorem 3.3, inverted by bisection.

    P[W >= v] <= f(v) + 2 m delta max_{i=1..v} (f(v - i) - f(v)) / i, with
    f(x) = P[Binomial(r, e^eps / (e^eps + 1)) >= x]; the bound is the largest epsilon for which
    this is at most the significance.
    """
    def p(eps: float) -> float:
        f = _tails(r, eps)
        extra = max([(f[max(v - i, 0)] - f[v]) / i for i in range(1, v + 1)] or [0.0])
        return float(f[v] + 2 * m * delta * max(extra, 0.0))

    if v == 0 or p(0.0) > significance:
        return 0.0
    low, high = 0.0, 40.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if p(mid) <= significance else (low, mid)
    return low


@pytest.mark.parametrize(("m", "r", "v", "delta"), [
    (1000, 100, 100, 0.0), (1000, 100, 90, 1e-5), (300, 300, 219, 0.0), (300, 60, 58, 1e-5),
    (50, 50, 50, 0.0), (2000, 1000, 700, 1e-6)])
def test_the_bound_is_the_papers_formula(m: int, r: int, v: int, delta: float) -> None:
    # Prepare
    significance = 0.05 / 6
    # Execute
    ours = epsilon_lower_bound(canaries=m, guesses=r, correct=v, delta=delta,
                               significance=significance)
    # Assert
    assert ours == pytest.approx(_paper_bound(m, r, v, delta, significance), abs=1e-6)


def test_a_twin_audit_is_recomputed_from_its_guesses_alone() -> None:
    # Prepare: a DP-SGD twin at epsilon 8 (scores without ties)
    audit, _, data = _audit(_plan(8.0), CANARIES)
    scores, bits = data["member"]
    # Execute: guesses recounted here, bounds from the paper's formula
    order = np.argsort(-scores)
    recomputed = []
    for row in audit["by_guesses"]:
        half = row["guesses"] // 2
        right = int(bits[order[:half]].sum() + (1 - bits[order[len(bits) - half:]]).sum())
        assert right == row["correct"]
        recomputed.append(_paper_bound(len(bits), row["guesses"], right, DELTA,
                                       0.05 / audit["tests"]))
    # Assert
    assert audit["epsilon_lower_bound"] == pytest.approx(max(recomputed), abs=1e-6)
    assert audit["significance"] == pytest.approx(0.05 / 6)


# --- what the audit proves --------------------------------------------------------------------

def test_a_non_private_training_gives_a_bound_clearly_above_zero() -> None:
    # Execute
    audit, _, data = _audit(_plan(None), CANARIES)
    # Assert: every canary that was in moved its offset toward its label, none that was out
    # did (no noise); 500 canaries prove at most 4.6
    scores, bits = data["member"]
    assert (scores[bits == 1] > 0).all() and (scores[bits == 0] == 0).all()
    assert audit["epsilon_lower_bound"] > 3.0


def test_dp_sgd_at_epsilon_1_never_proves_more_than_1_over_seeds() -> None:
    # Prepare
    plan = _plan(1.0)
    assert plan.accounted_epsilon() == pytest.approx(1.0, abs=0.02)
    # Execute: each run draws its coins and noise from the OS
    bounds = [_audit(plan, CANARIES)[0]["epsilon_lower_bound"] for _ in range(3)]
    # Assert
    assert max(bounds) < 1.0


def test_the_audit_catches_dp_sgd_whose_noise_is_secretly_divided_by_10(
        noise_divided_by_10: None) -> None:
    # Prepare
    plan = _plan(1.0)
    # Execute
    audit, _, _ = _audit(plan, CANARIES)
    # Assert: the ledger says epsilon 1; the guesses refute it
    assert plan.accounted_epsilon() == pytest.approx(1.0, abs=0.02)
    assert audit["epsilon_lower_bound"] > plan.accounted_epsilon()


def test_too_few_canaries_cannot_catch_the_broken_dp_sgd(noise_divided_by_10: None) -> None:
    # Prepare: how many canaries it takes, worked out before any training
    assert max_lower_bound(TOO_FEW, delta=DELTA, confidence=0.95) < 1.0
    assert max_lower_bound(CANARIES, delta=DELTA, confidence=0.95) > 4.0
    # Execute
    audit, _, _ = _audit(_plan(1.0), TOO_FEW)
    # Assert
    assert audit["epsilon_lower_bound"] < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_honest_label_dp_stays_below_its_epsilon(seed: int) -> None:
    # Prepare: the flips follow a reproducible key, so each seed's outcome is fixed
    plan = _plan(None, label_epsilon=1.0)
    # Execute
    _, labels, _ = _audit(plan, CANARIES, NoiseSource.reproducible(seed, "lender"))
    # Assert
    assert labels is not None
    assert labels["epsilon_lower_bound"] < 1.0


def test_the_audit_catches_label_dp_whose_flips_are_switched_off(
        flips_switched_off: None) -> None:
    # Execute
    _, labels, _ = _audit(_plan(None, label_epsilon=1.0), CANARIES)
    # Assert: reported epsilon 1, refuted
    assert labels is not None
    assert labels["epsilon_lower_bound"] > 1.0


def test_too_few_label_canaries_cannot_catch_the_flips_switched_off(
        flips_switched_off: None) -> None:
    # Execute
    _, labels, data = _audit(_plan(None, label_epsilon=1.0), TOO_FEW)
    # Assert: the twin gives every label away (the sign of its offset), and still too few
    scores, bits = data["label"]
    assert np.array_equal(scores > 0, bits == 1)
    assert labels is not None
    assert labels["epsilon_lower_bound"] < 1.0


def test_canary_coins_come_from_the_noise_source() -> None:
    # Prepare
    a, b = NoiseSource.reproducible(0, "lender"), NoiseSource.fresh()
    # Execute
    first, again = (draw_canaries(200, label_audit=True, noise=a) for _ in range(2))
    other = draw_canaries(200, label_audit=True, noise=b)
    # Assert: the same key draws the same coins; another key other coins
    assert np.array_equal(first.member_bits, again.member_bits)
    assert not np.array_equal(first.member_bits, other.member_bits)
    assert 60 < first.member_bits.sum() < 140


def test_the_canary_count_is_checked() -> None:
    # Prepare
    from privacy.settings import AuditSettings, check_audit

    # Execute / Assert
    with pytest.raises(ConfigError, match="audit.canaries"):
        check_audit(AuditSettings(canaries=5))
    check_audit(AuditSettings(canaries=0))
    check_audit(dataclasses.replace(AuditSettings(), canaries=10))
