"""Blacklist lookups at the nodes (no Flower here): the holder answers, the lender learns hits.

The protocol and who learns what: :mod:`federation.blacklist`. A holder node holds its list
only (its "rows" are the listed IDs, with no columns). In ``lookup`` mode the lender's hits
become its own input columns, ``on_list_<holder>`` per holder and ``blacklist_hits`` (how many
lists name the applicant), appended after its preprocessed columns: 0/1 and a count need no
scaling, and the lender's bundle names them so that scoring appends them the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from credit_data.errors import AlignmentError
from credit_data.vertical import NodeRows
from federation.blacklist import ListHolder, listed, lookup_request
from federation.settings import HitRule, ListMode
from fl_client.settings import ClientSettings

HITS_COLUMN = "blacklist_hits"


def list_columns(holders: tuple[str, ...] | list[str]) -> list[str]:
    """Return the lender's hit columns for these holders (none without holders).

    >>> list_columns(["consortium", "telco"])
    ['on_list_consortium', 'on_list_telco', 'blacklist_hits']
    """
    return [f"on_list_{h}" for h in holders] + ([HITS_COLUMN] if holders else [])


def holder_rows(holder: str, ids: list[str]) -> NodeRows:
    """Return a holder node's "rows": the IDs on its list, and no column."""
    n = len(ids)
    return NodeRows(party=holder, ids=ids, x=np.zeros((n, 0), np.float32),
                    split=np.zeros(n, np.int8), names=())


def is_holder(settings: ClientSettings) -> bool:
    """Return whether this node is a blacklist holder."""
    return settings.party in settings.blacklists.holders


def holder_answer(settings: ClientSettings, ids: list[str], request: bytes, asked: int,
                  lender: str) -> tuple[bytes, bytes, dict[str, float]]:
    """Answer one lookup at a holder node: charge its ledger, answer from its cached list.

    The ledger lives beside the node's cached list in a deployment (its state directory, kept
    across runs); a simulated holder keeps it in the run's directory (a fresh holder per run).
    """
    b = settings.blacklists
    cache = Path(settings.psi_cache) if settings.psi_cache else None
    ledger = (Path(settings.list_ledger) if settings.list_ledger
              else Path(settings.state_dir) / settings.party if settings.state_dir else None)
    holder = ListHolder(settings.party, ids, reveal=b.mode is ListMode.lookup,
                        cache_dir=cache, max_queries=b.max_queries, ledger_dir=ledger)
    setup, response = holder.answer(request, asked=asked, lender=lender)
    return setup, response, {"asked": float(asked), "list_size": float(len(ids)),
                             "setup_cached": float(holder.setup_cached)}


def lookup_key(ids: list[str], mode: ListMode, keys: dict[str, bytes]) -> bytes | None:
    """In ``cardinality`` mode, blind the applicants again for the holders; keep the key.

    A ``lookup`` reuses the lender's alignment request (the same blinded IDs): returns None.
    """
    if mode is ListMode.lookup:
        return None
    request, keys["list"] = lookup_request(ids, reveal=False)
    return request


def lender_hits(ids: list[str], mode: ListMode, keys: dict[str, bytes],
                answers: dict[str, tuple[bytes, bytes]]) -> dict[str, np.ndarray | int]:
    """Return, per holder, the hit mask (``lookup``) or the count (``cardinality``)."""
    reveal = mode is ListMode.lookup
    key = keys["psi"] if reveal else keys.get("list")
    if key is None:
        raise AlignmentError("lender: no blinded lookup request of this run to read the "
                             "holders' answers with")
    return {h: listed(key, len(ids), setup, response, reveal=reveal)
            for h, (setup, response) in answers.items()}


def hit_columns(n: int, holders: list[str], hits: dict[str, np.ndarray]) -> np.ndarray:
    """Return the hit columns of ``n`` applicants: per holder, then their count."""
    if not holders:
        return np.zeros((n, 0), np.float32)
    columns = np.column_stack([hits.get(h, np.zeros(n, bool)).astype(np.float32)
                               for h in holders])
    return np.hstack([columns, columns.sum(axis=1, keepdims=True)]).astype(np.float32)


def with_hits(rows: NodeRows, hits: dict[str, np.ndarray]) -> NodeRows:
    """Return the lender's rows with its hit columns appended (unchanged without hits)."""
    if not hits:
        return rows
    x = np.hstack([rows.x, hit_columns(len(rows.ids), list(hits), hits)])
    return dataclasses.replace(rows, x=x, names=rows.names + tuple(list_columns(list(hits))))


def decisions(hits: dict[str, np.ndarray], n: int, rule: HitRule) -> np.ndarray:
    """Apply ``blacklists.on_hit`` to each applicant: ``score`` unless a rule overrides it.

    >>> decisions({"a": np.array([True, False])}, 2, HitRule.decline).tolist()
    ['decline', 'score']
    """
    listed_anywhere = np.zeros(n, dtype=bool)
    for mask in hits.values():
        listed_anywhere |= mask
    if rule is HitRule.feature:
        return np.full(n, "score", dtype=object)
    return np.where(listed_anywhere, rule.value, "score").astype(object)
