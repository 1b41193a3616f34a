"""The accounting math against Opacus' own accountant."""

import random

import pytest
from opacus.accountants import RDPAccountant

from privacy.accounting import epsilon_of, merge_history

pytestmark = pytest.mark.unit


def test_epsilon_of_is_opacus_rdp_accountant_to_the_bit():
    rng = random.Random(0)
    for _ in range(12):
        history = [(rng.uniform(0.5, 3.0), rng.uniform(0.001, 0.1), rng.randint(1, 5_000))
                   for _ in range(rng.randint(1, 3))]
        delta = 10 ** rng.uniform(-7, -3)
        accountant = RDPAccountant()
        accountant.history = merge_history(history)
        assert epsilon_of(history, delta) == accountant.get_epsilon(delta)


def test_epsilon_grows_with_every_round_of_the_same_noise():
    spent = [epsilon_of([(1.2, 0.036, 28 * rounds)], 1e-5) for rounds in range(1, 21)]
    assert all(a < b for a, b in zip(spent, spent[1:], strict=False))
