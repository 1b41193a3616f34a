"""What each node does in a scoring service (:mod:`fl_server.scoring_service`). Never imports flwr.

Once per service: the lender agrees a channel key with each party (X25519, signed with the node
keys as the alignment's are); each party sends its sealed set of tags
(:mod:`federation.service_table`: no embedding), built once per model and table and kept beside
its PSI cache with its key and its rows' embeddings. Then per request: the lender takes the next
request from its inbox and blinds the applicants; each party multiplies the blinded points by
its key, charging them to its query ledger (:mod:`fl_client.queries`); the lender finds which
applicants each party knows and sends each the tags of those only; each party sends their
embeddings, and nothing of any other customer; the lender scores, keeping the scores on its own
disk (``<state>/lender/requests/<request>/scores.csv``).

With ``explain.enabled`` (the service's settings) each answer carries every applicant's top
``explain.reasons`` reasons across the parties, under batch scoring's release rules
(:func:`fl_client.explanation.refused`: a deployed party sends attributions only with its own
``--release-explanations``) and only for the applicants of the request it charged and embedded:
a scorecard party seals its top codes beside the embeddings (no more rounds); a split network's
party seals its path, the lender sends it the head's gradients and it answers its columns' points
(two more rounds, :data:`federation.protocol.ScoringMessage.EXPLAIN` and ``REASONS``). Each is
sealed with the service's channel key at the request's number: one request's arrays open in no
other. The server gets counts only, not a party's global table (with one applicant, it would be
that applicant's points per column).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from credit_data.errors import AlignmentError, DataError
from credit_data.settings import LABEL_HOLDER
from credit_data.tables import PartyTable
from federation.alignment import (
    channel_auth,
    open_key,
    public_bytes,
    seal_key,
    shared_key,
    transcript,
)
from federation.blacklist import lookup_request
from federation.query_ledger import Purpose, QuerySpend
from federation.releases import Release
from federation.sealed import keep_key
from federation.service_table import (
    POINT,
    REQUEST_ID,
    Blinded,
    TagSet,
    evaluate,
    new_key,
    party_tags,
    rows_of,
    seal,
    table_context,
    unseal,
)
from federation.settings import ListMode
from federation.storage import write_atomic
from fl_client.explanation import (
    lender_gradients,
    lender_reasons,
    party_columns,
    party_path,
    table_reference,
)
from fl_client.list_lookup import lender_hits
from fl_client.queries import charge
from fl_client.scorecard_explanation import is_scorecard, lender_codes, party_codes
from fl_client.scoring_task import (
    DONE,
    SCORES_FILE,
    ScoringInput,
    ScoringLender,
    ScoringParty,
    model_settings,
    once,
)
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState
from models.bundle import load_bundle

SERVED = "served"
INBOX = "inbox"
REQUESTS = "requests"
STOP = "stop"
_HELLO = transcript(b"credit-fl scoring service")
_LENDER_KEY = "served lender key"
_SEQ = "served seq"
_REQUEST = "served request"
_BLINDING = "served blinding"
_MEMORY = "served matching"
_TABLE = "served table"
_UNPAID = "served release unpaid"
_IDS = "served applicants"
_ASKED = "served asked"
_EMBEDDED = "served embedded"
_EXPLAINED = "served explained"
_FINGERPRINT = "served table fingerprint"
SERVED_COUNTS = ("explained", "reasons", "method", "columns_from")
"""What a request's explanation tells the server: counts, no party's points (and, for the
completeness check, whether each party's columns add up to its share: ``complete``, never the
gap itself, a real number of one applicant's rows in a one-applicant request)."""
COMPLETE_WITHIN = 1e-4
"""A party's columns add up to its share within this many log-odds: ``complete``."""


ApplicantLoader = Callable[[dict[str, Any]], PartyTable]
"""The lender's loader of one request's applicants (the request as its inbox file says)."""


def table_fingerprint(table: PartyTable) -> str:
    """SHA-256 of a party's table: its IDs, columns and values (a changed table: a new one)."""
    frame = table.frame
    digest = hashlib.sha256(json.dumps([list(map(str, frame.columns)),
                                        [str(t) for t in frame.dtypes]]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Cached:
    key: bytes
    tags: np.ndarray  # (n, TAG): each customer's tag, in the party's own order
    values: np.ndarray  # (n, embedding_dim): each customer's embedding (one release, if noisy)
    release: dict[str, Any]

    def to_bytes(self) -> bytes:
        blob = io.BytesIO()
        np.savez(blob, key=np.frombuffer(self.key, dtype=np.uint8), tags=self.tags,
                 values=self.values, release=np.asarray(json.dumps(self.release)))
        return blob.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> _Cached:
        with np.load(io.BytesIO(blob), allow_pickle=False) as kept:
            return cls(kept["key"].tobytes(), kept["tags"], kept["values"],
                       json.loads(str(kept["release"])))


class ServedParty(ScoringParty):
    """A passive party of a scoring service: its tag set once, then requests one at a time."""

    @functools.cached_property
    def fingerprint(self) -> str:
        """The fingerprint of this message's table, hashed once per message (not per step)."""
        return table_fingerprint(self.data.table)

    def _cache_path(self) -> Path | None:
        if not self.settings.psi_cache:
            return None
        name = f"{self.bundle.model_id}-{self.fingerprint[:32]}.npz"
        return Path(self.settings.psi_cache) / self.settings.party / SERVED / name

    def _table(self) -> tuple[_Cached, bool]:
        """Return the party's key, tags and embeddings, and whether they came from its disk.

        Built once per model and table: a noisy model's embeddings are drawn once (the
        operating system's source) and kept, so every request sends the same release of a row.
        """
        path = self._cache_path()
        if path is not None and path.is_file():
            return _Cached.from_bytes(path.read_bytes()), True
        values, _, release = self.embed_rows(None, "served table")
        key = new_key()
        cached = _Cached(key, party_tags(key, self.ids, table_context(
            self.bundle.model_id, self.settings.party)), values, release)
        if path is not None:  # holds the key and the embeddings: the party's own
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, cached.to_bytes(), mode=0o600)
        return cached, False

    def sealed_table(self, state: NodeState, lender_key: bytes
                     ) -> tuple[bytes, bytes, dict[str, Any]]:
        """Return (the tag set sealed for the lender, this node's signed key, its counts).

        No embedding leaves here. ``info["epsilon_per_new_applicant"]`` is there only when
        this call drew the release that requests then send from.
        """
        once(state, self.settings.party, "served table")
        self.refuse_unaccounted()
        auth = channel_auth(self.settings.party, self.settings.channel_keys)
        lender_public = open_key(auth, lender_key, LABEL_HOLDER, _HELLO)
        cached, from_disk = self._table()
        state.keys[_FINGERPRINT] = self.fingerprint.encode()
        channel = X25519PrivateKey.generate()
        state.keys[SERVED] = shared_key(channel, lender_public, f"served {self.settings.party}")
        keep_key(state.keys, LABEL_HOLDER, state.keys[SERVED])  # a request's explanation arrays
        state.keys[_SEQ] = b"0"
        path = self._cache_path()
        if path is None:  # no cache directory (a unit test): kept in the state
            state.keys[_MEMORY] = cached.to_bytes()
        else:  # each request reads them from the cache: no copy in a run's state
            state.keys[_TABLE] = str(path).encode()
        sealed = seal(state.keys[SERVED], TagSet.of(cached.tags).to_bytes(),
                      f"{self.settings.party} table")
        info: dict[str, Any] = {"rows": len(cached.tags), "table_cached": from_disk}
        info |= self.outside_info()
        paid = path is not None and path.with_suffix(".paid").is_file()
        if cached.release and not paid:
            # counted in this reply; marked paid once the reply has gone through the node's
            # budget (at the first request): a refused or lost reply is counted again next time
            info |= cached.release
            state.keys[_UNPAID] = b"1"
        elif cached.release:
            info["release"] = cached.release  # paid when the release was first drawn
        return sealed, seal_key(auth, public_bytes(channel), transcript(sealed)), info

    def _same_table(self, state: NodeState) -> None:
        """Refuse a request once the party's table changed since the service started.

        The service's tags, embeddings and positions are of the table it started with; after
        a consent withdrawal or new data, row i may be another customer, and a withdrawn
        customer's embedding would still be served.
        """
        said = state.keys.get(_FINGERPRINT)
        if said is not None and said != self.fingerprint.encode():
            raise AlignmentError(f"{self.settings.party}: its table changed since the scoring "
                                 "service started (new data or a consent withdrawn); refused: "
                                 "stop the service and start it again")

    def _cached(self, state: NodeState) -> _Cached:
        self._same_table(state)
        if _MEMORY in state.keys:
            return _Cached.from_bytes(state.keys[_MEMORY])
        path = Path(state.keys[_TABLE].decode())
        if not path.is_file():
            raise AlignmentError(f"{self.settings.party}: the served table {path} is gone; "
                                 "start the service again")
        return _Cached.from_bytes(path.read_bytes())

    def evaluate(self, state: NodeState, sealed: bytes) -> tuple[bytes, QuerySpend]:
        """Multiply one request's blinded points by the party's key; return them, sealed.

        Only a request the lender sealed for this service, newer than the last one answered,
        is answered; its points are charged to the node's query ledger under the lender's name
        first, and a request past a cap is refused unanswered. The answer is sealed for the
        lender with the request's sequence number, so that a router can neither alter nor
        swap it. Returns the sealed answer and the charge.
        """
        if SERVED not in state.keys:
            raise AlignmentError(f"{self.settings.party}: no scoring service channel in this "
                                 "run; a request before the table is refused")
        self._same_table(state)  # before anything is charged
        seq, points = unseal(state.keys[SERVED], sealed, f"{self.settings.party} request")
        last = int(state.keys.get(_SEQ, b"0"))
        if seq <= last:
            raise AlignmentError(f"{self.settings.party}: request {seq} comes after request "
                                 f"{last}: a replayed or reordered request is refused")
        spend = charge(self.settings, len(points) // POINT, Purpose.service)
        state.keys[_SEQ], state.keys[_ASKED] = str(seq).encode(), str(spend.asked).encode()
        if state.keys.pop(_UNPAID, None) and _TABLE in state.keys:
            write_atomic(Path(state.keys[_TABLE].decode()).with_suffix(".paid"),
                         json.dumps({"paid_in": self.settings.state_dir}), mode=0o600)
        answer = evaluate(self._cached(state).key, points)
        return seal(state.keys[SERVED], answer, f"{self.settings.party} answer", seq), spend

    def embed_known(self, state: NodeState, sealed: bytes) -> tuple[bytes, dict[str, Any]]:
        """Send the embeddings of the request's applicants the lender found this party knows.

        The lender's tags must come sealed for the request this node answered last, once, and
        name distinct customers of this node, no more than the request's applicants: nothing
        of any other customer leaves. Returns the embeddings sealed for the lender, and counts.
        """
        if SERVED not in state.keys:
            raise AlignmentError(f"{self.settings.party}: no scoring service channel in this "
                                 "run; refused")
        seq, tags = unseal(state.keys[SERVED], sealed, f"{self.settings.party} known")
        if seq != int(state.keys.get(_SEQ, b"0")) or state.keys.get(_EMBEDDED) == str(
                seq).encode():
            raise AlignmentError(f"{self.settings.party}: the lender's applicants are for "
                                 f"request {seq}; this node answered request "
                                 f"{int(state.keys.get(_SEQ, b'0'))} and embeds each once")
        self.refuse_unaccounted()
        cached = self._cached(state)
        rows = rows_of(tags, cached.tags, asked=int(state.keys[_ASKED]))
        state.keys[_EMBEDDED] = str(seq).encode()
        state.positions = rows.astype(np.int64)  # the only rows this request may explain
        values = np.ascontiguousarray(cached.values[rows], dtype="<f4")
        return (seal(state.keys[SERVED], values.tobytes(), f"{self.settings.party} embeddings",
                     seq), {"rows": len(rows)} | self.outside_info())


    def _embedded_seq(self, state: NodeState, step: str) -> int:
        self._same_table(state)
        seq = int(state.keys.get(_SEQ, b"0"))
        if state.keys.get(_EMBEDDED) != str(seq).encode() or state.keys.get(_EXPLAINED) == (
                f"{step} {seq}").encode():
            raise AlignmentError(f"{self.settings.party}: '{step}' of request {seq} comes "
                                 "after this node embedded its applicants, once; refused")
        state.keys[_EXPLAINED] = f"{step} {seq}".encode()
        return seq

    def _reference(self, state: NodeState) -> np.ndarray:
        """Return the mean of the served table, encoded once (the table every step checks)."""
        return table_reference(self.bundle, self.data.table, state.keys[_FINGERPRINT].decode())

    def explain_known(self, state: NodeState) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return this party's sealed codes (a scorecard) or path (a split network), and counts.

        Of the applicants it embedded for this request only (``state.positions``); empty, and
        ``explains`` false, where it does not explain (:func:`fl_client.explanation.refused`).
        """
        seq = self._embedded_seq(state, "path")
        if is_scorecard(self.bundle):
            sealed, said = party_codes(self.bundle, self.data.table, self.settings, state,
                                       counter=(seq,))
        else:  # its reference row: its table's mean, kept for the service
            sealed = party_path(self.bundle, self.data.table, self.settings, state,
                                counter=(seq,), reference=self._reference(state))
            said = {"explained": 0 if state.positions is None else len(state.positions)}
        info: dict[str, Any] = {"explains": bool(sealed)}
        if sealed:
            info |= {"explained": int(said["explained"]),
                     "outside_epsilon": [Release.explanations.value]}
        return {f"explain.{k}": v for k, v in sealed.items()}, info

    def columns(self, state: NodeState, sealed: np.ndarray
                ) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
        """Split this party's share over its columns from the lender's sealed gradients.

        Once per request, after its path; returns the sealed columns, their names and counts
        (no global table: see the module).
        """
        seq = self._embedded_seq(state, "columns")
        values, names, info = party_columns(self.bundle, self.data.table, self.settings, state,
                                            sealed, counter=(seq,),
                                            reference=self._reference(state))
        return values, names, {k: v for k, v in info.items() if k != "global"}


class ServedLender:
    """The lender of a scoring service: keys, tables, and one request at a time."""

    def __init__(self, settings: ClientSettings, data: ScoringInput,
                 applicants: ApplicantLoader | None) -> None:
        if data.bundle_dir is None:
            raise DataError(f"{settings.party}: no model bundle at this node")
        self.settings, self.data, self.applicants = settings, data, applicants
        self.bundle = load_bundle(data.bundle_dir, party=settings.party)
        if self.bundle.manifest["role"] != "lender":
            raise DataError(f"{data.bundle_dir}: not the lender's bundle")
        self.passive = tuple(self.bundle.manifest["passive"])
        self.holders = [str(h) for h in self.bundle.manifest.get("blacklists", [])]
        self.home = Path(settings.state_dir or ".") / settings.party
        self.gradients: dict[str, np.ndarray] = {}
        """A split network's sealed gradients for each explaining party, after :meth:`score`."""

    def hello(self, state: NodeState) -> tuple[dict[str, Any], bytes]:
        """Return what the server checks (the bundle) and the lender's signed channel key."""
        once(state, self.settings.party, "served hello")
        own = X25519PrivateKey.generate()
        state.keys[_LENDER_KEY] = own.private_bytes_raw()
        auth = channel_auth(self.settings.party, self.settings.channel_keys)
        return ({"model_id": self.bundle.model_id, "role": "lender",
                 "bundle_sha256": self.bundle.manifest["files"], "rows": 0,
                 "passive": list(self.passive), "blacklists": self.holders},
                seal_key(auth, public_bytes(own), _HELLO))

    def open_tables(self, state: NodeState, tables: dict[str, tuple[bytes, bytes]]
                    ) -> dict[str, int]:
        """Open each party's sealed tag set and keep it on this node's disk; return its size."""
        once(state, self.settings.party, "served tables")
        auth = channel_auth(self.settings.party, self.settings.channel_keys)
        own = X25519PrivateKey.from_private_bytes(state.keys[_LENDER_KEY])
        sizes = {}
        for party, (key_blob, sealed) in tables.items():
            peer = open_key(auth, key_blob, party, transcript(sealed))
            state.keys[f"{SERVED} {party}"] = shared_key(own, peer, f"served {party}")
            keep_key(state.keys, party, state.keys[f"{SERVED} {party}"])
            _, blob = unseal(state.keys[f"{SERVED} {party}"], sealed, f"{party} table")
            write_atomic(self._table_path(party), blob, mode=0o600)
            sizes[party] = TagSet.from_bytes(blob).rows
        return sizes

    def _table_path(self, party: str) -> Path:
        return self.home / SERVED / f"{party}.tags"

    def _served(self, state: NodeState) -> list[str]:
        """Return the parties that sent their tag set to this service."""
        return [p for p in self.passive if f"{SERVED} {p}" in state.keys]

    def inbox(self) -> Path:
        """Where requests arrive: one JSON file each (``{"applicants": <file>}``)."""
        return self.home / INBOX

    def next_request(self, wait: float) -> dict[str, Any] | None:
        """Take the oldest request from the inbox, waiting up to ``wait`` seconds for one.

        A request that cannot be read comes back with its ``error`` (and its file's name as its
        id, when that is a plain name), for the service to answer it and go on.
        """
        inbox = self.inbox()
        inbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        end = time.monotonic() + wait
        while True:
            waiting = sorted(p for p in inbox.glob("*.json") if not p.name.startswith("."))
            for path in waiting:
                taken = path.with_suffix(".taken")
                try:
                    path.rename(taken)  # one taker, even with two workers
                except FileNotFoundError:
                    continue
                return _read_request(path, taken)
            if time.monotonic() >= end:
                return None
            time.sleep(0.01)

    def blind(self, state: NodeState, request: dict[str, Any]
              ) -> tuple[int, dict[str, bytes], tuple[bytes, bytes] | None]:
        """Load the request's applicants, blind them and seal the points for each party.

        Returns the number of applicants, each party's sealed points and, when the model's
        lender asks blacklist holders, the holders' lookup request and the lender's key signed
        with it (the five-round path's lookup, one per request).
        """
        if self.applicants is None:
            raise DataError(f"{self.settings.party}: this node cannot read requests' applicants")
        table = self.applicants(request)
        ids = [str(i) for i in table.frame.index]
        if not ids:
            raise DataError(f"{table.source}: no applicants to score")
        blinded = Blinded.of(ids)
        seq = int(state.keys.get(_SEQ, b"0")) + 1
        state.keys[_SEQ] = str(seq).encode()
        state.keys[_REQUEST] = json.dumps({**request, "source": table.source}).encode()
        state.keys[_BLINDING] = blinded.scalars + blinded.points
        state.keys[_IDS] = transcript(*(i.encode() for i in ids))
        done = state.keys.get(DONE, b"").decode().split(",")  # each request matches and
        state.keys[DONE] = ",".join(d for d in done if d and d not in (
            "match", "score", "reasons")).encode()  # once each; hello and tables stay answered
        state.masks, state.listed = {}, {}
        lookup = None
        if self.holders:
            lookup_blinded, state.keys["psi"] = lookup_request(ids, reveal=True)
            state.keys["lookup digest"] = transcript(lookup_blinded)
            own = X25519PrivateKey.from_private_bytes(state.keys[_LENDER_KEY])
            auth = channel_auth(self.settings.party, self.settings.channel_keys)
            lookup = (lookup_blinded, seal_key(auth, public_bytes(own), transcript(lookup_blinded)))
        return len(ids), {p: seal(state.keys[f"{SERVED} {p}"], blinded.points,
                                  f"{p} request", seq) for p in self.passive
                          if f"{SERVED} {p}" in state.keys}, lookup

    def _request_ids(self, state: NodeState) -> tuple[dict[str, Any], PartyTable, list[str]]:
        """Return the request being answered, its applicants and their IDs, as blinded."""
        request = json.loads(state.keys[_REQUEST])
        table = self.applicants(request) if self.applicants else None
        if table is None:
            raise DataError(f"{self.settings.party}: this node cannot read requests' applicants")
        ids = [str(i) for i in table.frame.index]
        if transcript(*(i.encode() for i in ids)) != state.keys.get(_IDS):
            raise DataError(f"{table.source}: the applicants changed between blinding and "
                            "scoring; send the request again")
        return request, table, ids

    def match(self, state: NodeState, evaluated: dict[str, bytes]) -> dict[str, bytes]:
        """Find which applicants each party knows; seal for each the tags of those only.

        Returns each party's sealed tags (the party embeds those rows and no other).
        """
        once(state, self.settings.party, "match")
        _, _, ids = self._request_ids(state)
        half = len(state.keys[_BLINDING]) // 2
        blinded = Blinded(state.keys[_BLINDING][:half], state.keys[_BLINDING][half:])
        seq = int(state.keys.get(_SEQ, b"0"))
        served = self._served(state)
        missing = [p for p in served if p not in evaluated]
        if missing:
            raise AlignmentError(f"no answer of {missing} to request {seq}: a party that sent "
                                 "its table answers every request (a router dropped it)")
        known: dict[str, bytes] = {}
        for party in served:
            answer_seq, points = unseal(state.keys[f"{SERVED} {party}"], evaluated[party],
                                        f"{party} answer")
            if answer_seq != seq:
                raise AlignmentError(f"{party}'s answer is to request {answer_seq}, not to "
                                     f"request {seq}: refused")
            found, tags = _loaded(self._table_path(party)).find(
                ids, blinded.unblind(points), table_context(self.bundle.model_id, party),
                _table_index(self._table_path(party)))
            state.masks[party] = found
            known[party] = seal(state.keys[f"{SERVED} {party}"], tags, f"{party} known", seq)
        return known

    def score(self, state: NodeState, embedded: dict[str, bytes],
              lists: dict[str, tuple[bytes, bytes, bytes]] | None = None,
              explained: dict[str, dict[str, np.ndarray]] | None = None
              ) -> tuple[str, pd.DataFrame, dict[str, Any]]:
        """Open each party's embeddings of the applicants it knows and score every applicant.

        ``lists``: each blacklist holder's signed (setup, response, signature) to the request's
        lookup; the hits become the lender's own inputs, as in the five-round path.
        ``explained`` (None: no reasons): each explaining party's sealed codes or path. A
        scorecard's reasons join the scores now; a split network's once the parties answer
        :attr:`gradients` (:meth:`reasons`), unless no party splits its share.
        """
        request, table, ids = self._request_ids(state)
        seq = int(state.keys.get(_SEQ, b"0"))
        width = model_settings(self.bundle.manifest).embedding_dim
        embeddings: dict[str, np.ndarray] = {}
        for party in self._served(state):
            if party not in embedded or party not in state.masks:
                raise AlignmentError(f"no embeddings of {party} for request {seq}: a party "
                                     "that sent its table answers every request")
            answer_seq, blob = unseal(state.keys[f"{SERVED} {party}"], embedded[party],
                                      f"{party} embeddings")
            if answer_seq != seq:
                raise AlignmentError(f"{party}'s embeddings are for request {answer_seq}, not "
                                     f"for request {seq}: refused")
            values = np.frombuffer(blob, dtype="<f4")
            if values.size != int(state.masks[party].sum()) * width:
                raise AlignmentError(f"{party} sent {values.size} values for "
                                     f"{int(state.masks[party].sum())} applicants of "
                                     f"{width} each; refused")
            embeddings[party] = values.reshape(-1, width).astype(np.float32)
        for holder, hit in (lender_hits(self.settings, ids, ListMode.lookup, state.keys, lists)
                            if lists else {}).items():
            state.listed[holder] = np.asarray(hit, dtype=bool)
        scorer = ScoringLender(self.settings, ScoringInput(self.data.bundle_dir, table))
        scores, counts = scorer.score(state, embeddings)
        if lists:
            counts["listed"] = {h: int(state.listed[h].sum()) for h in lists}
        self.gradients = {}
        if explained is not None:
            reasons, said = self._explain(state, table, embeddings, explained, seq)
            if reasons is not None:
                scores = pd.concat([scores, reasons], axis=1)
                counts["explanation"] = said
        request_id = str(request["id"])
        if self.settings.state_dir:  # the scores stay at the lender
            write_atomic(self.home / REQUESTS / request_id / SCORES_FILE,
                         scores.to_csv(index=False, float_format="%.10g"), mode=0o600)
        return request_id, scores, counts

    def _explain(self, state: NodeState, table: PartyTable, embeddings: dict[str, np.ndarray],
                 explained: dict[str, dict[str, np.ndarray]], seq: int
                 ) -> tuple[pd.DataFrame | None, dict[str, Any]]:
        """Return the reasons and their counts now, or keep the parties' gradients to send."""
        holders = list(self.holders)  # the model's inputs, as scoring's (a hit column each)
        if not is_scorecard(self.bundle):
            self.gradients = lender_gradients(  # its reference: the mean of its own table
                self.bundle, table, self.settings, state, holders, embeddings, explained,
                counter=(seq,), own_reference=table_reference(
                    self.bundle, self.data.table, table_fingerprint(self.data.table)))
            if self.gradients:  # the parties split their shares first (:meth:`reasons`)
                return None, {}
        once(state, self.settings.party, "reasons")
        if is_scorecard(self.bundle):
            reasons, said = lender_codes(  # an average reference: its bundle's
                self.bundle, table, self.settings, state, holders, embeddings, explained,
                counter=(seq,))
        else:
            reasons, said = lender_reasons(self.bundle, table, self.settings, state, holders,
                                           {}, counter=(seq,))
        return reasons, served_counts(said)

    def reasons(self, state: NodeState, columns: dict[str, tuple[np.ndarray, list[str]]]
                ) -> dict[str, Any]:
        """Rank a split network's reasons from each party's sealed columns; join the scores.

        Returns the explanation's counts (:data:`SERVED_COUNTS`).
        """
        once(state, self.settings.party, "reasons")
        request, table, _ = self._request_ids(state)
        seq = int(state.keys.get(_SEQ, b"0"))
        reasons, said = lender_reasons(self.bundle, table, self.settings, state,
                                       list(self.holders), columns,
                                       counter=(seq,))
        path = self.home / REQUESTS / str(request["id"]) / SCORES_FILE
        scores = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
        write_atomic(path, pd.concat([scores, reasons], axis=1).to_csv(
            index=False, float_format="%.10g"), mode=0o600)
        return served_counts(said)


def served_counts(said: dict[str, Any]) -> dict[str, Any]:
    """Return what the server gets of a request's explanation (:data:`SERVED_COUNTS`).

    >>> served_counts({"explained": 1, "reasons": 4, "method": "path", "columns_from": ["b"],
    ...                "completeness_gap_logodds": {"b": 3e-7}, "global": {}})["complete"]
    {'b': True}
    """
    gaps = said.get("completeness_gap_logodds", {})
    return {k: said[k] for k in SERVED_COUNTS} | {
        "complete": {p: bool(g < COMPLETE_WITHIN) for p, g in gaps.items()}}


_TABLES: dict[str, tuple[float, TagSet, frozenset[bytes]]] = {}


def _read(path: Path) -> tuple[TagSet, frozenset[bytes]]:
    """Return a party's tag set and its index, read once per file version."""
    version = path.stat().st_mtime
    kept = _TABLES.get(str(path))
    if kept is None or kept[0] != version:
        table = TagSet.from_bytes(path.read_bytes())
        kept = _TABLES[str(path)] = (version, table, table.index())
    return kept[1], kept[2]


def _loaded(path: Path) -> TagSet:
    return _read(path)[0]


def _table_index(path: Path) -> frozenset[bytes]:
    return _read(path)[1]


def _read_request(path: Path, taken: Path) -> dict[str, Any]:
    """Read one request file the lender took from its inbox; an unreadable one names why."""
    name = path.stem if REQUEST_ID.fullmatch(path.stem) else "unnamed"
    try:
        request = json.loads(taken.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"id": name, "error": f"{path}: not a scoring request ({exc})"}
    if not isinstance(request, dict):
        return {"id": name, "error": f"{path}: a scoring request is a JSON object"}
    if request.get(STOP) is True:  # the service's operator stops it (``~stop.json``: last)
        return {"id": STOP, STOP: True}
    request["id"] = str(request.get("id") or path.stem)
    if not REQUEST_ID.fullmatch(request["id"]):
        return {"id": name, "error": f"{path}: request id {request['id']!r} is not one plain "
                "name (letters, digits, '.', '_', '-')"}
    return request
