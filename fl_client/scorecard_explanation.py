"""Reason codes of a vertical scorecard, each party's part computed on its own rows. No flwr.

A scorecard's score is the lender's intercept plus each party's partial score, and a party's
partial score is one bin's points per column, so what a column cost an applicant is exact: its
reference points less the points of the applicant's bin (:mod:`models.scorecard_reasons`, the
two methods of the Regulation B commentary, ``explain.scorecard_reference``). For one scoring
request, with no round beyond scoring's:

* each passive party (:func:`party_codes`), beside its partial scores, counts on its own rows
  what each of its columns cost each applicant it knows, and seals for the lender only each
  applicant's top ``explain.reasons`` adverse codes with what each cost (log-odds), the sum of
  its columns' reference points and its codes' names and descriptions (its own reason-code
  table): never a feature value, a bin or a column that cost nothing;
* the lender (:func:`lender_codes`) counts its own columns alike, turns every party's costs
  into points with the score's own scaling (and calibration) and ranks every applicant's
  adverse factors across the parties. An applicant a party does not know costs that party's
  reference less its "absent" partial score: one factor, ``<party>.unknown``.

The attributions add up: per applicant, the points lost summed over the parties (each party's
total is its reference less its partial score, which the lender holds) equal the reference's
points less the applicant's points.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from credit_data.errors import AlignmentError, ConfigError
from credit_data.settings import LABEL_HOLDER
from credit_data.tables import PartyTable
from federation.explanation import (
    CARD_CODES,
    CARD_LOST,
    CARD_NAMES,
    CARD_TOTAL,
    UNKNOWN,
    ExplainSettings,
    reason_code,
)
from federation.releases import Release
from federation.storage import write_atomic
from fl_client.explanation import EXPLANATION_FILE, global_table, mean_abs_shares, refused
from fl_client.list_lookup import hit_columns, list_columns
from fl_client.scoring_task import encode_table, model_settings, scorecard_of
from fl_client.sealed_exchange import channel, seal_for_lender
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState
from models.binned_scorecard import ScorecardEncoder, factor_offset, implicit_columns
from models.bundle import Bundle
from models.factory import party_encoder
from models.scorecard_reasons import column_points, points_lost, ranked_reasons, reference_points
from models.settings import ModelKind
from models.split_training import LenderModel

__all__ = ["column_costs", "is_scorecard", "lender_codes", "party_codes", "saved_shares",
           "top_codes"]

_KINDS = {"codes": CARD_CODES, "lost": CARD_LOST, "total": CARD_TOTAL, "names": CARD_NAMES}


def is_scorecard(bundle: Bundle) -> bool:
    """Say whether a bundle holds a scorecard's part (else a split network's)."""
    return model_settings(bundle.manifest).kind is ModelKind.scorecard


def column_costs(encoder: ScorecardEncoder, x: np.ndarray, method: str,
                 shares: np.ndarray | None = None) -> tuple[np.ndarray, list[str], float]:
    """Return what each column cost each row (log-odds of default), the names, the reference.

    The reference is the sum of the columns' reference points, in log-odds of good (so that a
    row's costs add up to ``reference + partial score``). A one-hot or flag column's reference
    under ``maximum`` counts its implicit bin of 0 (a merged category, a flag not set) too; the
    ``present`` flag only its own bin (a party's unknown applicant is the lender's factor).
    ``average`` averages the bins' points with each bin's ``shares`` (the bundle's, saved at
    training: :func:`saved_shares`; default: the rows ``x`` themselves).

    >>> from models.binned_scorecard import BinLayout
    >>> enc = ScorecardEncoder(BinLayout.of(("a",), bins=2))
    >>> _ = enc.embed.weight.data.copy_(torch.tensor([[0.5, -0.25]]))  # q1 riskier
    >>> lost, names, total = column_costs(enc, np.array([[-1.0], [1.0]]), "maximum")
    >>> lost.tolist(), names, total
    ([[0.75], [0.0]], ['a'], 0.25)
    """
    encoder.project()
    weights = encoder.embed.weight.detach().cpu().numpy()[0].astype(np.float64)
    columns = [c for c, _ in encoder.layout.bin_names()]

    def points(rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        with torch.no_grad():
            hot = encoder.layout.one_hot(torch.as_tensor(rows, dtype=torch.float32)).numpy()
        return column_points(-hot.astype(np.float64) * weights[None, :], columns)

    own, names = points(x)
    among = own
    if shares is not None and method == "average":
        if len(shares) != len(weights):
            raise ConfigError(f"the saved average reference has {len(shares)} bins, the "
                              f"scorecard {len(weights)}")
        among = column_points(-(shares * weights)[None, :], columns)[0]
    reference = reference_points(-weights, columns, method, among,
                                 implicit=implicit_columns(encoder.layout))
    return points_lost(own, reference), names, float(reference.sum())


def top_codes(lost: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return each row's ``k`` costliest adverse columns (index, -1 for none) and their costs.

    >>> codes, costs = top_codes(np.array([[0.5, -1.0, 2.0]]), 2)
    >>> codes.tolist(), costs.tolist()
    ([[2, 0]], [[2.0, 0.5]])
    """
    k = min(k, lost.shape[1])
    order = np.argsort(-lost, axis=1, kind="stable")[:, :k]
    costs = np.take_along_axis(lost, order, axis=1)
    adverse = costs > 0
    return (np.where(adverse, order, -1).astype(np.int32),
            np.where(adverse, costs, 0.0).astype(np.float32))


