"""A scoring service's matching: an OPRF over each party's customers, embeddings per request.

A long-lived scoring service (:mod:`fl_server.scoring_service`) answers many requests in one
Flower run, from a party's key drawn once per model and table. Once, when the service starts,
each party:

* draws an OPRF key ``k`` (the operating system's source) and, for each of its customers ``y``,
  computes ``F(y) = k * H(y)`` on edwards25519 (``H``: two Elligator 2 maps of the halves of
  SHA-512, added: the shape of RFC 9380's hash_to_curve, without its expand_message), and from
  ``y`` and ``F(y)`` a 16-byte tag (SHAKE-256, bound to the model and the party, as RFC 9497's
  finalization hashes the input with the evaluation);
* sends the lender, sealed end to end (the alignment's signed X25519 channel), the sorted set of
  its tags (:class:`TagSet`): no embedding, no ciphertext of one.

A request: the lender blinds each applicant ``x`` as ``r * H(x)`` with a fresh scalar ``r``;
the party multiplies by ``k``, charging every point to its query ledger first
(:mod:`federation.query_ledger`); the lender removes ``r``, derives the tag of ``F(x)`` and
finds which applicants the party knows; it sends the party, sealed, the tags of those
applicants only; the party checks them against the request it answered and sends the
embeddings of those rows, sealed. Who learns what:

* **lender**: which applicants of a charged request the party knows, then their embeddings;
  the party's number of customers (the size of its tag set). Nothing about a customer it did
  not ask about in a charged request: a tag is a pseudo-random function of ``F(y)``, which the
  lender cannot compute without the party, and no embedding leaves the party but those of a
  request's known applicants.
* **party**: the number of applicants of each request, and which of its own customers are among
  them (the tags the lender sends back: the rows it embeds), as in batch scoring; never the
  request's other applicants (their points are blinded, their tags never sent).
* **server**: sealed messages and counts. Every message is sealed under the lender-party
  channel key with the request's sequence number, so the server cannot ask the party to
  evaluate or embed IDs of its own, nor replay a request.

>>> key, context = new_key(), table_context("model-1", "bureau")
>>> own = party_tags(key, ["a", "b", "c"], context)
>>> blinded = Blinded.of(["b", "x"])
>>> found, tags = TagSet.of(own).find(["b", "x"], blinded.unblind(evaluate(key, blinded.points)),
...                                   context)
>>> found.tolist(), rows_of(tags, own, asked=2).tolist()
([True, False], [1])
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError

from credit_data.errors import AlignmentError

POINT = 32
"""Bytes of a compressed edwards25519 point (and of a scalar)."""
TAG = 16
"""Bytes of a customer's tag: a collision among a million customers has odds under 2^-88."""
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A request's id: one plain name (it names a file at the lender and at the coordinator)."""
_DOMAIN = b"credit-fl served scoring v1|"
_NONCE = 12
_SEQ = 8


def hash_to_group(customer: str) -> bytes:
    """Map an ID to a point of the prime-order group (RFC 9380's two-map construction).

    >>> hash_to_group("a") == hash_to_group("a") != hash_to_group("b")
    True
    """
    digest = hashlib.sha512(_DOMAIN + customer.encode()).digest()
    return bytes(sodium.crypto_core_ed25519_add(
        sodium.crypto_core_ed25519_from_uniform(digest[:32]),
        sodium.crypto_core_ed25519_from_uniform(digest[32:])))


def new_key() -> bytes:
    """Draw a scalar from the operating system's source (never from the run's seed)."""
    return bytes(sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64)))


def evaluate(key: bytes, points: bytes) -> bytes:
    """Multiply each of the concatenated points by ``key`` (the party's side of a request).

    A point off the prime-order group (the identity, a small-order point, bytes that are no
    point) is refused: multiplying it could leak bits of ``key``.
    """
    if len(points) % POINT:
        raise AlignmentError(f"a served request of {len(points)} bytes is not a whole number "
                             f"of {POINT}-byte points")
    out = bytearray()
    for i in range(0, len(points), POINT):
        point = points[i:i + POINT]
        if not sodium.crypto_core_ed25519_is_valid_point(point):
            raise AlignmentError(f"point {i // POINT} of the served request is not a point of "
                                 "the prime-order group; refused")
        out += sodium.crypto_scalarmult_ed25519_noclamp(key, point)
    return bytes(out)


def table_context(model_id: str, party: str) -> bytes:
    """Bind every tag and pad to one model and one party."""
    return _DOMAIN + f"{model_id}|{party}|".encode()


def tag_of(customer: str, value: bytes, context: bytes) -> bytes:
    """Return a customer's tag: SHAKE-256 of the context, the ID and ``F(ID)``."""
    name = customer.encode()
    return hashlib.shake_256(context + len(name).to_bytes(4, "big") + name + value).digest(TAG)


def party_tags(key: bytes, ids: list[str], context: bytes) -> np.ndarray:
    """Return the party's tag of each of its customers, in its own order: ``(n, TAG)`` bytes."""
    tags = np.empty((len(ids), TAG), dtype=np.uint8)
    for i, customer in enumerate(ids):
        value = sodium.crypto_scalarmult_ed25519_noclamp(key, hash_to_group(customer))
        tags[i] = np.frombuffer(tag_of(customer, value, context), dtype=np.uint8)
    return tags


