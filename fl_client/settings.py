"""The client's one settings object, frozen."""

from __future__ import annotations

from dataclasses import dataclass

from federation.settings import Fault, FederationSettings
from models.settings import ModelSettings, TrainSettings
from privacy.settings import PrivacySettings


@dataclass(frozen=True)
class ClientSettings:
    """Everything one party's node needs besides its rows.

    ``state_dir`` is where the party keeps its own privacy accountant between processes (and
    across a resume); ``fault`` makes a simulated client misbehave, for tests.
    """

    party: str
    seed: int
    model: ModelSettings
    train: TrainSettings
    federation: FederationSettings
    privacy: PrivacySettings
    state_dir: str | None = None
    fault: Fault | None = None
    label_leakage_audit: bool = False