def _encoder(bundle: Bundle, width: int) -> ScorecardEncoder:
    m = bundle.manifest
    encoder = party_encoder(model_settings(m), width, tuple(m["columns"]["features"]))
    if not isinstance(encoder, ScorecardEncoder):
        raise ConfigError(f"{bundle.party}: the bundle is not a scorecard's")
    encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in bundle.weights.items()})
    return encoder


def saved_shares(bundle: Bundle, method: str) -> np.ndarray | None:
    """Return the bins' shares of the bundle's ``average`` reference (None under ``maximum``).

    Saved when the model was trained (:func:`fl_client.party_bundle.average_reference`): the
    party's training split, or its noisy summary under DP. A bundle written before it was
    saved is refused, naming the key.
    """
    if method != "average":
        return None
    saved = bundle.manifest.get("scorecard_table", {}).get("average")
    if not isinstance(saved, dict) or "shares" not in saved:
        raise ConfigError(f"{bundle.party}: its scorecard bundle keeps no average reference "
                          "(scorecard_table.average: trained before it was saved); train the "
                          "model again, or set explain.scorecard_reference=maximum")
    return np.asarray(saved["shares"], dtype=np.float64)


def _method(settings: ExplainSettings, party: str) -> str:
    if settings.scorecard_reference == "average" and settings.cutoff is not None:
        raise ConfigError(f"{party}: explain.cutoff needs every applicant's score at each party "
                          "of a vertical scorecard, which only the lender holds; use "
                          "explain.scorecard_reference=maximum, or average without a cutoff")
    return settings.scorecard_reference


