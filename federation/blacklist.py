"""Private blacklist lookup: which of the lender's applicants are on a holder's list.

ECDH PSI with ``openmined.psi``, the holder as the PSI server, the lender as the client; the
server only routes. Who learns what:

* **lender**: which of its applicants are on the list (up to :data:`FALSE_POSITIVE_RATE` per
  applicant: an applicant not listed is reported listed with that chance). It also learns the
  size of the list (the compressed set's size gives it away). Nothing else about the list.
  A ``cardinality`` mode (only how many) is withdrawn: the lender computes the count itself,
  so the holder can neither see it nor noise it, and a count of one ID, or the difference of
  two requests that differ in one ID, tells which are listed; a holder refuses such requests.
* **holder**: the number of IDs asked, from the blinded request (``H(id)^a``, which it cannot
  open), and nothing about which IDs they are or which were listed. It charges each request
  to its query ledger (:mod:`federation.query_ledger`, the one every path that answers the
  lender's IDs charges), capped per day and per month, so a lender cannot sweep the ID space
  to read the list; past a cap the holder refuses, saying so, and answers nothing.
* **server**: blinded values, the compressed set, sizes; never an ID. In a deployment the
  holder answers only a request the lender's node signed for this run (so the coordinator
  cannot ask its own questions, under the lender's name or another), once per run, and signs
  its answer (so the coordinator cannot answer in its place).

The holder's blinded list and PSI key are cached on its own disk (:class:`SetupCache`), so a
lookup against a cached list costs work in proportion to the request.

>>> holder = ListHolder("consortium", ["x", "c", "a", "y"])
>>> request, key = lookup_request(["a", "b", "c", "d"], reveal=True)
>>> setup, response = holder.answer(request, asked=4, lender="lender")
>>> listed(key, 4, setup, response, reveal=True).tolist()
[True, False, True, False]
>>> request, key = lookup_request(["a", "b", "c", "d"], reveal=False)
>>> holder.answer(request, asked=4, lender="lender")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
credit_data.errors.AlignmentError: consortium refuses a request for how many IDs are listed ...
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import private_set_intersection.python as psi

from credit_data.errors import AlignmentError, ConfigError
from federation.alignment import FALSE_POSITIVE_RATE, ChannelAuth, SetupCache, transcript
from federation.query_ledger import Purpose, QueryCaps, QueryLedger, QuerySpend
from federation.settings import CARDINALITY_WITHDRAWN

__all__ = ["FALSE_POSITIVE_RATE", "ListHolder", "check_answer", "listed", "lookup_request",
           "sign_answer"]


def lookup_request(ids: list[str], *, reveal: bool) -> tuple[bytes, bytes]:
    """Blind the applicants' IDs for a lookup; return (request, the lender's PSI key to keep)."""
    client = psi.client.CreateWithNewKey(reveal)
    return (client.CreateRequest(ids).SerializeToString(),
            bytes(client.GetPrivateKeyBytes()))


def _parsed(request: bytes) -> psi.Request:
    parsed = psi.Request()
    try:
        parsed.ParseFromString(request)
    except Exception as exc:  # protobuf's DecodeError
        raise AlignmentError(f"not a PSI request ({type(exc).__name__})") from exc
    return parsed


def request_size(request: bytes) -> int:
    """Return the number of IDs a blinded request asks about."""
    return len(_parsed(request).encrypted_elements)


def answer_digest(request_digest: bytes, setup: bytes, response: bytes) -> bytes:
    """Return the 32-byte digest a holder signs: its answer, bound to the request it answers.

    ``request_digest`` is :func:`~federation.alignment.transcript` of the request, the value
    the lender signed with its request and keeps.
    """
    return transcript(request_digest, setup, response)


def sign_answer(auth: ChannelAuth | None, request_digest: bytes, setup: bytes,
                response: bytes) -> bytes:
    """Sign a holder's answer with its node key (nothing to sign in simulation)."""
    digest = answer_digest(request_digest, setup, response)
    return digest if auth is None else auth.seal(digest, request_digest)


