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


class Criterion(StrEnum):
    """What early stopping watches on the validation rows."""

    log_loss = "log_loss"
    auc = "auc"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation: Adam on binary cross-entropy, early stopping on the validation rows.

    The training budget adapts to the data: the batch is at most ``batch_size`` rows and small
    enough for ``min_steps_per_epoch`` optimizer steps per epoch (on 700 training rows, 44 rows
    and 16 steps; from 8,192 rows on, ``batch_size``), for at most ``epochs`` epochs. Early
    stopping watches ``criterion`` on the validation rows (log-loss by default: on a few
    hundred validation rows it is far less noisy than the AUC), averaged over the last
    ``smoothing`` epochs; it keeps the weights of the best averaged epoch and stops after
    ``patience`` epochs without a better one, never before ``min_epochs``
    (docs/running-experiments.md, "Training budget", has the measurements).

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
    min_steps_per_epoch: int = 16
    criterion: Criterion = Criterion.log_loss
    smoothing: int = 3
    min_epochs: int = 8
