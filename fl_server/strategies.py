"""Flower's own strategies, chosen by name; central DP wraps one (never a copy)."""

from __future__ import annotations

from typing import Any, cast

from flwr.serverapp import (
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from federation.protocol import WEIGHT
from federation.settings import FederationSettings, StrategyName
from privacy.accounting import default_delta, noise_multiplier_for
from privacy.settings import PrivacyMechanism, PrivacySettings


def central_delta(privacy: PrivacySettings, n_clients: int) -> float:
    """Client-level delta: the configured one, or below 1/(number of clients)."""
    return privacy.delta if privacy.delta is not None else default_delta(n_clients)


def central_noise(privacy: PrivacySettings, rounds: int, n_clients: int) -> float:
    """Noise multiplier for ``rounds`` releases with every client in each (no amplification)."""
    return noise_multiplier_for(privacy.target_epsilon, central_delta(privacy, n_clients), 1.0,
                                rounds)


def build_strategy(federation: FederationSettings, privacy: PrivacySettings,
                   n_clients: int) -> Strategy:
    """Every client trains and evaluates every round; replies are weighted by ``weight``."""
    common: dict[str, Any] = {
        "fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": n_clients,
        "min_evaluate_nodes": n_clients, "min_available_nodes": n_clients,
        "weighted_by_key": WEIGHT}
    name = federation.strategy
    strategy: Strategy
    if name is StrategyName.fedavg:
        strategy = FedAvg(**common)
    elif name is StrategyName.fedprox:
        strategy = FedProx(**common, proximal_mu=federation.proximal_mu)
    elif name is StrategyName.fedadam:
        strategy = FedAdam(**common, eta=federation.server_lr, eta_l=federation.server_lr)
    elif name is StrategyName.fedmedian:
        strategy = FedMedian(**common)
    elif name is StrategyName.fedtrimmedavg:
        strategy = FedTrimmedAvg(**common, beta=federation.trim_beta)
    else:
        strategy = Krum(**common, num_malicious_nodes=federation.krum_malicious)
    if privacy.mechanism is not PrivacyMechanism.central:
        return strategy
    accountant = RdpAccountant(PrivacyConfig(
        target_delta=central_delta(privacy, n_clients), population_size=n_clients,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION, max_epsilon=privacy.cap() * 1.001))
    return DifferentialPrivacyServerSideFixedClipping(
        strategy, central_noise(privacy, federation.rounds, n_clients), privacy.clipping_norm,
        n_clients, accountant=accountant)


STATEFUL_ATTRIBUTES = ("current_arrays", "m_t", "v_t")


def strategy_state(strategy: Strategy) -> dict[str, object]:
    """Collect the parts of a strategy that change from round to round (for checkpoints)."""
    state: dict[str, object] = {}
    inner = getattr(strategy, "strategy", None)
    if inner is not None:
        state["inner"] = strategy_state(inner)
    for name in STATEFUL_ATTRIBUTES:
        if hasattr(strategy, name):
            state[name] = getattr(strategy, name)
    accountant = getattr(strategy, "accountant", None)
    if accountant is not None:
        state["accountant"] = accountant.state_dict()
    return state


def load_strategy_state(strategy: Strategy, state: dict[str, object]) -> None:
    """Restore what :func:`strategy_state` saved."""
    wrapper: Any = strategy  # the DP wrapper holds the inner strategy and the accountant
    if "inner" in state:
        load_strategy_state(wrapper.strategy, cast(dict[str, object], state["inner"]))
    for name in STATEFUL_ATTRIBUTES:
        if name in state:
            setattr(strategy, name, state[name])
    if "accountant" in state:
        wrapper.accountant.load_state_dict(state["accountant"])
