"""Typed, frozen settings of the model and of its training."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ModelKind(StrEnum):
    """Model families."""

    logreg = "logreg"
    mlp = "mlp"
    split_mlp = "split_mlp"


@dataclass(frozen=True)
class ModelSettings:
    """Architecture. ``split_mlp`` is one encoder per party and a head over their embeddings."""

    kind: ModelKind = ModelKind.mlp
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    encoder_hidden: tuple[int, ...] = (32,)
    embedding_dim: int = 8


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation: Adam on binary cross-entropy, early stopping on validation AUC.

    ``early_stopping=false`` (centralized and local modes) trains every epoch and keeps the last
    weights instead of the best validation epoch's: a deliberately overfit model, as the
    privacy audit's reference for what an attacker can do.
    """

    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 4
    early_stopping: bool = True
