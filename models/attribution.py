"""Attributions of a split model's score: parties by Shapley values, columns by path integrals.

Pure torch and numpy, usable in one process; :mod:`fl_client.explanation` runs the same math
apart, each piece at the party that holds its inputs.

A split model scores ``h(e_1, ..., e_n)``: a head over one embedding per party. Each party has a
**reference**: the embedding of a reference row it chooses alone (``r_i``). The value of a
coalition ``S`` is the head with the embeddings of ``S`` and the references of the others, and a
party's **share** is its exact Shapley value over the ``2^n`` coalitions
(:func:`party_shares`): the shares add up to ``h(e) - h(r)``.

Party ``i`` splits its share over its own columns with integrated gradients along the straight
path from its reference row ``x'`` to the row ``x``, through its own encoder ``f_i``:

    a_j = (x_j - x'_j) * sum_k w_k  G_k . d f_i(x' + t_k (x - x')) / d x_j

where ``t_k, w_k`` are Gauss-Legendre nodes and weights on ``[0, 1]`` (:func:`path_steps`) and
``G_k`` is the Shapley-weighted gradient of the head with respect to party ``i``'s embedding,
at the path point ``f_i(x' + t_k (x - x'))`` (:func:`head_gradients`). Since
``sum_S w(S) [h(S + i) - h(S)]`` integrates exactly to the share, the columns add up to the share
(up to the quadrature, :func:`completeness_gap`). Where the encoder and the head each have
one hidden layer the integral is taken in closed form instead (:func:`exact_head_gradients`,
:func:`exact_column_attributions`): the columns then add up to the share exactly.

>>> torch.manual_seed(0) and None
>>> head = torch.nn.Linear(4, 1)
>>> actual = [torch.randn(3, 2), torch.randn(3, 2)]
>>> ref = [torch.zeros(1, 2), torch.zeros(1, 2)]
>>> shares, score, base = party_shares(lambda z: head(z).squeeze(-1), actual, ref)
>>> bool(torch.allclose(shares.sum(1), score - base, atol=1e-6))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["active_fraction", "breakpoints", "column_attributions", "completeness_gap",
           "exact_column_attributions", "exact_head_gradients", "fold_columns", "head_gradients",
           "one_hidden_layer", "party_shares", "path_rows", "path_steps", "shapley_weight",
           "source_columns"]

Head = Callable[[torch.Tensor], torch.Tensor]
"""The head: the concatenated embeddings ``[rows, sum of widths]`` to one logit per row."""


def path_steps(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the Gauss-Legendre nodes and weights on ``[0, 1]`` (``steps`` of each).

    >>> t, w = path_steps(3)
    >>> round(float(w.sum()), 12), bool((t > 0).all() and (t < 1).all())
    (1.0, True)
    """
    if steps < 1:
        raise ValueError(f"explain.steps must be at least 1, got {steps}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def shapley_weight(size: int, n: int) -> float:
    """Return the Shapley weight of a coalition of ``size`` others, among ``n`` players.

    >>> [shapley_weight(s, 3) for s in range(3)]
    [0.3333333333333333, 0.16666666666666666, 0.3333333333333333]
    """
    return math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)


