"""Build a model from its settings and the width of each party's columns."""

from __future__ import annotations

from torch import nn

from credit_data.errors import ConfigError
from models.binned_scorecard import DIRECTIONS, ScorecardEncoder, ScorecardModel, layout_of
from models.networks import MLP, LogisticRegression, PartyEncoder, SplitModel
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
    if settings.bins < 2:
        raise ConfigError(f"model.bins must be >= 2, got {settings.bins}")
    if not 0.0 <= settings.l2 < float("inf"):
        raise ConfigError(f"model.l2 must be a finite number >= 0, got {settings.l2}")
    bad = {c: d for c, d in settings.monotone.items() if d not in DIRECTIONS}
    if bad:
        raise ConfigError(f"model.monotone: {bad}: each direction must be one of "
                          f"{sorted(DIRECTIONS)}")


def build_model(settings: ModelSettings, widths: dict[str, int],
                names: dict[str, tuple[str, ...]] | None = None) -> nn.Module:
    """Return an untrained model for inputs made of the given party blocks, in order.

    ``names``: each party's encoded column names; the scorecard bins by them (without them,
    every column as a number).

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
    if settings.kind is ModelKind.scorecard:  # unnamed columns: each binned as a number
        named = names or {p: tuple(f"x{i}" for i in range(w)) for p, w in widths.items()}
        return ScorecardModel({p: layout_of(settings, named[p], w) for p, w in widths.items()},
                              l2=settings.l2)
    return SplitModel(widths, settings.encoder_hidden, settings.embedding_dim, settings.hidden,
                      settings.dropout)


def party_encoder(settings: ModelSettings, width: int,
                  names: tuple[str, ...] = ()) -> PartyEncoder | ScorecardEncoder:
    """Return the encoder a party runs on its own ``width`` columns (named ``names``).

    >>> import torch
    >>> from models.settings import ModelSettings, ModelKind
    >>> party_encoder(ModelSettings(kind=ModelKind.scorecard, bins=4), 2, ("a", "b"))(
    ...     torch.zeros(3, 2)).shape
    torch.Size([3, 1])
    """
    if settings.kind is ModelKind.scorecard:
        return ScorecardEncoder(layout_of(settings, names, width), l2=settings.l2)
    return PartyEncoder(width, settings.encoder_hidden, settings.embedding_dim, settings.dropout)
