"""The additive binned scorecard (``model=scorecard``): bins, each party's points, the sum.

Each party bins its own encoded columns (its preprocessing's output, fitted on its own
training rows, or under DP from its noisy summary) inside its encoder, so nothing about the
bins is fitted here and nothing leaves the party:

* a numeric column comes out of the quantile transform as ``z = Phi^-1(F(x))``, ``F`` the
  party's (noisy, under DP) training distribution; cutting ``z`` at ``Phi^-1(k / bins)`` gives
  its ``bins`` quantile bins of the training rows. A value missing in training has its own bin
  (the preprocessing's ``column.missing`` indicator; the other bins are then empty);
* a categorical column's one-hot columns are its bins. Rare categories are merged: a category
  the preprocessing did not keep (under DP, one the noisy summary did not release) encodes to
  zeros and scores the column's reference, 0 points;
* the ``present`` flag of a party other than the lender (it knows the applicant) is a bin; an
  applicant the party does not know has every bin empty.

The encoder is one linear layer over the bins with one output (the party's partial score, in
log-odds of default); the head adds the partial scores and an intercept (its weights fixed at
1). Monotonic constraints (``model.monotone``): after every optimizer step (lazily, before the
next forward pass) a monotone column's bin weights are projected on the monotone cone
(isotonic regression, pool-adjacent-violators: the nearest monotone weights in L2); its missing
bin is free. The projection is a forward pre-hook, so it holds under Opacus too.

Points use the scaling scoring already uses (:func:`models.scorecard.points`):
``points = offset - factor * logit``, so a bin whose weight is ``w`` is worth ``-factor * w``
points and the intercept ``offset - factor * b``.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import ndtri
from sklearn.isotonic import isotonic_regression
from torch import nn

from credit_data.errors import ConfigError
from models.scorecard_reasons import (
    column_points,
    near_cutoff,
    points_lost,
    ranked_reasons,
    reference_points,
)
from models.settings import ModelSettings, ScorecardSettings

PRESENT = "present"
DIRECTIONS = {"increasing": 1, "decreasing": -1}


@dataclass(frozen=True)
class BinGroup:
    """One column's bins: which inputs feed them and how.

    ``kind`` is ``numeric`` (``source`` is the z column, ``missing`` its indicator or -1),
    ``onehot`` (``source`` the category columns, one bin each) or ``flag`` (one 0/1 input).
    """

    column: str
    kind: str
    source: tuple[int, ...]
    labels: tuple[str, ...]
    missing: int = -1
    direction: int = 0


@dataclass(frozen=True)
class BinLayout:
    """A party's bins, derived from its encoded column names alone (no data).

    >>> lay = BinLayout.of(("a", "a.missing", "c=x", "c=y", "present"), bins=4)
    >>> [(g.column, len(g.labels)) for g in lay.groups]
    [('a', 5), ('c', 2), ('present', 1)]
    >>> lay.n_bins, lay.present
    (8, 4)
    """

    groups: tuple[BinGroup, ...]
    cuts: tuple[float, ...]
    width: int
    present: int = -1

    @classmethod
    def of(cls, names: Sequence[str], bins: int = 10, monotone: dict[str, str] | None = None,
           width: int | None = None) -> BinLayout:
        """Lay out the bins of columns named as the preprocessing names them.

        ``width``: inputs beyond ``names`` (a lender's blacklist hit counts) become flags.
        """
        if bins < 2:
            raise ConfigError(f"model.bins must be >= 2, got {bins}")
        monotone = dict(monotone or {})
        for column, direction in monotone.items():
            if direction not in DIRECTIONS:
                raise ConfigError(f"model.monotone.{column} must be one of "
                                  f"{sorted(DIRECTIONS)}, got '{direction}'")
        names = list(names)
        width = len(names) if width is None else width
        index = {n: i for i, n in enumerate(names)}
        cuts = tuple(float(c) for c in ndtri(np.arange(1, bins) / bins))
        groups: list[BinGroup] = []
        categories: dict[str, list[int]] = {}
        present = -1
        for i, name in enumerate(names):
            if name == PRESENT:
                present = i
                groups.append(BinGroup(PRESENT, "flag", (i,), ("known",)))
            elif "=" in name:
                categories.setdefault(name.split("=", 1)[0], []).append(i)
            elif name.endswith(".missing") and name.removesuffix(".missing") in index:
                continue
            else:
                missing = index.get(f"{name}.missing", -1)
                labels = tuple(f"q{k + 1}/{bins}" for k in range(bins))
                groups.append(BinGroup(name, "numeric", (i,),
                                       labels + (("missing",) if missing >= 0 else ()),
                                       missing, DIRECTIONS.get(monotone.get(name, ""), 0)))
        for column, where in categories.items():
            labels = tuple(names[i].split("=", 1)[1] for i in where)
            groups.append(BinGroup(column, "onehot", tuple(where), labels))
        groups += [BinGroup(f"input{i}", "flag", (i,), ("1",)) for i in range(len(names), width)]
        order = {g.column: k for k, g in enumerate(groups)}
        groups.sort(key=lambda g: (g.column == PRESENT, order[g.column]))
        return cls(tuple(groups), cuts, width, present)

    @property
    def n_bins(self) -> int:
        """Bins over every column."""
        return sum(len(g.labels) for g in self.groups)

    def bin_names(self) -> list[tuple[str, str]]:
        """``(column, bin)`` of every bin, in the encoder's order."""
        return [(g.column, label) for g in self.groups for label in g.labels]

    def one_hot(self, x: torch.Tensor) -> torch.Tensor:
        """Return the bins ``[rows, n_bins]`` (0/1) of encoded rows ``[rows, width]``."""
        cuts = torch.tensor(self.cuts, dtype=x.dtype, device=x.device)
        blocks = []
        for g in self.groups:
            if g.kind == "numeric":
                k = torch.bucketize(x[:, g.source[0]].contiguous(), cuts, right=True)
                block = nn.functional.one_hot(k, len(self.cuts) + 1).to(x.dtype)
                if g.missing >= 0:
                    gap = (x[:, g.missing] > 0.5).to(x.dtype)[:, None]
                    block = torch.cat([block * (1 - gap), gap], dim=1)
                blocks.append(block)
            else:
                blocks.append(x[:, list(g.source)])
        out = torch.cat(blocks, dim=1) if blocks else x.new_zeros((len(x), 0))
        if self.present >= 0:  # an applicant the party does not know: every bin empty
            out = out * (x[:, self.present] > 0.5).to(x.dtype)[:, None]
        return out


def _project(weight: torch.Tensor, layout: BinLayout) -> None:
    """Project a monotone column's bin weights on the monotone cone, in place."""
    start = 0
    for g in layout.groups:
        n = len(g.labels) - (g.missing >= 0)
        if g.direction:
            w = weight[0, start:start + n].detach().cpu().numpy().astype(np.float64)
            fitted = isotonic_regression(w, increasing=g.direction > 0)
            weight[0, start:start + n] = torch.as_tensor(fitted, dtype=weight.dtype)
        start += len(g.labels)


class ScorecardEncoder(nn.Module):
    """A party's part of the scorecard: its bins, one weight each, its partial score.

    ``l2``: the penalty on its bin weights (``model.l2``, see :func:`decay_groups`).

    >>> enc = ScorecardEncoder(BinLayout.of(("a", "c=x", "c=y"), bins=2))
    >>> enc(torch.tensor([[-1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])).shape
    torch.Size([2, 1])
    """

    def __init__(self, layout: BinLayout, l2: float = 0.0) -> None:
        super().__init__()
        self.layout, self.l2 = layout, l2
        self.embed = nn.Linear(layout.n_bins, 1, bias=False)
        nn.init.zeros_(self.embed.weight)
        if any(g.direction for g in layout.groups):
            self.register_forward_pre_hook(lambda module, args: module.project())

    def project(self) -> None:
        """Make the monotone columns' weights monotone (a no-op without constraints)."""
        with torch.no_grad():
            _project(self.embed.weight, self.layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.layout.one_hot(x))


def sum_head(parties: int) -> nn.Linear:
    """Return the lender's head: the partial scores added (weights fixed at 1) plus an intercept.

    >>> float(sum_head(2)(torch.tensor([[1.0, 2.0]])).detach()[0, 0])
    3.0
    """
    head = nn.Linear(parties, 1)
    with torch.no_grad():
        head.weight.fill_(1.0)
        head.bias.zero_()
    head.weight.requires_grad_(False)
    return head


class ScorecardModel(nn.Module):
    """The whole scorecard in one process (centralized, local and horizontal modes).

    ``layouts`` per party, in the order of the input's column blocks.

    >>> m = ScorecardModel({"lender": BinLayout.of(("a",), bins=2)})
    >>> m(torch.zeros(3, 1)).shape
    torch.Size([3])
    """

    def __init__(self, layouts: dict[str, BinLayout], l2: float = 0.0) -> None:
        super().__init__()
        self.widths = {p: lay.width for p, lay in layouts.items()}
        self.encoders = nn.ModuleDict({p: ScorecardEncoder(lay, l2)
                                       for p, lay in layouts.items()})
        self.head = sum_head(len(layouts))

    def party_encoders(self) -> dict[str, ScorecardEncoder]:
        """Each party's encoder, by party."""
        return {p: typing.cast(ScorecardEncoder, e) for p, e in self.encoders.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, list(self.widths.values()), dim=1)
        scores = [self.encoders[p](part) for p, part in zip(self.widths, parts, strict=True)]
        return self.head(torch.cat(scores, dim=1)).squeeze(-1)


def decay_groups(model: nn.Module, weight_decay: float, rows: int) -> list[dict[str, Any]]:
    """Return Adam's parameter groups: a scorecard's bin weights decay by ``l2 / rows``.

    A scorecard's penalty (``model.l2``) is scikit-learn's ``1 / C``, on the log-loss summed
    over the ``rows`` training rows; the optimizer's loss is their mean, so the bins' weight
    decay is ``l2 / rows``, and training converges to the optimum of
    ``LogisticRegression(C=1 / l2)`` on the one-hot bins. The rest (the intercept, an absent
    party's score) is not penalized, as scikit-learn's intercept is not. A passive party's
    ``rows`` are the training rows it knows: its mean runs over them alone, and the rows it
    does not know add nothing to its weights' gradient. A model without a scorecard encoder
    decays every parameter by ``weight_decay`` (``train.weight_decay``).

    >>> m = ScorecardModel({"lender": BinLayout.of(("a",), bins=2)}, l2=10.0)
    >>> [(len(g["params"]), g["weight_decay"]) for g in decay_groups(m, 1e-5, 100)]
    [(1, 0.1), (2, 0.0)]
    """
    bins = [m for m in model.modules() if isinstance(m, ScorecardEncoder)]
    if not bins:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    penalized = {id(m.embed.weight) for m in bins}
    groups = [{"params": [m.embed.weight], "weight_decay": m.l2 / max(rows, 1)} for m in bins]
    rest = [p for p in model.parameters() if id(p) not in penalized]
    return groups + ([{"params": rest, "weight_decay": 0.0}] if rest else [])


def layout_of(settings: ModelSettings, names: Sequence[str],
              width: int | None = None) -> BinLayout:
    """Return the bins of a party's columns under the model settings."""
    return BinLayout.of(names, settings.bins, settings.monotone, width)


def factor_offset(card: ScorecardSettings) -> tuple[float, float]:
    """Return ``(factor, offset)`` of the points scaling: ``points = offset - factor * logit``.

    >>> f, o = factor_offset(ScorecardSettings())
    >>> round(f, 4), round(o, 2)
    (72.1348, 387.6)
    """
    factor = card.pdo / math.log(2)
    return factor, card.base_points - factor * math.log(card.base_odds)


def points_table(encoder: ScorecardEncoder, card: ScorecardSettings,
                 edges: dict[str, list[float]] | None = None) -> list[dict[str, Any]]:
    """Return the party's scorecard table: column, bin, points (and a numeric bin's range).

    ``edges``: each numeric column's cut points in its own units (:func:`value_edges`).
    """
    encoder.project()
    factor, _ = factor_offset(card)
    weights = encoder.embed.weight.detach().cpu().numpy()[0].astype(np.float64)
    rows, k = [], 0
    for g in encoder.layout.groups:
        for j, label in enumerate(g.labels):
            row: dict[str, Any] = {"column": g.column, "bin": label,
                                   "points": float(-factor * weights[k])}
            cuts = (edges or {}).get(g.column)
            if g.kind == "numeric" and label != "missing" and cuts is not None:
                row["from"] = None if j == 0 else cuts[j - 1]
                row["to"] = None if j == len(cuts) else cuts[j]
            rows.append(row)
            k += 1
    return rows


def intercept_points(head_bias: float, card: ScorecardSettings) -> float:
    """Return the points every applicant starts from: the offset less the intercept's share."""
    factor, offset = factor_offset(card)
    return offset - factor * head_bias


def applicant_points(encoder: ScorecardEncoder, x: np.ndarray,
                     card: ScorecardSettings) -> np.ndarray:
    """Each row's points from each bin ``[rows, n_bins]`` (0 where the bin is not its own)."""
    encoder.project()
    factor, _ = factor_offset(card)
    with torch.no_grad():
        hot = encoder.layout.one_hot(torch.as_tensor(x, dtype=torch.float32)).numpy()
    weights = encoder.embed.weight.detach().cpu().numpy()[0]
    return (-factor * hot * weights[None, :]).astype(np.float64)


def value_edges(preprocessing: dict[str, Any], cuts: Sequence[float]) -> dict[str, list[float]]:
    """Each numeric column's bin edges in its own units, from its saved preprocessing.

    A fitted quantile transform (``kind: fitted``) or a sketch from a noisy summary
    (``kind: sketch``) maps back through its own quantiles; other kinds give no edges.

    >>> value_edges({"kind": "sketch", "knots": {"a": [0.0, 10.0]}}, [0.0])
    {'a': [5.0]}
    """
    from scipy.special import ndtr

    p = ndtr(np.asarray(cuts, dtype=np.float64))
    out: dict[str, list[float]] = {}
    if preprocessing.get("kind") == "sketch":
        for column, knots in preprocessing.get("knots", {}).items():
            k = np.asarray(knots, dtype=np.float64)
            out[column] = [float(v) for v in np.interp(p, np.linspace(0, 1, len(k)), k)]
    elif preprocessing.get("kind") == "fitted" and "quantiles" in preprocessing:
        q = np.asarray(preprocessing["quantiles"], dtype=np.float64)
        refs = np.asarray(preprocessing["references"], dtype=np.float64)
        for j, column in enumerate(preprocessing.get("imputed", [])):
            out[column] = [float(v) for v in np.interp(p, refs, q[:, j])]
    return out


def party_table(encoder: ScorecardEncoder, card: ScorecardSettings,
                preprocessing: dict[str, Any] | None,
                lender: nn.Module | None = None) -> dict[str, Any]:
    """Return what a party keeps of its scorecard: its bins' points (and the lender's offset).

    In points of the model's own logit (before a label-DP calibration, which the lender alone
    holds); the lender's adds the intercept's points and each absent party's points.
    """
    edges = value_edges(preprocessing or {}, encoder.layout.cuts)
    out: dict[str, Any] = {"bins": points_table(encoder, card, edges)}
    if lender is not None:
        factor, _ = factor_offset(card)
        head = [m for m in lender.modules() if isinstance(m, nn.Linear)][-1]
        out["intercept_points"] = intercept_points(float(head.bias.detach()[0]), card)
        absent = getattr(lender, "absent", {})
        out["absent_points"] = {p: float(-factor * layer.weight.detach()[0, 0])
                                for p, layer in absent.items()}
    return out


def model_tables(model: ScorecardModel, card: ScorecardSettings,
                 preprocessing: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return a one-process scorecard's tables: each party's bins' points and the offset.

    A horizontal model's one shared schema (its only preprocessing) serves its one block.
    """
    shared = next(iter(preprocessing.values()), {}) if len(preprocessing) == 1 else {}
    return {"intercept_points": intercept_points(float(model.head.bias.detach()[0]), card),
            "parties": {p: points_table(enc, card, value_edges(
                preprocessing.get(p, shared), enc.layout.cuts))
                for p, enc in model.party_encoders().items()}}


def bin_shares(layout: BinLayout, x: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Return each bin's share of the encoded rows ``x``: the average applicant's bins.

    A scorecard's ``average`` reference (Regulation B's "average applicant"), computed once
    when the model is trained, from the party's training split, and kept in its bundle.

    >>> lay = BinLayout.of(("a", "c=x"), bins=2)
    >>> bin_shares(lay, np.array([[-1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])).tolist()
    [0.25, 0.75, 0.5]
    """
    if not len(x):
        raise ValueError("the average reference needs rows: the training split is empty")
    total = np.zeros(layout.n_bins)
    for start in range(0, len(x), chunk):
        with torch.no_grad():
            hot = layout.one_hot(torch.as_tensor(x[start:start + chunk], dtype=torch.float32))
        total += hot.numpy().sum(axis=0, dtype=np.float64)
    return total / len(x)


def summary_bin_shares(layout: BinLayout, shares: dict[str, float]) -> np.ndarray:
    """Return each bin's share under a party's noisy summary (its columns under DP).

    ``shares``: each indicator column's share (``c.missing``, ``c=v``;
    :func:`credit_data.summary.indicator_shares`). A numeric column's bins are quantiles of the
    summary's own distribution, so each holds ``1 / bins`` of the values present; its missing
    bin the missing share; a category its share (a merged one, 0 points, the rest); a flag (a
    blacklist hit) none. Post-processing of the summary: inside its epsilon.

    >>> lay = BinLayout.of(("a", "a.missing", "c=x"), bins=2)
    >>> summary_bin_shares(lay, {"a.missing": 0.2, "c=x": 0.25}).tolist()
    [0.4, 0.4, 0.2, 0.25]
    """
    out: list[float] = []
    for g in layout.groups:
        if g.kind == "numeric":
            missing = shares.get(f"{g.column}.missing", 0.0) if g.missing >= 0 else 0.0
            n = len(layout.cuts) + 1
            out += [(1.0 - missing) / n] * n + ([missing] if g.missing >= 0 else [])
        elif g.kind == "onehot":
            out += [shares.get(f"{g.column}={label}", 0.0) for label in g.labels]
        else:
            out += [0.0] * len(g.labels)
    return np.asarray(out, dtype=np.float64)


def implicit_columns(layout: BinLayout) -> list[str]:
    """Return the columns with a bin of 0 points no input sets: flags, one-hot columns.

    A flag not set and a one-hot column's merged or unseen category fill none of the column's
    bins (the ``present`` flag is not one: an applicant a party does not know is the lender's
    factor).

    >>> implicit_columns(BinLayout.of(("a", "c=x", "present"), bins=2, width=4))
    ['c', 'input3']
    """
    return [g.column for g in layout.groups if g.kind in ("onehot", "flag")
            and g.column != PRESENT]


def scorecard_reasons(model: ScorecardModel, x: np.ndarray, score_points: np.ndarray,
                      card: ScorecardSettings, *, reasons: int, method: str,
                      cutoff: float | None, descriptions: dict[str, str]) -> Any:
    """Return every row's top adverse factors (``reason_i`` columns) of a one-process scorecard.

    Each party's columns count the points below their reference
    (:mod:`models.scorecard_reasons`); ``descriptions`` is the reason-code table
    (``<party>.<column>`` or ``<column>``: text).
    """
    lost = []
    parts = np.split(x, np.cumsum(list(model.widths.values()))[:-1], axis=1)
    rows = near_cutoff(score_points, cutoff) if method == "average" else None
    for (party, encoder), part in zip(model.party_encoders().items(), parts, strict=True):
        per_bin = applicant_points(encoder, part, card)
        columns = [c for c, _ in encoder.layout.bin_names()]
        per_column, names = column_points(per_bin, columns)
        table = np.array([r["points"] for r in points_table(encoder, card)])
        reference = reference_points(table, columns, method, per_column, rows,
                                     implicit_columns(encoder.layout))
        codes = [(f"{party}.{n}", descriptions.get(f"{party}.{n}", descriptions.get(n, n)))
                 for n in names]
        lost.append((points_lost(per_column, reference), codes))
    return ranked_reasons(lost, reasons)
