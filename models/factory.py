"""Build a model from its settings and the width of each party's columns."""

from __future__ import annotations

from torch import nn

from credit_data.errors import ConfigError
from models.networks import MLP, LogisticRegression, SplitModel
from models.settings import ModelKind, ModelSettings


def check_model(settings: ModelSettings) -> None:
    """Raise a ConfigError naming the key of any out-of-range value."""
    if any(h < 1 for h in settings.hidden):
        raise ConfigError(f"model.hidden must hold positive widths, got {list(settings.hidden)}")
    if any(h < 1 for h in settings.encoder_hidden):
        raise ConfigError(f"model.encoder_hidden must hold positive widths, got "
                          f"{list(settings.encoder_hidden)}")
    if settings.embedding_dim < 1:
        raise ConfigError(f"model.embedding_dim must be >= 1, got {settings.embedding_dim}")
    if not 0.0 <= settings.dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {settings.dropout}")


def build_model(settings: ModelSettings, widths: dict[str, int]) -> nn.Module:
    """Return an untrained model for inputs made of the given party blocks, in order.

    >>> from models.settings import ModelSettings, ModelKind
    >>> build_model(ModelSettings(kind=ModelKind.logreg), {"lender": 4}).linear.in_features
    4
    """
    check_model(settings)
    in_dim = sum(widths.values())
    if settings.kind is ModelKind.logreg:
        return LogisticRegression(in_dim)
    if settings.kind is ModelKind.mlp:
        return MLP(in_dim, settings.hidden, settings.dropout)
    return SplitModel(widths, settings.encoder_hidden, settings.embedding_dim, settings.hidden,
                      settings.dropout)
