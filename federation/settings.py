"""Typed, frozen federation settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum

from credit_data.errors import ConfigError


class Mode(StrEnum):
    """How the parties' data meet. ``centralized`` pools raw features: the upper bound."""

    centralized = "centralized"
    local = "local"
    horizontal = "horizontal"
    vertical = "vertical"


MODE_ROLES = {
    Mode.centralized: "upper bound: pools every party's raw features, which federation never does",
    Mode.local: "baseline: the lender's own columns alone",
    Mode.horizontal: "federated: several lenders train one model, each on its own applicants",
    Mode.vertical: "federated: lender, bureau and social platform train one split model on the "
                   "customers they share, rows and labels kept at home",
}


class StrategyName(StrEnum):
    """Flower strategies, used as Flower ships them."""

    fedavg = "fedavg"
    fedprox = "fedprox"
    fedadam = "fedadam"
    fedmedian = "fedmedian"
    fedtrimmedavg = "fedtrimmedavg"
    krum = "krum"


class Fault(StrEnum):
    """Faults a simulated client can be told to show, to test the server's handling."""

    crash = "crash"
    nonfinite = "nonfinite"
    shape = "shape"
    slow = "slow"
    signflip = "signflip"


@dataclass(frozen=True)
class FederationSettings:
    """Which parties take part and how they train together.

    ``rounds`` x ``local_epochs`` is the number of passes over each client's rows. A round
    waits ``round_timeout`` seconds for replies; with fewer than ``min_clients`` usable replies the
    run stops. Nodes have ``connect_timeout`` seconds to connect and send their statistics.
    In vertical mode training runs ``train.epochs`` epochs with early stopping, as the
    centralized model does; each epoch takes ``exchanges_per_epoch`` exchanges (two message
    rounds each), and ``local_epochs`` is the number of passes each side makes over a chunk.
    ``local_steps`` (vertical, FedBCD's Q) is the number of optimizer steps each side takes on
    every batch of a chunk against the other side's values of that exchange, which stay fixed
    (the lender's against the parties' embeddings, a party's against the lender's gradients).
    ``faults`` maps a party id to a fault (simulation only). ``stop_after`` ends the
    run after that round, as an interruption would; ``resume=<run dir>`` continues it.
    ``psi_cache`` is where simulated parties keep their blinded ID sets between runs (a
    deployed node keeps its own under its state directory); null builds them every time.
    ``key_dir`` is where each simulated party keeps its master key (``<key_dir>/<party>``),
    outside every run directory: a run's noise key rests in the run only sealed under it (a
    deployed node keeps its master key in its state directory).
    """

    mode: Mode = Mode.centralized
    parties: tuple[str, ...] = ("lender", "bureau", "social")
    rounds: int = 10
    local_epochs: int = 1
    strategy: StrategyName = StrategyName.fedavg
    min_clients: int = 2
    round_timeout: float = 300.0
    connect_timeout: float = 180.0
    proximal_mu: float = 0.01
    trim_beta: float = 0.2
    krum_malicious: int = 1
    server_lr: float = 0.01
    faults: dict[str, Fault] = field(default_factory=dict)
    stop_after: int | None = None
    exchanges_per_epoch: int = 2
    local_steps: int = 2
    psi_cache: str | None = None
    key_dir: str | None = field(default_factory=lambda: default_key_dir())


def default_key_dir() -> str:
    """Return where simulated parties keep their master keys by default (as the config does)."""
    return os.environ.get("CREDIT_FL_KEY_DIR", "outputs/.node-keys")


