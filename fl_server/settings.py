"""The server's one settings object, frozen."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from federation.run_settings import RunSettings
from federation.settings import BlacklistSettings, FederationSettings
from fl_server.node_pins import PinnedNodes, pinned_nodes
from models.settings import ModelSettings
from privacy.settings import PrivacySettings


@dataclass(frozen=True)
class ServerSettings:
    """What the coordinator needs.

    The model, the federation, the privacy mechanism, the column layout the lenders encode
    into, and where to keep checkpoints. Vertical federation: the ``parties`` that take part and
    the ``train_epochs`` it may run (the lender stops earlier when validation AUC stalls).
    ``pinned_nodes``: ``((party, node_id), ...)``, each party's registered node on a deployment
    (:mod:`fl_server.node_pins`); empty pins nothing, as in simulation.
    """

    seed: int
    model: ModelSettings
    federation: FederationSettings
    privacy: PrivacySettings
    n_clients: int
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    run_dir: str
    resume_dir: str | None = None
    parties: tuple[str, ...] = ()
    train_epochs: int = 0
    blacklists: BlacklistSettings = BlacklistSettings()
    pinned_nodes: PinnedNodes = ()


def horizontal_server_settings(run: RunSettings, n_lenders: int, numeric: tuple[str, ...],
                               categorical: tuple[str, ...], run_dir: Path, *,
                               pins: Mapping[str, int] | None = None) -> ServerSettings:
    """Build the horizontal server's settings: the run's, and the columns the lenders agreed on.

    The same in simulation and in deployment (where ``pins`` maps each party to its node ID).
    """
    return ServerSettings(seed=run.seed, model=run.model, federation=run.federation,
                          privacy=run.privacy, n_clients=n_lenders, numeric=numeric,
                          categorical=categorical, run_dir=str(run_dir), resume_dir=run.resume,
                          pinned_nodes=pinned_nodes(pins))


def vertical_server_settings(run: RunSettings, parties: tuple[str, ...], run_dir: Path, *,
                             pins: Mapping[str, int] | None = None) -> ServerSettings:
    """Build the vertical server's settings: it only routes, so it needs no columns.

    ``pins`` maps each party to its node ID on a deployment (none in simulation).
    """
    return ServerSettings(seed=run.seed, model=run.model, federation=run.federation,
                          privacy=run.privacy,
                          n_clients=len(parties) + len(run.blacklists.holders), numeric=(),
                          categorical=(), run_dir=str(run_dir), parties=parties,
                          train_epochs=run.train.epochs, resume_dir=run.resume,
                          blacklists=run.blacklists, pinned_nodes=pinned_nodes(pins))