def _assemble(actual: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
              coalition: int, rows: int) -> torch.Tensor:
    parts = [(actual[i] if coalition >> i & 1 else reference[i]).expand(rows, -1)
             for i in range(len(actual))]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def party_shares(head: Head, actual: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return each party's exact Shapley share, the score and the reference's score.

    ``actual[i]``: party ``i``'s embeddings ``[rows, d_i]`` (for an applicant it does not know,
    whatever the head uses instead); ``reference[i]``: its reference embedding, ``[1, d_i]``
    or ``[rows, d_i]``. The head runs on every one of the ``2^n`` coalitions once.
    Returns ``(shares [rows, n], score [rows], base [rows])``.
    """
    n, rows = len(actual), actual[0].shape[0]
    values = [head(_assemble(actual, reference, c, rows)) for c in range(2 ** n)]
    shares = torch.zeros(rows, n, dtype=values[0].dtype)
    for i in range(n):
        for c in range(2 ** n):
            if c >> i & 1:
                continue
            size = bin(c).count("1")
            shares[:, i] += shapley_weight(size, n) * (values[c | 1 << i] - values[c])
    return shares, values[-1], values[0]


def head_gradients(head: Head, actual: Sequence[torch.Tensor],
                   reference: Sequence[torch.Tensor], party: int, path: torch.Tensor
                   ) -> torch.Tensor:
    """Return the Shapley-weighted head gradient w.r.t. ``party``'s embedding along its path.

    ``path``: the party's embeddings of its path rows, ``[steps, rows, d]``. For every coalition
    ``S`` of the other parties the head runs with ``S``'s embeddings, the others' references and
    the path point in ``party``'s place; the gradients are summed with the Shapley weights.
    Returns ``[steps, rows, d]``.
    """
    n = len(actual)
    steps, rows, d = path.shape
    point = path.reshape(steps * rows, d).detach().clone().requires_grad_(True)
    total = torch.zeros(steps * rows, dtype=point.dtype)
    for c in range(2 ** n):
        if c >> party & 1:
            continue
        weight = shapley_weight(bin(c).count("1"), n)
        parts = [point if i == party else
                 (actual[i] if c >> i & 1 else reference[i]).expand(rows, -1).repeat(steps, 1)
                 for i in range(n)]
        total = total + weight * head(torch.cat(parts, dim=1))
    (grad,) = torch.autograd.grad(total.sum(), point)
    return grad.reshape(steps, rows, d)


def path_rows(x: torch.Tensor, reference: torch.Tensor, alphas: np.ndarray) -> torch.Tensor:
    """Return the rows along the straight path, ``[steps, rows, columns]``.

    >>> path_rows(torch.ones(1, 2), torch.zeros(2), np.array([0.25, 1.0]))[:, 0, 0].tolist()
    [0.25, 1.0]
    """
    t = torch.as_tensor(alphas, dtype=x.dtype).view(-1, 1, 1)
    return reference + t * (x - reference).unsqueeze(0)


def column_attributions(encoder: nn.Module, x: torch.Tensor, reference: torch.Tensor,
                        gradients: torch.Tensor, steps: int) -> torch.Tensor:
    """Return integrated gradients of each column of ``x`` through ``encoder``.

    ``gradients``: the head's, at the encoder's output along the path (:func:`head_gradients`,
    ``[steps, rows, d]``); ``reference``: the party's reference row (``[columns]``).
    Returns ``[rows, columns]``, in the head's units.
    """
    alphas, weights = path_steps(steps)
    rows = path_rows(x, reference, alphas).detach().requires_grad_(True)
    encoder.eval()
    out = encoder(rows.reshape(-1, x.shape[1])).reshape(len(alphas), x.shape[0], -1)
    (grad,) = torch.autograd.grad((out * gradients.to(out.dtype)).sum(), rows)
    w = torch.as_tensor(weights, dtype=grad.dtype).view(-1, 1, 1)
    return (x - reference) * (w * grad).sum(dim=0)


def completeness_gap(columns: torch.Tensor, shares: torch.Tensor) -> float:
    """Return the largest ``|sum of a party's column attributions - its share|`` over rows.

    >>> completeness_gap(torch.tensor([[1.0, 2.0]]), torch.tensor([3.0]))
    0.0
    """
    return float((columns.sum(dim=1) - shares).abs().max()) if len(shares) else 0.0


def source_columns(feature_names: Sequence[str]) -> tuple[str, ...]:
    """Return the source column of each encoded column (one-hot and missing flags folded).

    >>> source_columns(["a", "a.missing", "c=x", "c=__missing__"])
    ('a', 'a', 'c', 'c')
    """
    return tuple(name.split("=")[0].removesuffix(".missing") for name in feature_names)


def fold_columns(values: np.ndarray, feature_names: Sequence[str]
                 ) -> tuple[np.ndarray, tuple[str, ...]]:
    """Sum encoded columns' attributions per source column; return them and the columns' names.

    >>> v, names = fold_columns(np.array([[1.0, 2.0, 3.0]]), ["a", "a.missing", "b=x"])
    >>> v.tolist(), names
    ([[3.0, 3.0]], ('a', 'b'))
    """
    sources = source_columns(feature_names)
    names = tuple(dict.fromkeys(sources))
    index = np.array([names.index(s) for s in sources], dtype=np.int64)
    out = np.zeros((values.shape[0], len(names)), dtype=np.float64)
    np.add.at(out.T, index, values.T)
    return out, names


# --- exact integrated gradients for one-hidden-layer ReLU encoders and heads ---------------------
# A network Linear -> ReLU -> Linear is linear in between the points where a hidden unit changes
# sign; along a straight path those points are known in closed form, so the path integral is a
# finite sum: no quadrature error, and the columns add up to the share exactly.


def one_hidden_layer(net: nn.Module) -> tuple[nn.Linear, nn.Linear] | None:
    """Return ``(first, last)`` Linear layers of a Linear-ReLU-Linear network, else None.

    Dropout is ignored (attributions are taken in eval mode).

    >>> from models.networks import PartyEncoder
    >>> one_hidden_layer(PartyEncoder(3, (4,), 2, 0.1)) is not None
    True
    >>> one_hidden_layer(PartyEncoder(3, (4, 4), 2, 0.0)) is None
    True
    """
    layers = [m for m in net.modules() if isinstance(m, nn.Linear | nn.ReLU)]
    kinds = [type(m) for m in layers]
    if kinds != [nn.Linear, nn.ReLU, nn.Linear]:
        return None
    first, last = layers[0], layers[2]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    return first, last


def breakpoints(first: nn.Linear, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Return each row's path points where a hidden unit changes sign, with 0 and 1, sorted.

    ``[rows, hidden + 2]`` in ``[0, 1]``; a unit that does not change sign adds a point at 1
    (a segment of length zero).

    >>> lin = nn.Linear(1, 1)
    >>> with torch.no_grad():
    ...     _ = lin.weight.fill_(1.0), lin.bias.fill_(-0.5)
    >>> breakpoints(lin, torch.ones(1, 1), torch.zeros(1)).tolist()
    [[0.0, 0.5, 1.0]]
    """
    with torch.no_grad():
        z0 = first(reference.unsqueeze(0)).expand(x.shape[0], -1)
        dz = first(x) - z0
        t = -z0 / torch.where(dz == 0, torch.full_like(dz, float("inf")), dz)
        t = torch.where((t > 0) & (t < 1), t, torch.ones_like(t))
        ends = torch.tensor([[0.0, 1.0]], dtype=t.dtype).expand(x.shape[0], -1)
        return torch.sort(torch.cat([ends, t], dim=1), dim=1).values


