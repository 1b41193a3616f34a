"""A party's embeddings, sealed once for a scoring service: labelled PSI over an OPRF.

A long-lived scoring service (:mod:`fl_server.scoring_service`) answers a request in one round
to the parties and back, instead of the batch path's PSI request, answer, sealed intersection
and embeddings (:mod:`fl_client.scoring_task`). Each party does once, per model and table:

* draws an OPRF key ``k`` (the operating system's source) and, for each of its customers ``y``,
  computes ``F(y) = k * H(y)`` on edwards25519 (``H``: two Elligator 2 maps of the halves of
  SHA-512, added: the shape of RFC 9380's hash_to_curve, without its expand_message), and from
  ``y`` and ``F(y)`` a tag and a one-time pad (SHAKE-256, bound to the model and the party, as
  RFC 9497's finalization hashes the input with the evaluation);
* sends the lender, sealed end to end (the alignment's signed X25519 channel), the table of
  ``tag(y)`` and ``embedding(y) XOR pad(y)``: 16 bytes plus 4 per embedding value a customer.

A request: the lender blinds each applicant ``x`` as ``r * H(x)`` with a fresh scalar ``r``;
the party multiplies by ``k`` (counting the IDs against its ``max_queries``); the lender
removes ``r``, derives the tag and the pad of ``F(x)``, finds the applicants the party knows
and opens their embeddings. Who learns what:

* **lender**: the embeddings of the applicants it asks about that the party knows, as in the
  batch path, and the party's number of customers; nothing about the others (each pad is a
  pseudo-random function of ``F(y)``, which the lender cannot compute without the party).
* **party**: the number of applicants of each request, never which (the batch path tells it
  which applicants it shares with the lender).
* **server**: sealed messages and counts. A request is sealed under the lender-party channel
  key with a sequence number, so the server cannot ask the party to evaluate IDs of its own,
  nor replay a request.

What this costs: a leaked ``k`` together with the table would open every customer's embedding;
``k`` never leaves the party's disk (owner-only, beside its PSI cache) and is drawn anew for
every model and table.

>>> import numpy as np
>>> key, context = new_key(), table_context("model-1", "bureau")
>>> table = seal_table(key, ["a", "b", "c"], np.eye(3, 2, dtype=np.float32), context)
>>> blinded = Blinded.of(["b", "x"])
>>> found, values = table.open(["b", "x"], blinded.unblind(evaluate(key, blinded.points)), context)
>>> found.tolist(), values[0].tolist()
([True, False], [0.0, 1.0])
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


def _tag_and_pad(customer: str, value: bytes, context: bytes, width: int
                 ) -> tuple[bytes, bytes]:
    name = customer.encode()
    stream = hashlib.shake_256(context + len(name).to_bytes(4, "big") + name + value).digest(
        TAG + width)
    return stream[:TAG], stream[TAG:]


@dataclass(frozen=True)
class SealedTable:
    """A party's customers as (tag, embedding XOR pad), in no particular order."""

    tags: np.ndarray  # (n, TAG) uint8
    cipher: np.ndarray  # (n, 4 * embedding_dim) uint8

    @property
    def rows(self) -> int:
        """Number of the party's customers in the table."""
        return len(self.tags)

    def to_bytes(self) -> bytes:
        """Serialize: rows, width, tags, ciphertexts."""
        n, width = self.cipher.shape
        return (n.to_bytes(8, "big") + width.to_bytes(4, "big") + self.tags.tobytes()
                + self.cipher.tobytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> SealedTable:
        """Read :meth:`to_bytes`; a blob of the wrong length is refused."""
        n, width = int.from_bytes(blob[:8], "big"), int.from_bytes(blob[8:12], "big")
        if len(blob) != 12 + n * (TAG + width) or width % 4:
            raise AlignmentError("a served table of the wrong length; refused")
        body = np.frombuffer(blob, dtype=np.uint8, offset=12)
        return cls(body[:n * TAG].reshape(n, TAG), body[n * TAG:].reshape(n, width))

    def index(self) -> dict[bytes, int]:
        """Tag to row, to look applicants up."""
        return {bytes(t): i for i, t in enumerate(self.tags)}

    def open(self, ids: list[str], values: list[bytes], context: bytes,
             index: dict[bytes, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (which applicants the party knows, their embeddings in the applicants' order).

        ``values``: ``F(x)`` of each applicant ``ids[i]``, unblinded (:meth:`Blinded.unblind`).
        """
        index = self.index() if index is None else index
        width = self.cipher.shape[1]
        found = np.zeros(len(values), dtype=bool)
        rows: list[np.ndarray] = []
        for i, (customer, value) in enumerate(zip(ids, values, strict=True)):
            tag, pad = _tag_and_pad(customer, value, context, width)
            row = index.get(tag)
            if row is None:
                continue
            found[i] = True
            rows.append(self.cipher[row] ^ np.frombuffer(pad, dtype=np.uint8))
        plain = (np.stack(rows) if rows else np.zeros((0, width), dtype=np.uint8))
        return found, np.ascontiguousarray(plain).view("<f4").reshape(len(rows), width // 4)


def seal_table(key: bytes, ids: list[str], embeddings: np.ndarray,
               context: bytes) -> SealedTable:
    """Build a party's table: for each customer, its tag and its embedding under its pad."""
    values = np.ascontiguousarray(embeddings, dtype="<f4")
    if values.ndim != 2 or len(values) != len(ids):
        raise ValueError(f"{len(ids)} customers and embeddings of shape {values.shape}")
    width = values.shape[1] * 4
    tags = np.empty((len(ids), TAG), dtype=np.uint8)
    pads = np.empty((len(ids), width), dtype=np.uint8)
    for i, customer in enumerate(ids):
        value = sodium.crypto_scalarmult_ed25519_noclamp(key, hash_to_group(customer))
        tag, pad = _tag_and_pad(customer, value, context, width)
        tags[i] = np.frombuffer(tag, dtype=np.uint8)
        pads[i] = np.frombuffer(pad, dtype=np.uint8)
    order = np.lexsort(tags.T[::-1])  # sorted by tag: the order says nothing of the party's
    cipher = values.view(np.uint8).reshape(len(ids), width) ^ pads
    return SealedTable(tags[order], cipher[order])


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
