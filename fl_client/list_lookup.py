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
from typing import cast

import numpy as np

from credit_data.errors import AlignmentError
from credit_data.settings import LABEL_HOLDER
from credit_data.vertical import NodeRows
from federation.alignment import channel_auth, open_key, seal_key, transcript
from federation.blacklist import ListHolder, check_answer, listed, lookup_request, sign_answer
from federation.query_ledger import Purpose
from federation.settings import HitRule, ListMode
from fl_client.queries import query_ledger
from fl_client.settings import ClientSettings

HITS_COLUMN = "blacklist_hits"
ANSWERED = "list answered"
"""A holder's node state key: this run's lookup was answered (each run answers one)."""
LOOKUP_ACTIONS = ("list_answer", "score_list_answer")


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
                  lender_key: bytes, keys: dict[str, bytes], *, purpose: Purpose,
                  per_request: bool = False) -> tuple[bytes, bytes, bytes, dict[str, float]]:
    """Answer one lookup at a holder node; return (setup, response, signature, metrics).

    Only a request the lender's node signed for this run is answered (``lender_key``: its
    signed channel key, as the parties get it), once per run (``keys``: the node's state), or
    with ``per_request`` (a scoring service: many requests in one run) each signed request
    once;
    the lender's count is charged to the node's query ledger under the lender's name and
    ``purpose`` (training, scoring or a service: :mod:`fl_client.queries`), whatever the router
    says. The answer is signed with the node's key; the metrics report the charge.
    """
    digest = transcript(request)
    answered = keys.get(ANSWERED, b"")
    if answered and not per_request:
        raise AlignmentError(f"{settings.party}: this run's lookup was answered already; a "
                             "second one is refused (a new lookup is a new run)")
    if digest in [answered[i:i + len(digest)] for i in range(0, len(answered), len(digest))]:
        raise AlignmentError(f"{settings.party}: this lookup request was answered already; a "
                             "replayed request is refused")
    auth = channel_auth(settings.party, settings.channel_keys)
    open_key(auth, lender_key, LABEL_HOLDER, digest)  # refuses a request the lender did not sign
    b = settings.blacklists
    cache = Path(settings.psi_cache) if settings.psi_cache else None
    holder = ListHolder(settings.party, ids, reveal=b.mode is ListMode.lookup,
                        cache_dir=cache, caps=settings.queries,
                        ledger_dir=query_ledger(settings).directory)
    setup, response = holder.answer(request, asked=asked, lender=LABEL_HOLDER, purpose=purpose)
    keys[ANSWERED] = answered + digest if per_request else digest
    assert holder.spend is not None
    return setup, response, sign_answer(auth, digest, setup, response), {
        **holder.spend.metrics(), "list_size": float(len(ids)),
        "setup_cached": float(holder.setup_cached),
        "cardinality": float(b.mode is ListMode.cardinality)}


def holder_refusal(settings: ClientSettings, message_type: str) -> str | None:
    """Say why a node refuses a message of its other role (None when it may answer it).

    A holder answers the hello and the lookup only: a router that sends it a party's
    alignment messages (to have it intersect its list with the lender's applicants as a
    party would, outside its mode and its cap) is refused; a party refuses a lookup.
    """
    lookup = message_type.rsplit(".", 1)[-1] in LOOKUP_ACTIONS
    hello = message_type.rsplit(".", 1)[-1] in ("hello", "score_hello")
    if is_holder(settings) and not (lookup or hello):
        return (f"{settings.party} holds a blacklist and answers lookups only; "
                f"'{message_type}' is refused")
    if lookup and not is_holder(settings):
        return f"{settings.party} is not a blacklist holder; '{message_type}' is refused"
    return None


def lookup_key(settings: ClientSettings, ids: list[str], mode: ListMode, request: bytes,
               public: bytes, keys: dict[str, bytes]) -> tuple[bytes, bytes] | None:
    """Prepare the holders' request; return (request, signed key) in ``cardinality`` mode.

    A ``lookup`` reuses the lender's alignment request (the same blinded IDs, signed with it):
    its digest is kept to check the holders' answers against, and None is returned. In
    ``cardinality`` mode the applicants are blinded again under a second key, and the lender
    signs that request with its channel key (``public``) as it signed the first.
    """
    keys["lookup digest"] = transcript(request)
    if mode is ListMode.lookup:
        return None
    second, keys["list"] = lookup_request(ids, reveal=False)
    keys["list digest"] = transcript(second)
    auth = channel_auth(settings.party, settings.channel_keys)
    return second, seal_key(auth, public, transcript(second))


def lender_hits(settings: ClientSettings, ids: list[str], mode: ListMode,
                keys: dict[str, bytes], answers: dict[str, tuple[bytes, bytes, bytes]]
                ) -> dict[str, np.ndarray | int]:
    """Return, per holder, the hit mask (``lookup``) or the count (``cardinality``).

    ``answers`` maps a holder to its (setup, response, signature); an answer its holder's node
    did not sign for this request is refused.
    """
    reveal = mode is ListMode.lookup
    key = keys["psi"] if reveal else keys.get("list")
    digest = keys.get("lookup digest" if reveal else "list digest")
    if answers and (key is None or digest is None):
        raise AlignmentError("lender: no blinded lookup request of this run to read the "
                             "holders' answers with")
    auth = channel_auth(settings.party, settings.channel_keys)
    out: dict[str, np.ndarray | int] = {}
    for holder, (setup, response, signature) in answers.items():
        check_answer(auth, holder, signature, cast(bytes, digest), setup, response)
        out[holder] = listed(cast(bytes, key), len(ids), setup, response, reveal=reveal)
    return out


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
