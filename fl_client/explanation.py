"""Each node's part of explaining a split model's scores: reason codes, computed where columns live.

Never imports flwr. The math is :mod:`models.attribution`; the messages and their kinds are
:mod:`federation.explanation`. For one scoring request:

* a passive party (:class:`PartyExplainer`) chooses its reference row alone (the mean of its own
  encoded table), embeds it and the rows along the path from it to each applicant it knows, and
  seals them for the lender;
* the lender (:class:`LenderExplainer`) computes every party's exact Shapley share of each score
  (``2^n`` head evaluations, the reference embedding standing for an absent party), splits its
  own share over its own columns, and seals each party the head's gradients along its path, in
  points, in one batched message;
* the party splits its share over its own columns (integrated gradients through its encoder)
  and seals the attributions, in points, for the lender, who ranks every applicant's adverse
  factors across all parties (:meth:`LenderExplainer.reasons`).

A party never sends a feature value: the lender learns embeddings (as in scoring) and, per
applicant and column of the party, how many points the column moved the score.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from credit_data.errors import AlignmentError, BudgetRefusal
from credit_data.saved_preprocessing import SavedPreprocessing
from credit_data.settings import LABEL_HOLDER
from credit_data.tables import PartyTable
from federation.explanation import (
    COLUMNS,
    GLOBAL_MIN_APPLICANTS,
    GRADIENTS,
    PATH,
    REFERENCE,
    UNKNOWN,
    ExplainSettings,
    exact_path,
    reason_code,
)
from federation.releases import Outside, Release, refusal
from federation.storage import write_atomic
from fl_client.list_lookup import hit_columns, list_columns
from fl_client.scoring_task import encode_table, model_settings, scorecard_of
from fl_client.sealed_exchange import channel, seal_for_lender
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState
from models.attribution import (
    breakpoints,
    column_attributions,
    exact_column_attributions,
    exact_head_gradients,
    fold_columns,
    head_gradients,
    one_hidden_layer,
    party_shares,
    path_rows,
    path_steps,
)
from models.bundle import Bundle
from models.networks import PartyEncoder
from models.scorecard import points
from models.split_training import LenderModel

__all__ = ["LenderExplainer", "LenderExplanation", "PartyExplainer", "global_table",
           "lender_gradients", "lender_reasons", "party_columns", "party_path",
           "points_per_logit", "refused", "table_reference"]


def points_per_logit(pdo: float, calibration: Sequence[float] | None) -> float:
    """Return the points one unit of the head's logit (of default) is worth (negative).

    Points fall by ``pdo / ln 2`` per unit of calibrated log-odds of default; calibration
    multiplies the head's logit by its slope.

    >>> round(points_per_logit(50.0, None), 4), round(points_per_logit(50.0, (2.0, 0.1)), 4)
    (-72.1348, -144.2695)
    """
    slope = float(calibration[0]) if calibration else 1.0
    return -pdo / float(np.log(2.0)) * slope


def _tensor(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32))


class PartyExplainer:
    """A passive party's end: its reference, its path embeddings, its column attributions.

    ``x``: the party's encoded table (every row it holds: its reference is their mean), or
    only the rows to explain with ``reference`` given (a scoring service keeps its table's
    mean: :func:`table_reference`); ``feature_names``: its encoded columns (folded back to its
    source columns); ``exact``: integrate the path in closed form
    (:func:`federation.explanation.exact_path`).
    """

    def __init__(self, encoder: PartyEncoder, x: np.ndarray, feature_names: Sequence[str],
                 settings: ExplainSettings, *, exact: bool = False,
                 reference: np.ndarray | None = None) -> None:
        if len(x) == 0 and reference is None:
            raise ValueError("a party explains with its own rows: its table is empty")
        self.encoder, self.x, self.settings = encoder.eval(), _tensor(x), settings
        self.feature_names = tuple(feature_names)
        self.reference = self.x.mean(dim=0) if reference is None else _tensor(reference)
        layers = one_hidden_layer(encoder) if exact else None
        self.first = layers[0] if layers is not None else None
        self.exact = self.first is not None

    @torch.no_grad()
    def path(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Return the reference embedding ``[1, d]`` and the embeddings along each path.

        Exact: at each row's :func:`~models.attribution.breakpoints`, ``[rows, K, d]`` (where
        they lie stays at the party); else at the quadrature's points, ``[steps, rows, d]``.
        """
        x = self.x[positions]
        if self.first is not None:
            cuts = breakpoints(self.first, x, self.reference)
            rows = self.reference + cuts.unsqueeze(-1) * (x - self.reference).unsqueeze(1)
        else:
            rows = path_rows(x, self.reference, path_steps(self.settings.steps)[0])
        out = self.encoder(rows.reshape(-1, rows.shape[-1])).reshape(*rows.shape[:2], -1)
        return {"reference": self.encoder(self.reference.unsqueeze(0)).numpy(),
                "path": out.numpy()}

    def columns(self, positions: np.ndarray, gradients: np.ndarray
                ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Return each applicant's points per source column, and the columns' names."""
        x = self.x[positions]
        cuts = torch.zeros(0)
        if self.first is not None:
            cuts = breakpoints(self.first, x, self.reference)
            expected: tuple[int, ...] = (len(positions), cuts.shape[1] - 1)
        else:
            expected = (self.settings.steps, len(positions))
        if gradients.shape[:2] != expected:
            raise ValueError(f"the lender's explanation gradients have shape {gradients.shape}, "
                             f"expected {(*expected, 'd')}")
        if self.exact:
            values = exact_column_attributions(self.encoder, x, self.reference, cuts,
                                               _tensor(gradients))
        else:
            values = column_attributions(self.encoder, x, self.reference, _tensor(gradients),
                                         self.settings.steps)
        folded, names = fold_columns(values.detach().numpy().astype(np.float64),
                                     self.feature_names)
        return folded.astype(np.float32), names


def mean_abs_shares(shares: np.ndarray, parties: Sequence[str]) -> dict[str, float | None]:
    """Return each party's mean |share| over the explained rows (None below the floor).

    >>> mean_abs_shares(np.ones((3, 2)), ["lender", "bureau"])
    {'lender': None, 'bureau': None}
    """
    enough = len(shares) >= GLOBAL_MIN_APPLICANTS
    return {p: float(np.abs(shares[:, i]).mean()) if enough else None
            for i, p in enumerate(parties)}


def global_table(party: str, attributions: np.ndarray, names: Sequence[str],
                 settings: ExplainSettings) -> list[dict[str, object]]:
    """Return a party's global explanation: per column, mean |points| and direction.

    Computed at the party over the applicants it explained; only this table is shared, and
    only over at least :data:`GLOBAL_MIN_APPLICANTS` of them (else it is empty).

    >>> global_table("bureau", np.array([[-2.0, 1.0], [-4.0, -1.0]] * 25), ["a", "b"],
    ...              ExplainSettings())[0]["mean_abs_points"]
    3.0
    >>> global_table("bureau", np.array([[-2.0, 1.0]]), ["a", "b"], ExplainSettings())
    []
    """
    if len(attributions) < GLOBAL_MIN_APPLICANTS:
        return []
    rows = []
    for j, name in enumerate(names):
        column = attributions[:, j] if len(attributions) else np.zeros(0)
        code, text = reason_code(settings, party, name)
        rows.append({"party": party, "code": code, "description": text,
                     "mean_abs_points": float(np.abs(column).mean()) if len(column) else 0.0,
                     "mean_points": float(column.mean()) if len(column) else 0.0})
    return sorted(rows, key=lambda r: -float(r["mean_abs_points"]))  # type: ignore[arg-type]


@dataclass
class LenderExplanation:
    """What the lender keeps between its two steps: shares and its own attributions, in points."""

    shares: np.ndarray  # [rows, 1 + passive]: lender first
    own: np.ndarray  # [rows, lender columns]
    own_names: tuple[str, ...]
    base_points: float


class LenderExplainer:
    """The lender's end: Shapley shares over the parties, its own columns, the ranking.

    ``x``: the lender's model inputs of its own (its encoded columns, then any blacklist hits);
    ``scale``: points per unit of the head's logit (:func:`points_per_logit`); ``offset``:
    the points of a head logit of 0; ``reference``: the lender's reference row (default: the
    mean of ``x``, the applicants scored; a scoring service's request of one applicant takes
    the mean of the lender's own table instead).
    """

    def __init__(self, model: LenderModel, x: np.ndarray, feature_names: Sequence[str],
                 settings: ExplainSettings, *, scale: float, offset: float,
                 exact: bool = False, reference: np.ndarray | None = None) -> None:
        self.model, self.settings = model.eval(), settings
        self.exact = (exact and one_hidden_layer(model.head) is not None
                      and one_hidden_layer(model.encoder) is not None)
        if len(feature_names) != x.shape[1]:
            raise ValueError(f"the lender's design has {x.shape[1]} columns and "
                             f"{len(feature_names)} names")
        self.x, self.feature_names = _tensor(x), tuple(feature_names)
        self.reference = self.x.mean(dim=0) if reference is None else _tensor(reference)
        self.scale, self.offset = scale, offset
        self.passive = tuple(model.passive)

    def _head(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.head(z)

    def _absent(self, party: str) -> torch.Tensor:
        """Return the "unknown applicant" vector of ``party``, ``[1, d]``."""
        layer = self.model.absent[party]
        assert isinstance(layer, torch.nn.Linear)
        return layer.weight[:, 0].unsqueeze(0)

    @torch.no_grad()
    def _actual(self, masks: dict[str, np.ndarray], embeddings: dict[str, np.ndarray]
                ) -> list[torch.Tensor]:
        actual = [self.model.encoder(self.x)]
        for party in self.passive:
            absent = self._absent(party)
            mask = masks.get(party, np.zeros(len(self.x), dtype=bool))
            values = absent.repeat(len(self.x), 1)
            if mask.any():
                values[torch.as_tensor(mask)] = _tensor(embeddings[party])
            actual.append(values)
        return actual

    def explain(self, masks: dict[str, np.ndarray], embeddings: dict[str, np.ndarray],
                paths: dict[str, dict[str, np.ndarray]]
                ) -> tuple[LenderExplanation, dict[str, np.ndarray]]:
        """Return the shares and own attributions, and each party's gradients along its path.

        ``embeddings[p]``: the embeddings party ``p`` sent for the applicants it knows
        (``masks[p]``); ``paths[p]``: its :meth:`PartyExplainer.path`.
        """
        actual = self._actual(masks, embeddings)
        with torch.no_grad():
            reference = [self.model.encoder(self.reference.unsqueeze(0))]
        for party in self.passive:
            # a party that sent no path is stood for by its "unknown applicant" vector
            reference.append(_tensor(paths[party]["reference"]) if party in paths
                             else self._absent(party).detach())
        shares, _, base = party_shares(self._head, actual, reference)
        own = self._own(actual, reference)
        folded, names = fold_columns(own.detach().numpy().astype(np.float64) * self.scale,
                                     self.feature_names)
        grads: dict[str, np.ndarray] = {}
        for i, party in enumerate(self.passive, start=1):
            if party not in paths:
                continue
            known = torch.as_tensor(masks[party])
            mine = [a[known] for a in actual]
            if self.exact:
                g = exact_head_gradients(self.model.head, mine, reference, i,
                                         _tensor(paths[party]["path"]))
            else:
                g = head_gradients(self._head, mine, reference, i, _tensor(paths[party]["path"]))
            grads[party] = (g.numpy() * self.scale).astype(np.float32)
        base_points = float(self.offset + self.scale * float(base[0]))
        return LenderExplanation(shares=shares.numpy().astype(np.float64) * self.scale,
                                 own=folded, own_names=names, base_points=base_points), grads

    def _own(self, actual: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        """Return the lender's own columns' attributions (in logits), all computed here."""
        encoder = self.model.encoder
        layers = one_hidden_layer(encoder)
        if self.exact and layers is not None:
            cuts = breakpoints(layers[0], self.x, self.reference)
            with torch.no_grad():
                rows = self.reference + cuts.unsqueeze(-1) * (self.x - self.reference).unsqueeze(1)
                points = encoder(rows.reshape(-1, rows.shape[-1])).reshape(*rows.shape[:2], -1)
            grads = exact_head_gradients(self.model.head, actual, reference, 0, points)
            return exact_column_attributions(encoder, self.x, self.reference, cuts, grads)
        steps = self.settings.steps
        alphas, _ = path_steps(steps)
        with torch.no_grad():
            path = encoder(path_rows(self.x, self.reference, alphas).reshape(
                -1, self.x.shape[1])).reshape(steps, len(self.x), -1)
        grads = head_gradients(self._head, actual, reference, 0, path)
        return column_attributions(encoder, self.x, self.reference, grads, steps)

    def reasons(self, kept: LenderExplanation, masks: dict[str, np.ndarray],
                columns: Mapping[str, tuple[np.ndarray, Sequence[str]]]) -> pd.DataFrame:
        """Return each applicant's top adverse factors across every party, ranked by points lost.

        ``columns[p]``: party ``p``'s attributions of the applicants it knows and their names;
        an applicant a party does not know gets one factor, that party's whole share
        (:data:`federation.explanation.UNKNOWN`); a party that sent no columns counts as one
        factor too. Columns: ``reason_i`` (code), ``reason_i_text``, ``reason_i_points`` (points
        it cost, > 0).
        """
        rows = len(kept.own)
        factors = [kept.own]
        codes = [reason_code(self.settings, "lender", n) for n in kept.own_names]
        for i, party in enumerate(self.passive, start=1):
            mask = masks.get(party, np.zeros(rows, dtype=bool))
            share = kept.shares[:, i]
            if party in columns:
                values, names = columns[party]
                block = np.zeros((rows, len(names)))
                block[mask] = values
                factors.append(block)
                codes += [reason_code(self.settings, party, n) for n in names]
                whole = np.where(mask, 0.0, share)  # not known: its share is one factor
            else:
                whole = share
            factors.append(whole[:, None])
            codes.append(reason_code(self.settings, party, UNKNOWN if party in columns
                                     else "all columns"))
        points = np.concatenate(factors, axis=1)
        k = self.settings.reasons
        order = np.argsort(points, axis=1, kind="stable")[:, :k]
        out: dict[str, object] = {}
        for r in range(k):
            picked = points[np.arange(rows), order[:, r]] if points.shape[1] > r else None
            adverse = picked < 0 if picked is not None else np.zeros(rows, dtype=bool)
            index = order[:, r] if points.shape[1] > r else np.zeros(rows, dtype=np.int64)
            out[f"reason_{r + 1}"] = np.where(adverse, [codes[j][0] for j in index], "")
            out[f"reason_{r + 1}_text"] = np.where(adverse, [codes[j][1] for j in index], "")
            out[f"reason_{r + 1}_points"] = np.where(
                adverse, np.round(-picked if picked is not None else 0.0, 2), 0.0)
        return pd.DataFrame(out)


# --- a scoring request's explanation, at each node (the handlers are in fl_client.scoring_app) ---

EXPLANATION_FILE = "explanation.npz"
"""The lender's shares and own attributions between its two steps (its own disk, 0600)."""


def outside(party: str) -> Outside:
    """Return what explaining releases outside any epsilon at a passive party."""
    return Outside(Release.explanations, party, LABEL_HOLDER, (
        "explaining scores sends the lender, per applicant it knows, the embeddings along the "
        "path from its reference row to the applicant's row and the points each of its columns "
        "moved the score: a deterministic function of the row, which says on which side of the "
        "reference each column lies"))


def refused(settings: ClientSettings) -> str | None:
    """Say why this node does not split its share over its columns (None: it does)."""
    if not settings.explain.enabled:
        return f"{settings.party}: explain.enabled is false"
    return refusal((outside(settings.party),),
                   capped=settings.privacy.max_epsilon is not None, opted=settings.opt_in)


_REFERENCES: dict[tuple[str, str, str], np.ndarray] = {}
"""A scoring service's references, per (model, party, table fingerprint): its table's mean."""


def table_reference(bundle: Bundle, table: PartyTable, fingerprint: str) -> np.ndarray:
    """Return the mean of the party's encoded table, encoded once per model and table.

    A scoring service keeps it (in the node's memory, for the worker's life) instead of
    encoding its whole table again for every request; ``fingerprint`` names the table (the
    one the service started on, which every request checks).
    """
    key = (bundle.model_id, bundle.party, fingerprint)
    if key not in _REFERENCES:
        _REFERENCES[key] = _tensor(encode_table(bundle, table)[0]).mean(dim=0).numpy()
    return _REFERENCES[key]


def _party_explainer(bundle: Bundle, table: PartyTable, settings: ClientSettings,
                     positions: np.ndarray, reference: np.ndarray | None
                     ) -> tuple[PartyExplainer, np.ndarray]:
    """Return the party's explainer and where its applicants are among the rows it encoded.

    With ``reference`` (a scoring service's), only the applicants' rows are encoded.
    """
    m = bundle.manifest
    model = model_settings(m)
    x, _ = encode_table(bundle, table, None if reference is None else positions)
    encoder = PartyEncoder(x.shape[1], model.encoder_hidden, model.embedding_dim, model.dropout)
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in bundle.weights.items()})
    names = SavedPreprocessing.from_json_dict(bundle.preprocessing[bundle.party]).feature_names
    return PartyExplainer(encoder, x, names, settings.explain, exact=exact_path(
        settings.explain, model.encoder_hidden, model.hidden), reference=reference), (
        positions if reference is None else np.arange(len(positions)))


