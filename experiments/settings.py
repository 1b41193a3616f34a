"""The root settings object of a run, composed of each layer's frozen settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from credit_data.settings import DataSettings, PartitionSettings
from federation.settings import FederationSettings
from models.settings import ModelSettings, TrainSettings
from privacy.settings import AuditSettings, PrivacySettings


@dataclass(frozen=True)
class RunSettings:
    """Everything a run depends on; built once, from the Hydra config.

    ``references``: also train the centralized, lender-only and non-private references on the
    same rows and seed (cached per sweep), for the privacy-utility comparison.
    """

    seed: int = 0
    verbose: bool = True
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    partition: PartitionSettings = field(default_factory=PartitionSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    references: bool = False
    resume: str | None = None
