"""Flower's own strategies, chosen by name; central DP wraps one (never a copy)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, cast

from flwr.app import ArrayRecord
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

from credit_data.errors import FederationError
from federation.protocol import WEIGHT
from federation.settings import FederationSettings, StrategyName
from privacy.accounting import epsilon_of, noise_multiplier_after, party_delta
from privacy.settings import PrivacyMechanism, PrivacySettings


@dataclass(frozen=True)
class CentralPlan:
    """Central DP's noise, calibrated so that one RECORD's epsilon meets the target.

    The server clips each client's update to ``clipping_norm`` C and adds Gaussian noise of
    ``noise_multiplier * C`` to the sum. Both levels are accounted under add/remove
    (:data:`~privacy.accounting.NEIGHBOURING`, :func:`~privacy.accounting.update_sensitivity`):
    adding or removing a client moves the sum by at most C (client-level epsilon); adding or
    removing one record moves its lender's clipped update anywhere within the ball of radius
    C, so by up to 2C, the ball's diameter, not a replacement's doubling (record-level epsilon:
    noise ``noise_multiplier / 2`` per unit of sensitivity). ``privacy.target_epsilon`` is the
    record-level budget, composed after the lenders' noisy summaries (``prior``: the smallest
    summary noise). ``delta`` follows DP-SGD's policy: below 1/n of the records it protects
    (all lenders' training rows).
    """

    noise_multiplier: float
    delta: float
    selection_delta: float
    prior: tuple[tuple[float, float, int], ...]

    def to_json(self) -> str:
        """Return the plan as the checkpoint keeps it (a resume must find the same plan)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def spend(self, releases: int) -> tuple[float, float]:
        """(client-level, record-level) epsilon after ``releases`` noisy aggregates."""
        if releases == 0:
            return 0.0, epsilon_of(list(self.prior), delta=self.delta)
        client = epsilon_of([(self.noise_multiplier, 1.0, releases)], delta=self.delta)
        record = epsilon_of([*self.prior, (self.noise_multiplier / 2, 1.0, releases)],
                            delta=self.delta)
        return client, record


def central_plan(privacy: PrivacySettings, rounds: int, sent: list[dict[str, Any]]
                 ) -> CentralPlan:
    """Plan central DP from the lenders' summaries (sizes and summary noise)."""
    rows = sum(int(m["rows"]) for m in sent)
    delta = party_delta(delta=privacy.delta, n_rows=rows)
    multipliers = [float(m["summary_noise_multiplier"]) for m in sent
                   if m.get("summary_noise_multiplier")]
    prior = ((min(multipliers), 1.0, 1),) if multipliers else ()
    selection = max((float(m.get("selection_delta", 0.0)) for m in sent), default=0.0)
    half = noise_multiplier_after(target_epsilon=privacy.target_epsilon, delta=delta,
                                  sample_rate=1.0, steps=rounds, prior=prior)
    return CentralPlan(2 * half, delta, selection, prior)


def build_strategy(federation: FederationSettings, privacy: PrivacySettings,
                   n_clients: int, central: CentralPlan | None = None) -> Strategy:
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
    if central is None:
        raise ValueError("central DP needs its plan (central_plan)")
    # Flower's accountant counts the releases (client-level); the ledger computes both levels
    accountant = RdpAccountant(PrivacyConfig(
        target_delta=central.delta, population_size=n_clients,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    return DifferentialPrivacyServerSideFixedClipping(
        strategy, central.noise_multiplier, privacy.clipping_norm, n_clients,
        accountant=accountant)


STATEFUL_ATTRIBUTES = ("current_arrays", "m_t", "v_t")
ARRAY_RECORD = "array_record"
"""Marks a Flower ArrayRecord kept in a checkpoint as its tensors (a checkpoint holds no
Flower class: :mod:`federation.safe_files`)."""


def _plain(value: object) -> object:
    if isinstance(value, ArrayRecord):  # the central DP wrapper's current_arrays
        return {ARRAY_RECORD: value.to_torch_state_dict()}
    return value


def _restored(value: object) -> object:
    if isinstance(value, dict) and set(value) == {ARRAY_RECORD}:
        return ArrayRecord(value[ARRAY_RECORD])
    return value


def strategy_state(strategy: Strategy) -> dict[str, object]:
    """Collect the parts of a strategy that change from round to round (for checkpoints)."""
    state: dict[str, object] = {}
    inner = getattr(strategy, "strategy", None)
    if inner is not None:
        state["inner"] = strategy_state(inner)
    for name in STATEFUL_ATTRIBUTES:
        if hasattr(strategy, name):
            state[name] = _plain(getattr(strategy, name))
    accountant = getattr(strategy, "accountant", None)
    if accountant is not None:
        state["accountant"] = accountant.state_dict()
    return state


def load_strategy_state(strategy: Strategy, state: dict[str, object]) -> None:
    """Restore what :func:`strategy_state` saved; raise where the two do not match.

    A strategy that has a round-to-round attribute the checkpoint lacks (or the other way
    round, or a wrapper on one side only) would go on with a part of its state lost: a resume
    refuses that instead, naming the attribute.
    """
    wrapper: Any = strategy  # the DP wrapper holds the inner strategy and the accountant
    inner = getattr(strategy, "strategy", None)
    if (inner is None) != ("inner" not in state):
        raise FederationError(f"resume: the checkpoint's strategy "
                              f"{'wraps' if 'inner' in state else 'does not wrap'} another, "
                              f"this run's {type(strategy).__name__} "
                              f"{'does not' if inner is None else 'does'}")
    if inner is not None:
        load_strategy_state(inner, cast(dict[str, object], state["inner"]))
    for name in STATEFUL_ATTRIBUTES:
        if hasattr(strategy, name) != (name in state):
            where = ("is missing from the checkpoint" if hasattr(strategy, name)
                     else "is in the checkpoint but not in this strategy")
            raise FederationError(f"resume: {type(strategy).__name__}.{name} {where}")
        if name in state:
            setattr(strategy, name, _restored(state[name]))
    accountant = getattr(strategy, "accountant", None)
    if (accountant is None) != ("accountant" not in state):
        raise FederationError(f"resume: the checkpoint's privacy accountant and this run's "
                              f"{type(strategy).__name__} do not match")
    if accountant is not None:
        wrapper.accountant.load_state_dict(state["accountant"])