@dataclass(frozen=True)
class TagSet:
    """A party's customers as tags, sorted (the order says nothing of the party's own)."""

    tags: np.ndarray  # (n, TAG) uint8

    @classmethod
    def of(cls, tags: np.ndarray) -> TagSet:
        """Return the set of a party's tags (:func:`party_tags`), sorted."""
        return cls(np.ascontiguousarray(tags[np.lexsort(tags.T[::-1])]))

    @property
    def rows(self) -> int:
        """Number of the party's customers."""
        return len(self.tags)

    def to_bytes(self) -> bytes:
        """Serialize: the tags, concatenated."""
        return self.tags.tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> TagSet:
        """Read :meth:`to_bytes`; a blob that is not whole tags is refused."""
        if len(blob) % TAG:
            raise AlignmentError(f"a tag set of {len(blob)} bytes is not whole {TAG}-byte tags; "
                                 "refused")
        return cls(np.frombuffer(blob, dtype=np.uint8).reshape(-1, TAG))

    def index(self) -> frozenset[bytes]:
        """Return the tags, to look applicants up."""
        return frozenset(bytes(t) for t in self.tags)

    def find(self, ids: list[str], values: list[bytes], context: bytes,
             index: frozenset[bytes] | None = None) -> tuple[np.ndarray, bytes]:
        """Return which applicants the party knows, and their tags (concatenated, in order).

        ``values``: ``F(x)`` of each applicant ``ids[i]``, unblinded (:meth:`Blinded.unblind`).
        """
        index = self.index() if index is None else index
        found = np.zeros(len(values), dtype=bool)
        known = bytearray()
        for i, (customer, value) in enumerate(zip(ids, values, strict=True)):
            tag = tag_of(customer, value, context)
            if tag in index:
                found[i] = True
                known += tag
        return found, bytes(known)


def rows_of(tags: bytes, own: np.ndarray, *, asked: int) -> np.ndarray:
    """Return the party's rows the lender's tags name, in the lender's order.

    Refused: bytes that are not whole tags, a tag named twice, more tags than the request
    asked about, and a tag that is none of the party's customers (each would release a row the
    request did not pay for).
    """
    if len(tags) % TAG:
        raise AlignmentError(f"{len(tags)} bytes of tags are not whole {TAG}-byte tags; refused")
    wanted = [tags[i:i + TAG] for i in range(0, len(tags), TAG)]
    if len(set(wanted)) != len(wanted) or len(wanted) > asked:
        raise AlignmentError(f"the lender names {len(wanted)} customers ({len(set(wanted))} "
                             f"distinct) for a request of {asked} applicants; refused")
    where = {bytes(t): i for i, t in enumerate(own)}
    missing = sum(t not in where for t in wanted)
    if missing:
        raise AlignmentError(f"the lender names {missing} tags that are none of this party's "
                             "customers; refused")
    return np.asarray([where[t] for t in wanted], dtype=np.int64)


@dataclass(frozen=True)
class Blinded:
    """The lender's side of one request: each applicant as ``r * H(x)``, ``r`` kept."""

    scalars: bytes
    points: bytes

    @classmethod
    def of(cls, ids: list[str]) -> Blinded:
        """Blind each applicant with a fresh scalar from the operating system's source."""
        scalars, points = bytearray(), bytearray()
        for customer in ids:
            r = new_key()
            scalars += r
            points += sodium.crypto_scalarmult_ed25519_noclamp(r, hash_to_group(customer))
        return cls(bytes(scalars), bytes(points))

    def unblind(self, evaluated: bytes) -> list[bytes]:
        """Remove each ``r``: return ``k * H(x)`` per applicant."""
        if len(evaluated) != len(self.points):
            raise AlignmentError(f"the party evaluated {len(evaluated) // POINT} points for a "
                                 f"request of {len(self.points) // POINT}; refused")
        out = []
        try:
            for i in range(0, len(evaluated), POINT):
                inverse = sodium.crypto_core_ed25519_scalar_invert(self.scalars[i:i + POINT])
                out.append(bytes(sodium.crypto_scalarmult_ed25519_noclamp(
                    inverse, evaluated[i:i + POINT])))
        except SodiumError as exc:
            raise AlignmentError("the party's evaluation holds a point off the group; "
                                 "refused") from exc
        return out


def seal(key: bytes, plain: bytes, label: str, seq: int = 0) -> bytes:
    """Seal ``plain`` for the peer that shares ``key``; ``label`` and ``seq`` are authenticated.

    >>> k = os.urandom(32)
    >>> unseal(k, seal(k, b"hi", "bureau", 3), "bureau")
    (3, b'hi')
    """
    nonce = os.urandom(_NONCE)
    head = seq.to_bytes(_SEQ, "big")
    return head + nonce + AESGCM(key).encrypt(nonce, plain, head + label.encode())


def unseal(key: bytes, blob: bytes, label: str) -> tuple[int, bytes]:
    """Open :func:`seal`'s output; return (sequence number, plain). Refused if altered."""
    head, nonce, body = blob[:_SEQ], blob[_SEQ:_SEQ + _NONCE], blob[_SEQ + _NONCE:]
    try:
        return int.from_bytes(head, "big"), AESGCM(key).decrypt(nonce, body,
                                                                head + label.encode())
    except Exception as exc:  # cryptography raises InvalidTag without a message
        raise AlignmentError(f"{label}: a served message does not open "
                             f"({type(exc).__name__}); it was altered, or not sealed by the "
                             "peer this node agreed a key with") from exc
