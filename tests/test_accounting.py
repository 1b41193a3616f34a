"""The accounting math against Opacus' own accountant."""

import random

import pytest
from opacus.accountants import RDPAccountant

from privacy.accounting import ORDERS, epsilon_of, merge_history

pytestmark = pytest.mark.unit


def test_epsilon_of_is_opacus_rdp_accountant_to_the_bit():
    rng = random.Random(0)
    for _ in range(12):
        history = [(rng.uniform(0.5, 3.0), rng.uniform(0.001, 0.1), rng.randint(1, 5_000))
                   for _ in range(rng.randint(1, 3))]
        delta = 10 ** rng.uniform(-7, -3)
        accountant = RDPAccountant()
        accountant.history = merge_history(history)
        assert epsilon_of(history, delta=delta) == accountant.get_epsilon(
            delta, alphas=list(ORDERS))


def test_epsilon_grows_with_every_round_of_the_same_noise():
    spent = [epsilon_of([(1.2, 0.036, 28 * rounds)], delta=1e-5) for rounds in range(1, 21)]
    assert all(a < b for a, b in zip(spent, spent[1:], strict=False))


def test_small_budgets_are_reachable_for_one_off_releases():
    # with Opacus' default orders (up to 63) a single release cannot go below about
    # log(1/delta)/62; the noisy summary of a run at epsilon 0.5 (a share of 0.05) needs more
    from privacy.accounting import noise_multiplier_for

    for target in (0.05, 0.1):
        sigma = noise_multiplier_for(target_epsilon=target, delta=1e-4, sample_rate=1.0, steps=1)
        assert 0.9 * target < epsilon_of([(sigma, 1.0, 1)], delta=1e-4) <= target
