"""Strategies and their checkpointed state, in-process (no Ray, no Flower run)."""

from __future__ import annotations

import pytest

from credit_data.errors import FederationError
from federation.settings import FederationSettings, Mode, StrategyName
from fl_server.strategies import build_strategy, load_strategy_state, strategy_state
from privacy.settings import PrivacySettings

pytestmark = pytest.mark.unit


def _strategy(name: StrategyName):
    return build_strategy(FederationSettings(mode=Mode.horizontal, strategy=name),
                          PrivacySettings(), 5)


def test_a_strategys_round_state_survives_a_checkpoint():
    # Prepare: FedAdam with moments set, as after a round
    adam = _strategy(StrategyName.fedadam)
    adam.m_t, adam.v_t = [1.0], [2.0]
    saved = strategy_state(adam)
    # Execute
    again = _strategy(StrategyName.fedadam)
    load_strategy_state(again, saved)
    # Assert
    assert (again.m_t, again.v_t) == ([1.0], [2.0])


def test_resuming_a_strategy_whose_state_is_missing_raises_instead_of_losing_it():
    saved = strategy_state(_strategy(StrategyName.fedavg))  # no moments
    with pytest.raises(FederationError,
                       match=r"FedAdam\.(current_arrays|m_t) is missing from the checkpoint"):
        load_strategy_state(_strategy(StrategyName.fedadam), saved)
    with pytest.raises(FederationError, match=r"is in the checkpoint but not in this strategy"):
        load_strategy_state(_strategy(StrategyName.fedavg),
                            strategy_state(_strategy(StrategyName.fedadam)))
