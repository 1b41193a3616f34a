"""Entity alignment by private set intersection (ECDH PSI with ``openmined.psi``).

The server only routes these messages. Who learns what:

* **lender** (PSI client): blinds its applicant IDs once, ``H(id)^a``, and sends the same request
  to every party. From each party's answer it learns which of its applicants that party knows,
  and the size of the party's set. Nothing else about the party's customers.
* **party** (PSI server): sees the lender's blinded IDs, which it cannot open without ``a``; it
  answers with its own blinded set (a Golomb-compressed set of ``H(id)^b``) and the lender's
  request blinded again. It learns the number of the lender's applicants. The lender then sends
  it the IDs of the intersection, encrypted end to end (X25519 key agreement, HKDF, AES-GCM):
  the party learns the intersection with the lender and never the lender's other applicants.
* **server**: sees blinded values, the compressed set, two public keys and a ciphertext. It
  learns the sizes of the sets and of the intersection, never an ID. (We assume an honest but
  curious server: one that altered the routed public keys could read the intersection; in
  deployment each node's link to the server is TLS, and the key exchange is not authenticated
  beyond that.)

Both ends then hold the intersection in the lender's order, which fixes the row order of every
embedding and gradient that travels later.

>>> lender = LenderAlignment(["a", "b", "c", "d"])
>>> bureau = PartyAlignment("bureau", ["x", "c", "a", "y"])
>>> setup = bureau.setup(lender.n_rows)  # the party can do this while the lender blinds
>>> request, lender_key = lender.request()
>>> response, party_key = bureau.answer(request, lender_key)
>>> sealed, known = lender.intersect("bureau", setup, response, party_key)
>>> known.tolist()
[True, False, True, False]
>>> bureau.receive(sealed).tolist()  # positions in the party's own table, in the lender's order
[2, 1]
"""

from __future__ import annotations

import os

import numpy as np
import private_set_intersection.python as psi
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credit_data.errors import AlignmentError

FALSE_POSITIVE_RATE = 1e-12
"""Chance that the compressed set reports an ID the party does not hold (per lookup)."""

_NONCE = 12



def _shared_key(own: X25519PrivateKey, peer: bytes, party: str) -> bytes:
    secret = own.exchange(X25519PublicKey.from_public_bytes(peer))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"credit-fl alignment {party}".encode()).derive(secret)


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


class LenderAlignment:
    """The lender's side: one PSI request for all parties, one intersection per party."""

    def __init__(self, ids: list[str], *, psi_key: bytes | None = None,
                 channel_key: bytes | None = None) -> None:
        self.ids = ids
        self._psi = (psi.client.CreateWithNewKey(True) if psi_key is None
                     else psi.client.CreateFromKey(psi_key, True))
        self._channel = (X25519PrivateKey.generate() if channel_key is None
                         else X25519PrivateKey.from_private_bytes(channel_key))

    @property
    def n_rows(self) -> int:
        """Number of applicants the lender aligns."""
        return len(self.ids)

    def keys(self) -> tuple[bytes, bytes]:
        """Private keys to keep in the node's own state between messages."""
        return bytes(self._psi.GetPrivateKeyBytes()), self._channel.private_bytes_raw()

    def request(self) -> tuple[bytes, bytes]:
        """Blinded IDs for every party, and the lender's public channel key."""
        return self._psi.CreateRequest(self.ids).SerializeToString(), _public(self._channel)

    def intersect(self, party: str, setup: bytes, response: bytes,
                  party_key: bytes) -> tuple[bytes, np.ndarray]:
        """Return the sealed intersection for ``party`` and, per applicant, whether it knows it."""
        server_setup, server_response = psi.ServerSetup(), psi.Response()
        server_setup.ParseFromString(setup)
        server_response.ParseFromString(response)
        found = np.zeros(len(self.ids), dtype=bool)
        found[np.asarray(self._psi.GetIntersection(server_setup, server_response),
                         dtype=np.int64)] = True
        plain = "\n".join(self.ids[i] for i in np.flatnonzero(found)).encode()
        nonce = os.urandom(_NONCE)
        sealed = nonce + AESGCM(_shared_key(self._channel, party_key, party)).encrypt(
            nonce, plain, party.encode())
        return sealed, found


class PartyAlignment:
    """A passive party's side: blind its own set, answer the request, open the intersection.

    ``psi_key`` and ``key`` restore the keys kept between messages.
    """

    def __init__(self, party: str, ids: list[str], *, psi_key: bytes | None = None,
                 key: bytes | None = None) -> None:
        self.party = party
        self.ids = ids
        self._psi = (psi.server.CreateWithNewKey(True) if psi_key is None
                     else psi.server.CreateFromKey(psi_key, True))
        self._key = key

    @property
    def psi_key(self) -> bytes:
        """The party's PSI key, to keep in the node's own state between messages."""
        return bytes(self._psi.GetPrivateKeyBytes())

    def setup(self, lender_rows: int) -> bytes:
        """Blind and compress the party's own IDs (needs only the lender's set size)."""
        return self._psi.CreateSetupMessage(FALSE_POSITIVE_RATE, max(lender_rows, 1), self.ids,
                                            psi.DataStructure.GCS).SerializeToString()

    def answer(self, request: bytes, lender_key: bytes) -> tuple[bytes, bytes]:
        """Return the lender's request blinded again and the party's public channel key."""
        client_request = psi.Request()
        client_request.ParseFromString(request)
        response = self._psi.ProcessRequest(client_request)
        channel = X25519PrivateKey.generate()
        self._key = _shared_key(channel, lender_key, self.party)
        return response.SerializeToString(), _public(channel)

    @property
    def channel_key(self) -> bytes:
        """The agreed key, to keep in the node's own state until the sealed message arrives."""
        if self._key is None:
            raise AlignmentError(f"{self.party}: no channel key yet; answer the request first")
        return self._key

    def receive(self, sealed: bytes) -> np.ndarray:
        """Open the sealed intersection; return the positions of those IDs in ``ids``."""
        try:
            plain = AESGCM(self.channel_key).decrypt(sealed[:_NONCE], sealed[_NONCE:],
                                                     self.party.encode())
        except Exception as exc:  # cryptography raises InvalidTag without a message
            raise AlignmentError(f"{self.party}: the sealed intersection does not open "
                                 f"({type(exc).__name__}); it was altered or not meant for "
                                 "this party") from exc
        shared = plain.decode().split("\n") if plain else []
        index = {customer: i for i, customer in enumerate(self.ids)}
        missing = [c for c in shared if c not in index]
        if missing:
            raise AlignmentError(f"{self.party}: the lender sent {len(missing)} IDs this party "
                                 "does not hold (a PSI false positive or a tampered message)")
        return np.asarray([index[c] for c in shared], dtype=np.int64)