def party_codes(bundle: Bundle, table: PartyTable, settings: ClientSettings, state: NodeState,
                *, counter: tuple[int, ...] = (0,)) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Return this party's sealed top codes and its counts (both empty where it does not explain).

    The applicants are those the lender's sealed list named (``state.positions``, kept by the
    embedding step); the ``average`` reference is the one its bundle saved at training
    (:func:`saved_shares`), so that neither a request's applicants nor the table a service
    runs on move it. The counts carry the party's
    global table (per column, mean |points| and mean points against the reference, over the
    applicants it explained): computed here, shared only as that table.
    """
    if refused(settings) is not None or state.positions is None:
        return {}, {}
    e = settings.explain
    x, _ = encode_table(bundle, table, state.positions)
    method = _method(e, settings.party)
    lost, names, total = column_costs(_encoder(bundle, x.shape[1]), x, method,
                                      saved_shares(bundle, method))
    codes, costs = top_codes(lost, e.reasons)
    described = [list(reason_code(e, settings.party, n)) for n in names]
    factor = settings.scorecard.pdo / math.log(2)
    info = {"explained": len(x), "outside_epsilon": [Release.explanations.value],
            "global": global_table(settings.party, -lost * factor, names, e)}
    sealed = seal_for_lender(settings, state, _KINDS, counter, {
        "codes": codes, "lost": costs, "total": np.array([total]),
        "names": np.frombuffer(json.dumps(described).encode(), dtype=np.uint8)})
    return sealed, info


def _opened(settings: ClientSettings, state: NodeState, party: str,
            blobs: dict[str, np.ndarray], counter: tuple[int, ...]
            ) -> tuple[np.ndarray, np.ndarray, float, list]:
    side = channel(settings, state.keys, party)
    got = {name: side.open(kind, counter, blobs[name]) for name, kind in _KINDS.items()}
    names = json.loads(got["names"].tobytes().decode())
    return got["codes"], got["lost"], float(got["total"][0]), names


def lender_codes(bundle: Bundle, table: PartyTable, settings: ClientSettings, state: NodeState,
                 holders: Sequence[str], partial: dict[str, np.ndarray],
                 sealed: dict[str, dict[str, np.ndarray]], *, counter: tuple[int, ...] = (0,)
                 ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank every applicant's reasons across the parties; return them and the counts.

    The ``average`` reference of the lender's columns is its bundle's (:func:`saved_shares`).

    ``partial[p]``: the partial scores (log-odds) party ``p`` sent for the applicants it knows
    (``state.masks[p]``); ``sealed[p]``: its sealed codes (a party that sent none counts as one
    factor, ``<p>.all columns``, against the average of its partial scores). The shares (each
    party's points against the reference, summing to the score less the reference's points) are
    kept on the lender's disk as a split network's are.
    """
    m, e = bundle.manifest, settings.explain
    method = _method(e, settings.party)
    x = _lender_rows(bundle, table, holders, state)
    passive = tuple(m["passive"])
    model = LenderModel(x.shape[1], passive, model_settings(m), tuple(m["columns"]["features"]))
    model.load_state_dict(bundle.weights)
    encoder = model.encoder
    assert isinstance(encoder, ScorecardEncoder)
    factor, offset = factor_offset(scorecard_of(m))
    slope, shift = tuple(m["calibration"]) if m.get("calibration") else (1.0, 0.0)
    scale = factor * float(slope)  # points per log-odds of the model's own logit
    lost, names, total = column_costs(encoder, x, method, saved_shares(bundle, method))
    names = _hit_names(names, len(m["columns"]["features"]), list(holders))
    with torch.no_grad():
        own_partial = encoder(torch.as_tensor(x, dtype=torch.float32)).numpy()[:, 0]
    rows = len(x)
    blocks = [(lost * scale, [reason_code(e, LABEL_HOLDER, n) for n in names])]
    totals = [lost.sum(axis=1)]
    references = total
    for party in passive:
        party_blocks, whole, reference = _party_share(settings, state, model, party, rows,
                                                      scale, partial, sealed, counter)
        blocks += party_blocks
        totals.append(whole)
        references += reference
    base = offset - factor * float(shift) - scale * float(_intercept(model)) + scale * references
    shares = -np.stack(totals, axis=1) * scale
    reasons = ranked_reasons(blocks, e.reasons)
    if settings.state_dir:  # the shares, as a split network's: base + shares = points
        _keep_shares(settings, shares, -lost * scale, names, base)
    gap = float(np.abs(lost.sum(axis=1) - (total + own_partial)).max()) if rows else 0.0
    parties = (LABEL_HOLDER, *passive)
    return reasons, {
        "explained": rows, "reasons": e.reasons, "method": f"scorecard {method}",
        "base_points": base,
        "mean_abs_share": mean_abs_shares(shares, parties),
        "columns_from": [p for p in passive if p in sealed],
        "completeness_gap_logodds": {LABEL_HOLDER: gap},
        "global": {LABEL_HOLDER: global_table(LABEL_HOLDER, -lost * scale, names, e)}}


