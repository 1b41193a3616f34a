"""The networks. None uses BatchNorm, so all pass Opacus' ``ModuleValidator``.

Every model maps a float tensor ``[batch, features]`` to one logit per row.
"""

from __future__ import annotations

import torch
from torch import nn


def _stack(in_dim: int, hidden: tuple[int, ...], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    return nn.Sequential(*layers), width


class LogisticRegression(nn.Module):
    """One linear layer: the scorecard baseline.

    >>> LogisticRegression(3)(torch.zeros(2, 3)).shape
    torch.Size([2])
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """Fully connected ReLU network with dropout.

    >>> MLP(3, (4, 2), 0.1)(torch.zeros(5, 3)).shape
    torch.Size([5])
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.body, width = _stack(in_dim, hidden, dropout)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x)).squeeze(-1)


class PartyEncoder(nn.Module):
    """What a party runs on its own columns: features to an embedding.

    >>> PartyEncoder(6, (4,), 3, 0.0)(torch.zeros(2, 6)).shape
    torch.Size([2, 3])
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], embedding_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.body, width = _stack(in_dim, hidden, dropout)
        self.embed = nn.Linear(width, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))


class SplitHead(nn.Module):
    """What the label holder runs on the concatenated embeddings: embeddings to a logit.

    >>> SplitHead(6, (4,), 0.0)(torch.zeros(2, 6)).shape
    torch.Size([2])
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden, dropout)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        # no ReLU on the embeddings themselves: under DP-SGD noise an embedding pushed below
        # zero would stop passing gradient back to its party, and that party stops learning
        return self.mlp(embeddings)


class SplitModel(nn.Module):
    """Encoders per party and a head, trained as one network on the concatenated columns.

    ``widths`` says how many leading columns of the input belong to each party, in order; the
    vertical federation runs the same encoders and head apart, at their parties.

    >>> m = SplitModel({"lender": 3, "bureau": 2}, (4,), 2, (4,), 0.0)
    >>> m(torch.zeros(5, 5)).shape
    torch.Size([5])
    """

    def __init__(self, widths: dict[str, int], encoder_hidden: tuple[int, ...],
                 embedding_dim: int, head_hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.widths = dict(widths)
        self.encoders = nn.ModuleDict({
            party: PartyEncoder(width, encoder_hidden, embedding_dim, dropout)
            for party, width in self.widths.items()})
        self.head = SplitHead(embedding_dim * len(self.widths), head_hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, list(self.widths.values()), dim=1)
        embeddings = [self.encoders[p](part) for p, part in zip(self.widths, parts, strict=True)]
        return self.head(torch.cat(embeddings, dim=1))


def output_layer(model: nn.Module) -> nn.Linear:
    """Return the layer that produces the logit: the last one-output ``Linear`` registered.

    >>> m = SplitModel({"a": 2, "b": 3}, (3,), 2, (4,), 0.0)
    >>> output_layer(m) is m.head.mlp.out
    True
    >>> output_layer(MLP(3, (4,), 0.0)).in_features
    4
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no one-output Linear layer")
    return layers[-1]
