"""The root settings object of a run, composed of each layer's frozen settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from credit_data.settings import DataSettings
from models.settings import ModelSettings, TrainSettings


class Mode(StrEnum):
    """How the parties' data meet. ``centralized`` pools raw features: the upper bound."""

    centralized = "centralized"
    local = "local"


MODE_ROLES = {
    Mode.centralized: "upper bound: pools every party's raw features, which federation never does",
    Mode.local: "baseline: the lender's own columns alone",
}


@dataclass(frozen=True)
class FederationSettings:
    """Which parties take part and how they train together."""

    mode: Mode = Mode.centralized
    parties: tuple[str, ...] = ("lender", "bureau", "social")
    rounds: int = 10


class PrivacyMechanism(StrEnum):
    """Differential-privacy mechanism; ``off`` trains without one."""

    off = "off"


@dataclass(frozen=True)
class PrivacySettings:
    """Privacy budget. ``delta=None`` takes a value below 1/n of the rows it protects."""

    mechanism: PrivacyMechanism = PrivacyMechanism.off
    target_epsilon: float = 3.0
    delta: float | None = None


@dataclass(frozen=True)
class RunSettings:
    """Everything a run depends on; built once, from the Hydra config."""

    seed: int = 0
    verbose: bool = True
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