def _lender_rows(bundle: Bundle, table: PartyTable, holders: Sequence[str], state: NodeState
                 ) -> np.ndarray:
    """Return the applicants' encoded rows with their hit columns."""
    x, _ = encode_table(bundle, table)
    return np.hstack([x, hit_columns(len(x), list(holders), state.listed)])


def _hit_names(names: list[str], own_width: int, holders: list[str]) -> list[str]:
    """Name the hit columns after their lists (the encoder calls them ``input<k>``)."""
    hits = list_columns(holders)
    return [hits[int(n[5:]) - own_width] if n.startswith("input") and n[5:].isdigit()
            and 0 <= int(n[5:]) - own_width < len(hits) else n for n in names]


def _party_share(settings: ClientSettings, state: NodeState, model: LenderModel, party: str,
                 rows: int, scale: float, partial: dict[str, np.ndarray],
                 sealed: dict[str, dict[str, np.ndarray]], counter: tuple[int, ...]
                 ) -> tuple[list[tuple[np.ndarray, list]], np.ndarray, float]:
    """Return a passive party's reason blocks (points), its columns' cost in all, its reference.

    A party that sent sealed codes has one reason per column it described; one that sent none
    is one factor, against the average of its partial scores.
    """
    e = settings.explain
    mask = state.masks.get(party, np.zeros(rows, dtype=bool))
    scores = np.asarray(partial.get(party, np.zeros((0, 1))), dtype=np.float64)[:, 0]
    if len(scores) != int(mask.sum()):
        raise AlignmentError(f"{party} sent {len(scores)} partial scores for "
                             f"{int(mask.sum())} applicants it knows")
    layer = model.absent[party]
    assert isinstance(layer, torch.nn.Linear)
    absent = float(layer.weight.detach()[0, 0])
    logits = np.full(rows, absent)
    logits[mask] = scores
    blocks: list[tuple[np.ndarray, list]] = []
    if party in sealed:
        codes, costs, reference, described = _opened(settings, state, party, sealed[party],
                                                     counter)
        if len(codes) != int(mask.sum()):
            raise AlignmentError(f"{party} explained {len(codes)} applicants, it knows "
                                 f"{int(mask.sum())}")
        block = np.zeros((rows, len(described)))
        where = np.flatnonzero(mask)
        for j in range(codes.shape[1]):
            picked = codes[:, j] >= 0
            block[where[picked], codes[picked, j]] = costs[picked, j]
        blocks.append((block * scale, [tuple(d) for d in described]))
        factor_code = reason_code(e, party, UNKNOWN)
    else:  # its share is one factor, against its average applicant
        reference = float(-scores.mean()) if len(scores) else -absent
        factor_code = reason_code(e, party, "all columns")
    whole = reference + logits  # what the party's columns cost, in all
    blocks.append((np.where(mask & (party in sealed), 0.0, whole)[:, None] * scale,
                   [factor_code]))
    return blocks, whole, reference


def _keep_shares(settings: ClientSettings, shares: np.ndarray, own: np.ndarray,
                 names: list[str], base: float) -> None:
    """Keep the shares on the lender's disk, as a split network's: base + shares = points."""
    buffer = io.BytesIO()
    np.savez(buffer, shares=shares, own=own, own_names=np.array(names, dtype=str),
             base_points=np.array(base))
    write_atomic(Path(str(settings.state_dir)) / settings.party / EXPLANATION_FILE,
                 buffer.getvalue(), mode=0o600)


def _intercept(model: LenderModel) -> float:
    """Return the head's intercept (log-odds): the scorecard's sum head's bias."""
    head = [layer for layer in model.head.modules() if isinstance(layer, torch.nn.Linear)][-1]
    return float(head.bias.detach()[0])