def check_answer(auth: ChannelAuth | None, holder: str, signature: bytes,
                 request_digest: bytes, setup: bytes, response: bytes) -> None:
    """Refuse a holder's answer that the holder's node did not sign for this request.

    A router that answers in a holder's place (an empty list lets every fraudster through) or
    pairs a genuine answer with another request is caught here; in simulation the digest alone
    is checked (one process plays every node).
    """
    digest = answer_digest(request_digest, setup, response)
    got = signature[:32] if auth is None else auth.open(signature, holder, request_digest)
    if got != digest:
        raise AlignmentError(f"{holder}'s answer does not match what it signed: it was altered "
                             "on the way or is not the holder's")


def listed(key: bytes, n: int, setup: bytes, response: bytes, *,
           reveal: bool) -> np.ndarray | int:
    """Return, per applicant, whether it is listed (``reveal``); else how many are."""
    client = psi.client.CreateFromKey(key, reveal)
    parsed_setup, parsed_response = psi.ServerSetup(), psi.Response()
    parsed_setup.ParseFromString(setup)
    parsed_response.ParseFromString(response)
    if not reveal:
        return int(client.GetIntersectionSize(parsed_setup, parsed_response))
    found = np.zeros(n, dtype=bool)
    found[np.asarray(client.GetIntersection(parsed_setup, parsed_response),
                     dtype=np.int64)] = True
    return found


class ListHolder:
    """A holder's side: its list, blinded once and cached; answers counted against the cap.

    A holder answers lookups only: ``reveal=False`` (a cardinality holder) is refused, and so
    is a request that asks how many (:data:`~federation.settings.CARDINALITY_WITHDRAWN`).
    """

    def __init__(self, holder: str, ids: list[str], *, reveal: bool = True,
                 cache_dir: Path | None = None, caps: QueryCaps | None = None,
                 ledger_dir: Path | None = None) -> None:
        if not reveal:
            raise ConfigError(f"{holder}: blacklists.mode=cardinality (--list-mode): "
                              f"{CARDINALITY_WITHDRAWN}")
        self.holder, self.ids, self.reveal = holder, ids, reveal
        self.cache = SetupCache(cache_dir, holder)
        self.ledger = QueryLedger(ledger_dir, holder, caps or QueryCaps.of_run(2 ** 62))
        self.setup_cached = False
        self.spend: QuerySpend | None = None

    def setup(self, asked: int) -> tuple[bytes, bytes]:
        """Return (PSI key, setup message) for requests of up to ``asked`` IDs."""
        key, setup, self.setup_cached = self.cache.setup(self.ids, asked)
        return key, setup

    def answer(self, request: bytes, *, asked: int, lender: str,
               purpose: Purpose = Purpose.scoring, now: dt.datetime | None = None
               ) -> tuple[bytes, bytes]:
        """Charge the ledger, then return (setup, response) for a blinded request.

        ``asked`` is the request's size as the router announced it; the request itself must
        agree. A request for how many IDs are listed (the withdrawn cardinality mode) is
        refused, and not charged; so is one past a cap of the ledger (:attr:`spend` keeps what
        the last answer charged).
        """
        parsed = _parsed(request)
        n = len(parsed.encrypted_elements)
        if n != asked:
            raise AlignmentError(f"{self.holder}: the request holds {n} IDs, not the {asked} "
                                 "announced")
        if not parsed.reveal_intersection:  # refused before it is charged
            raise AlignmentError(f"{self.holder} refuses a request for how many IDs are listed "
                                 f"(blacklists.mode=cardinality): {CARDINALITY_WITHDRAWN}")
        self.spend = self.ledger.charge(lender, n, purpose, now)
        key, setup = self.setup(n)
        response = psi.server.CreateFromKey(key, self.reveal).ProcessRequest(parsed)
        return setup, response.SerializeToString()
