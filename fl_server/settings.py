"""The server's one settings object, frozen."""

from __future__ import annotations

from dataclasses import dataclass

from federation.settings import FederationSettings
from models.settings import ModelSettings
from privacy.settings import PrivacySettings


@dataclass(frozen=True)
class ServerSettings:
    """What the coordinator needs.

    The model, the federation, the privacy mechanism, the column layout the lenders encode
    into, and where to keep checkpoints. Vertical federation: the ``parties`` that take part and
    the ``train_epochs`` it may run (the lender stops earlier when validation AUC stalls).
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