def active_fraction(u0: torch.Tensor, u1: torch.Tensor) -> torch.Tensor:
    """Return the share of ``t`` in ``[0, 1]`` where ``u0 + t (u1 - u0) > 0`` (elementwise).

    >>> active_fraction(torch.tensor([1.0, -1.0, 1.0, -1.0]),
    ...                 torch.tensor([1.0, -1.0, -3.0, 1.0])).tolist()
    [1.0, 0.0, 0.25, 0.5]
    """
    cross = u0 / torch.where(u0 == u1, torch.ones_like(u0), u0 - u1)
    mixed = torch.where(u0 > 0, cross, 1.0 - cross)
    return torch.where((u0 > 0) == (u1 > 0), (u0 > 0).to(u0.dtype), mixed)


def exact_head_gradients(head: nn.Module, actual: Sequence[torch.Tensor],
                         reference: Sequence[torch.Tensor], party: int, points: torch.Tensor
                         ) -> torch.Tensor:
    """Return the Shapley-weighted head gradient averaged over each segment of a party's path.

    ``points``: the party's embeddings at its :func:`breakpoints`, ``[rows, K, d]``; between two
    of them its embedding is linear. The head must be Linear-ReLU-Linear
    (:func:`one_hidden_layer`): on a segment each hidden unit is active on an exact share of it
    (:func:`active_fraction`). Returns ``[rows, K - 1, d]``; the dot product of segment ``k``'s
    with ``points[k + 1] - points[k]`` is the head's exact change along it.
    """
    layers = one_hidden_layer(head)
    if layers is None:
        raise ValueError("exact attributions need a head with one hidden layer")
    first, last = layers
    n = len(actual)
    rows, k, d = points.shape
    widths = [a.shape[1] for a in actual]
    start = sum(widths[:party])
    w_party = first.weight[:, start:start + d]  # [hidden, d]
    w_out = last.weight[0]  # [hidden]
    total = torch.zeros(rows, k - 1, d, dtype=points.dtype)
    with torch.no_grad():
        for c in range(2 ** n):
            if c >> party & 1:
                continue
            weight = shapley_weight(bin(c).count("1"), n)
            parts = [torch.zeros(rows, widths[i]) if i == party else
                     (actual[i] if c >> i & 1 else reference[i]).expand(rows, -1)
                     for i in range(n)]
            fixed = first(torch.cat(parts, dim=1))  # [rows, hidden], bias included
            u = fixed.unsqueeze(1) + points @ w_party.T  # [rows, K, hidden]
            frac = active_fraction(u[:, :-1], u[:, 1:])  # [rows, K - 1, hidden]
            total += weight * (frac * w_out) @ w_party
    return total


def exact_column_attributions(encoder: nn.Module, x: torch.Tensor, reference: torch.Tensor,
                              cuts: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Return exact integrated gradients of each column through a one-hidden-layer encoder.

    ``cuts``: the rows' :func:`breakpoints`; ``gradients``: the head's averaged over each
    segment (:func:`exact_head_gradients`, ``[rows, K - 1, d]``). Returns ``[rows, columns]``.
    """
    layers = one_hidden_layer(encoder)
    if layers is None:
        raise ValueError("exact attributions need an encoder with one hidden layer")
    first, last = layers
    with torch.no_grad():
        delta = x - reference
        lengths = cuts[:, 1:] - cuts[:, :-1]  # [rows, K - 1]
        mid = reference + (0.5 * (cuts[:, 1:] + cuts[:, :-1])).unsqueeze(-1) * delta.unsqueeze(1)
        active = (first(mid) > 0).to(x.dtype)  # [rows, K - 1, hidden]
        back = (gradients.to(x.dtype) @ last.weight) * active  # [rows, K - 1, hidden]
        summed = (lengths.unsqueeze(-1) * back).sum(dim=1)  # [rows, hidden]
        return delta * (summed @ first.weight)