def party_path(bundle: Bundle, table: PartyTable, settings: ClientSettings, state: NodeState,
               *, counter: tuple[int, ...] = (0,), reference: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
    """Return this party's sealed reference and path (empty where it does not explain).

    The applicants are those the lender's sealed list named (``state.positions``, kept by
    the embedding step); ``counter``: what the arrays are sealed at (a scoring service's
    request number: one request's path does not open in another); ``reference``: its
    reference row when kept (:func:`table_reference`; default: the mean of ``table``).
    """
    if refused(settings) is not None or state.positions is None:
        return {}
    explainer, rows = _party_explainer(bundle, table, settings, state.positions, reference)
    out = explainer.path(rows)
    return seal_for_lender(settings, state, {"reference": REFERENCE, "path": PATH}, counter, out)


def party_columns(bundle: Bundle, table: PartyTable, settings: ClientSettings,
                  state: NodeState, sealed: np.ndarray, *, counter: tuple[int, ...] = (0,),
                  reference: np.ndarray | None = None
                  ) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
    """Open the lender's gradients; return the sealed columns, their names, and the counts.

    The counts carry the party's global table (mean |points| and direction per column, over
    the applicants explained): computed here, shared only as that table. ``reference``: as
    :func:`party_path`'s.
    """
    why = refused(settings)
    if why is not None or state.positions is None:
        raise BudgetRefusal(why or f"{settings.party}: no applicants to explain in this request")
    gradients = channel(settings, state.keys, LABEL_HOLDER).open(GRADIENTS, counter, sealed)
    explainer, rows = _party_explainer(bundle, table, settings, state.positions, reference)
    values, names = explainer.columns(rows, gradients)
    info = {"explained": len(values), "outside_epsilon": [Release.explanations.value],
            "global": global_table(settings.party, values, names, settings.explain)}
    return (seal_for_lender(settings, state, {"columns": COLUMNS}, counter, {"columns": values}),
            list(names), info)


def _lender_parts(bundle: Bundle, table: PartyTable, settings: ClientSettings,
                  state: NodeState, holders: Sequence[str],
                  own_reference: np.ndarray | None = None
                  ) -> tuple[LenderExplainer, dict[str, np.ndarray]]:
    m = bundle.manifest
    x, _ = encode_table(bundle, table)
    width = x.shape[1]
    x = np.hstack([x, hit_columns(len(x), list(holders), state.listed)])
    reference = None
    if own_reference is not None:  # the mean of the lender's own table, on no list
        reference = np.zeros(x.shape[1], dtype=np.float64)
        reference[:width] = own_reference
    model_cfg = model_settings(m)
    passive = tuple(m["passive"])
    model = LenderModel(x.shape[1], passive, model_cfg)
    model.load_state_dict(bundle.weights)
    names = [*SavedPreprocessing.from_json_dict(bundle.preprocessing[bundle.party]).feature_names,
             *list_columns(list(holders))]  # the hit columns hit_columns appended
    calibration = m["calibration"] or None
    card = scorecard_of(m)
    scale = points_per_logit(card.pdo, calibration)
    # points = points(1/2) - (pdo / ln 2) * (slope * logit + intercept) = offset + scale * logit
    offset = float(points(0.5, card)) + (float(calibration[1]) * scale / float(calibration[0])
                                         if calibration else 0.0)
    masks = {p: state.masks.get(p, np.zeros(len(x), dtype=bool)) for p in passive}
    return LenderExplainer(model, x, names, settings.explain, scale=scale,
                           offset=offset, exact=exact_path(settings.explain,
                                                           model_cfg.encoder_hidden,
                                                           model_cfg.hidden),
                           reference=reference), masks


def lender_gradients(bundle: Bundle, table: PartyTable, settings: ClientSettings,
                     state: NodeState, holders: Sequence[str],
                     embeddings: dict[str, np.ndarray], sealed: dict[str, dict[str, np.ndarray]],
                     *, counter: tuple[int, ...] = (0,),
                     own_reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Compute the shares and the lender's own columns; seal each party its path's gradients.

    ``sealed[p]``: party ``p``'s sealed reference and path (parties that do not explain sent
    none: their share is one factor). What the lender keeps for :func:`lender_reasons` is
    written to its own disk. ``own_reference``: the lender's reference row of its own columns
    (a scoring service's: the mean of its own table, :func:`table_reference`; default: the
    mean of ``table``'s).
    """
    explainer, masks = _lender_parts(bundle, table, settings, state, holders, own_reference)
    paths = {p: {name: channel(settings, state.keys, p).open(kind, counter, blob[name])
                 for name, kind in (("reference", REFERENCE), ("path", PATH))}
             for p, blob in sealed.items()}
    kept, grads = explainer.explain(masks, embeddings, paths)
    if settings.state_dir:
        buffer = io.BytesIO()
        np.savez(buffer, shares=kept.shares, own=kept.own,
                 own_names=np.array(kept.own_names, dtype=str),
                 base_points=np.array(kept.base_points))
        write_atomic(Path(settings.state_dir) / settings.party / EXPLANATION_FILE,
                     buffer.getvalue(), mode=0o600)
    return {p: channel(settings, state.keys, p).seal(GRADIENTS, counter, g)
            for p, g in grads.items()}


def lender_reasons(bundle: Bundle, table: PartyTable, settings: ClientSettings,
                   state: NodeState, holders: Sequence[str],
                   columns: dict[str, tuple[np.ndarray, list[str]]],
                   *, counter: tuple[int, ...] = (0,)) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Open each party's columns; return the reason columns of ``scores.csv`` and the counts.

    The counts hold the lender's own global table and each party's mean |share| in points.
    """
    explainer, masks = _lender_parts(bundle, table, settings, state, holders)
    if not settings.state_dir:
        raise BudgetRefusal(f"{settings.party}: no state directory: nothing kept to explain")
    with np.load(Path(settings.state_dir) / settings.party / EXPLANATION_FILE,
                 allow_pickle=False) as saved:
        kept = LenderExplanation(shares=saved["shares"], own=saved["own"],
                                 own_names=tuple(str(n) for n in saved["own_names"]),
                                 base_points=float(saved["base_points"]))
    opened = {p: (channel(settings, state.keys, p).open(COLUMNS, counter, blob), names)
              for p, (blob, names) in columns.items()}
    for p, (values, _) in opened.items():
        if len(values) != int(masks[p].sum()):
            raise AlignmentError(f"{p} explained {len(values)} applicants, it knows "
                                 f"{int(masks[p].sum())}")
    reasons = explainer.reasons(kept, masks, opened)
    gaps = {p: float(np.abs(values.sum(1) - kept.shares[masks[p], 1 + explainer.passive.index(
        p)]).max() / abs(explainer.scale)) if len(values) else 0.0
        for p, (values, _) in opened.items()}
    gaps["lender"] = float(np.abs(kept.own.sum(1) - kept.shares[:, 0]).max()
                           / abs(explainer.scale)) if len(kept.own) else 0.0
    parties = ("lender", *explainer.passive)
    return reasons, {
        "explained": len(reasons), "reasons": settings.explain.reasons,
        "method": "exact" if explainer.exact else "gauss_legendre",
        "base_points": kept.base_points,
        "mean_abs_share": mean_abs_shares(kept.shares, parties),
        "columns_from": sorted(opened), "completeness_gap_logodds": gaps,
        "global": {"lender": global_table("lender", kept.own, kept.own_names,
                                          settings.explain)}}