def check_federation(settings: FederationSettings, n_clients: int) -> None:
    """Raise a ConfigError naming the key of any out-of-range value."""
    checks = [("rounds", settings.rounds >= 1), ("local_epochs", settings.local_epochs >= 1),
              ("min_clients", 1 <= settings.min_clients <= n_clients),
              ("round_timeout", settings.round_timeout > 0),
              ("connect_timeout", settings.connect_timeout > 0),
              ("proximal_mu", settings.proximal_mu >= 0),
              ("trim_beta", 0 <= settings.trim_beta < 0.5),
              ("krum_malicious", 0 <= settings.krum_malicious < n_clients),
              ("server_lr", settings.server_lr > 0),
              ("stop_after", settings.stop_after is None
               or 1 <= settings.stop_after < settings.rounds),
              ("exchanges_per_epoch", settings.exchanges_per_epoch >= 1),
              ("local_steps", settings.local_steps >= 1)]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"federation.{key} is out of range: {getattr(settings, key)}"
                              f" (with {n_clients} clients)")


class ListMode(StrEnum):
    """What a blacklist holder answers: which applicants are listed (``lookup``).

    ``cardinality`` (only how many) is withdrawn and refused (:data:`CARDINALITY_WITHDRAWN`);
    the name stays so that a config asking for it is told why.
    """

    lookup = "lookup"
    cardinality = "cardinality"


class HitRule(StrEnum):
    """What scoring does with an applicant on a holder's list (``blacklists.on_hit``)."""

    feature = "feature"  # the hit is one of the model's inputs, nothing more
    review = "review"  # the applicant goes to manual review, whatever the score
    decline = "decline"  # the applicant is declined, whatever the score


@dataclass(frozen=True)
class BlacklistSettings:
    """Institutions that each hold a list of confirmed fraud, looked up by private set intersection.

    ``holders`` names them (each is a node of its own, holding its list only). ``mode``: a
    ``lookup`` tells the lender which of its applicants are listed (and they become its
    features ``on_list_<holder>`` and ``blacklist_hits``); ``cardinality`` (only how many) is
    withdrawn and refused. ``max_queries``: the IDs one lender may have answered by a node per
    UTC day and calendar month (:mod:`federation.query_ledger`): the cap in simulation; a
    deployed node's own caps are its flags, which this may lower only. ``on_hit``: the rule
    scoring applies to a listed applicant.
    """

    holders: tuple[str, ...] = ()
    mode: ListMode = ListMode.lookup
    max_queries: int = 1_000_000
    on_hit: HitRule = HitRule.feature


CARDINALITY_WITHDRAWN = (
    "cardinality lookups are withdrawn: the lender computes the count itself from the PSI "
    "answer, so a holder can neither add noise to it nor see it, and the exact count of a "
    "1-ID request, or the difference of two requests that differ in one ID, says whether that "
    "ID is listed; use lookup (the lender learns which of its applicants are listed, as a "
    "blacklist is meant to tell it)")
"""Why ``blacklists.mode=cardinality`` (a holder's ``--list-mode cardinality``) is refused."""


def check_blacklists(settings: BlacklistSettings, parties: tuple[str, ...]) -> None:
    """Refuse a holder named twice, a bad name, one named like a party, a bad ``max_queries``.

    ``mode=cardinality`` is refused too (:data:`CARDINALITY_WITHDRAWN`).
    """
    if settings.mode is ListMode.cardinality:
        raise ConfigError(f"blacklists.mode=cardinality: {CARDINALITY_WITHDRAWN}")
    seen: set[str] = set()
    for holder in settings.holders:
        if holder in seen:
            raise ConfigError(f"blacklists.holders names '{holder}' twice")
        seen.add(holder)
        if not holder.replace("_", "").replace("-", "").isalnum() or not holder.isascii():
            raise ConfigError(f"blacklists.holders: '{holder}' is not a valid holder name "
                              "(letters, digits, '_' and '-')")
        if holder in parties:
            raise ConfigError(f"blacklists.holders: '{holder}' is also a party of "
                              "federation.parties; a holder holds its list only")
    if settings.max_queries < 1:
        raise ConfigError(f"blacklists.max_queries must be at least 1, got {settings.max_queries}")
