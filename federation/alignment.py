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
  learns the sizes of the sets and of the intersection, never an ID. In a deployment each node
  signs its channel public key with its node key (the ECDSA key the SuperLink authenticates it
  by) and checks its peer's signature against the peer's public key, which the partners
  exchanged directly (``--peer-keys``; :class:`ChannelAuth`): a server that swaps a routed
  public key for its own, to read the intersection, is refused. In simulation the keys travel
  unsigned (one process plays every party).

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

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import private_set_intersection.python as psi
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credit_data.errors import AlignmentError
from federation.psi_slices import answered_request, blinded_request, found_rows
from federation.storage import write_atomic

if TYPE_CHECKING:
    from federation.alignment_cache import AnswerCache

KEY_BYTES = 32
"""An X25519 public key; a signed one travels as the key followed by its ECDSA signature."""

FALSE_POSITIVE_RATE = 1e-12
"""Chance that the compressed set reports an ID the party does not hold (per lookup)."""

_NONCE = 12
CAPACITY = 1_000_000



@dataclass(frozen=True)
class ChannelKeys:
    """Where a deployed node finds the keys that authenticate its alignment channel.

    ``signing_key``: the node's own private key (OpenSSH, ECDSA; the one registered with the
    SuperLink). ``peer_keys``: a directory of the other parties' public keys, ``<party>.pub``,
    exchanged between the partners (not through the coordinator). ``run``: binds each
    signature to one run.
    """

    signing_key: str
    peer_keys: str
    run: str


def transcript(*messages: bytes) -> bytes:
    """SHA-256 of the PSI messages a channel key answers, each length-prefixed.

    >>> transcript(b"ab", b"c") != transcript(b"a", b"bc")
    True
    """
    digest = hashlib.sha256()
    for message in messages:
        digest.update(len(message).to_bytes(8, "big"))
        digest.update(message)
    return digest.digest()


def _context(run: str, sender: str, public: bytes, answers: bytes) -> bytes:
    return f"credit-fl alignment channel key|{run}|{sender}|".encode() + public + answers


@dataclass(frozen=True)
class ChannelAuth:
    """Sign this node's channel public key; check a peer's (``party`` is this node's party).

    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> lender_key, bureau_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(
    ...     ec.SECP384R1())
    >>> lender = ChannelAuth("lender", "run-1", lender_key, {"bureau": bureau_key.public_key()})
    >>> bureau = ChannelAuth("bureau", "run-1", bureau_key, {"lender": lender_key.public_key()})
    >>> bureau.open(lender.seal(b"k" * 32), "lender") == b"k" * 32
    True
    >>> bureau.open(b"s" * 32, "lender")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.AlignmentError: bureau: the lender's channel key is not signed ...
    """

    party: str
    run: str
    key: ec.EllipticCurvePrivateKey
    peers: dict[str, ec.EllipticCurvePublicKey]

    @classmethod
    def load(cls, party: str, keys: ChannelKeys) -> ChannelAuth:
        """Read the node's key and its peers' public keys; a bad file is named."""
        try:
            own = serialization.load_ssh_private_key(Path(keys.signing_key).read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise AlignmentError(f"{party}: cannot read the node key {keys.signing_key}: "
                                 f"{exc}") from exc
        if not isinstance(own, ec.EllipticCurvePrivateKey):
            raise AlignmentError(f"{party}: {keys.signing_key} is not an ECDSA key")
        peers: dict[str, ec.EllipticCurvePublicKey] = {}
        directory = Path(keys.peer_keys)
        if not directory.is_dir():
            raise AlignmentError(f"{party}: the peer keys directory {directory} does not exist")
        for path in sorted(directory.glob("*.pub")):
            try:
                public = serialization.load_ssh_public_key(path.read_bytes())
            except ValueError as exc:
                raise AlignmentError(f"{party}: {path} is not an OpenSSH public key: "
                                     f"{exc}") from exc
            if isinstance(public, ec.EllipticCurvePublicKey):
                peers[path.name.removesuffix(".pub")] = public
        return cls(party, keys.run, own, peers)

    def seal(self, public: bytes, answers: bytes = b"") -> bytes:
        """Return this node's channel public key followed by its signature.

        ``answers`` (a :func:`transcript`) binds the key to the PSI messages it goes with, so
        that a router cannot pair a genuine key with PSI messages of its own.
        """
        return public + self.key.sign(_context(self.run, self.party, public, answers),
                                      ec.ECDSA(hashes.SHA384()))

    def open(self, blob: bytes, sender: str, answers: bytes = b"") -> bytes:
        """Return ``sender``'s channel public key once its signature checks; refuse otherwise."""
        public, signature = blob[:KEY_BYTES], blob[KEY_BYTES:]
        peer = self.peers.get(sender)
        if peer is None:
            raise AlignmentError(f"{self.party}: no public key of {sender} among the peer keys; "
                                 "the channel cannot be authenticated")
        try:
            peer.verify(signature, _context(self.run, sender, public, answers),
                        ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError) as exc:
            raise AlignmentError(
                f"{self.party}: the {sender}'s channel key is not signed by the {sender}'s node "
                "key together with the PSI messages it came with: someone between the nodes "
                "(the server routing it) replaced or stripped it, or sent PSI messages of its "
                "own; the alignment is refused") from exc
        return public


def channel_auth(party: str, keys: ChannelKeys | None) -> ChannelAuth | None:
    """Load the node's channel authentication (None in simulation: keys travel unsigned)."""
    return None if keys is None else ChannelAuth.load(party, keys)


def seal_key(auth: ChannelAuth | None, public: bytes, answers: bytes = b"") -> bytes:
    """Sign ``public`` (with its PSI messages) where the node has a key; else send it as is."""
    return public if auth is None else auth.seal(public, answers)


def open_key(auth: ChannelAuth | None, blob: bytes, sender: str, answers: bytes = b"") -> bytes:
    """Check ``sender``'s signature where the node has peer keys; take the key as it is else."""
    return blob[:KEY_BYTES] if auth is None else auth.open(blob, sender, answers)


def shared_key(own: X25519PrivateKey, peer: bytes, party: str) -> bytes:
    """Agree a channel key with ``peer`` (X25519, HKDF-SHA256 bound to ``party``)."""
    secret = own.exchange(X25519PublicKey.from_public_bytes(peer))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"credit-fl alignment {party}".encode()).derive(secret)


def public_bytes(key: X25519PrivateKey) -> bytes:
    """Return the raw X25519 public key of ``key``."""
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def setup_capacity(lender_rows: int, party_rows: int) -> int:
    """Lookups a party's compressed set is built for: one size for every request.

    A million lookups, or the request itself when larger: one cached set then serves training
    and every scoring request, and the false-positive rate of a whole request stays under
    :data:`FALSE_POSITIVE_RATE` (the set grows by under a tenth from 1,000 to 1,000,000
    lookups). ``openmined.psi``'s compressed set fails to build for a capacity far above its
    own size, so it is held under ten times the party's set (and :meth:`PartyAlignment.setup_for`
    falls back to the request's size where it still fails).

    >>> setup_capacity(1, 200_000), setup_capacity(5_000_000, 200_000), setup_capacity(500, 20)
    (1000000, 5000000, 500)
    """
    return max(lender_rows, 1, min(CAPACITY, 10 * party_rows))


def id_set_fingerprint(ids: list[str]) -> str:
    """SHA-256 of a set of IDs (order does not matter).

    >>> id_set_fingerprint(["b", "a"]) == id_set_fingerprint(["a", "b"])
    True
    """
    digest = hashlib.sha256()
    for customer in sorted(ids):
        digest.update(customer.encode() + b"\n")
    return digest.hexdigest()


class SetupCache:
    """A party's blinded, compressed ID set and its PSI key, kept on its own disk.

    Blinding every ID is most of a party's alignment work (one elliptic-curve multiplication
    per ID). A party keeps the setup message and the key that made it in
    ``<cache dir>/<party>/psi/<fingerprint of the ID set>-<capacity>.bin`` (owner-only) and
    reuses them for every later run and scoring request on the same IDs; a changed table has
    another fingerprint, so its set is built anew. What reusing the key reveals is in
    docs/vertical.md ("Alignment paid once").
    """

    def __init__(self, directory: Path | None, party: str) -> None:
        self.directory = None if directory is None else directory / party / "psi"

    def setup(self, ids: list[str], lender_rows: int) -> tuple[bytes, bytes, bool]:
        """Return (PSI key, setup message, whether it came from the cache)."""
        fingerprint = id_set_fingerprint(ids) if self.directory is not None else ""
        if self.directory is not None:
            # any set built for at least this many lookups serves (a fallback's capacity is the
            # request's own size, so a request a little smaller reuses it)
            built = sorted((int(size), path) for path in self.directory.glob(
                f"{fingerprint}-*.bin") if (size := path.stem.rpartition("-")[2]).isdigit()
                and int(size) >= max(lender_rows, 1))
            if built:
                blob = built[0][1].read_bytes()
                return blob[:KEY_BYTES], blob[KEY_BYTES:], True
        side = PartyAlignment("", ids)
        setup, capacity = side.setup_for(lender_rows)
        key = side.psi_key
        if len(key) != KEY_BYTES:
            raise AlignmentError(f"a PSI key of {len(key)} bytes; expected {KEY_BYTES}")
        if self.directory is not None:
            path = self.directory / f"{fingerprint}-{capacity}.bin"
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)  # the party's own: its key is in every file
            write_atomic(path, key + setup, mode=0o600)
        return key, setup, False


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

    def channel_public(self) -> bytes:
        """Return the public channel key (sent with a request of :class:`RequestCache`)."""
        return public_bytes(self._channel)

    def request(self) -> tuple[bytes, bytes]:
        """Blinded IDs for every party, and the lender's public channel key."""
        return blinded_request(self._psi, self.ids), public_bytes(self._channel)

    def intersect(self, party: str, setup: bytes, response: bytes, party_key: bytes,
                  splits: np.ndarray | None = None, found: np.ndarray | None = None
                  ) -> tuple[bytes, np.ndarray]:
        """Return the sealed intersection for ``party`` and, per applicant, whether it knows it.

        With ``splits`` (the lender's split of each applicant, 0, 1 or 2) every shared ID is
        sealed with its split before it (:meth:`PartyAlignment.receive_split`): the party learns
        the split of its shared customers from the lender, whose key decides it. ``found``:
        the lookup already made from ``setup`` and ``response``
        (:class:`~federation.alignment_cache.FoundCache`).
        """
        if found is None:
            server_setup, server_response = psi.ServerSetup(), psi.Response()
            server_setup.ParseFromString(setup)
            server_response.ParseFromString(response)
            found = np.zeros(len(self.ids), dtype=bool)
            found[found_rows(self._psi, server_setup, server_response)] = True
        shared = np.flatnonzero(found)
        plain = "\n".join(self.ids[i] if splits is None else f"{int(splits[i])}{self.ids[i]}"
                          for i in shared).encode()
        nonce = os.urandom(_NONCE)
        sealed = nonce + AESGCM(self.channel_key(party, party_key)).encrypt(
            nonce, plain, party.encode())
        return sealed, found

    def channel_key(self, party: str, party_key: bytes) -> bytes:
        """Return the key agreed with ``party`` (from its checked public key)."""
        return shared_key(self._channel, party_key, party)


class PartyAlignment:
    """A passive party's side: blind its own set, answer the request, open the intersection.

    ``psi_key`` and ``key`` restore the keys kept between messages.
    """

    def __init__(self, party: str, ids: list[str], *, psi_key: bytes | None = None,
                 key: bytes | None = None) -> None:
        self.party = party
        self.ids = ids
        # a hash index of the party's IDs (a fifth of a dict's memory: `psi_memory`), checked
        # before anything is blinded or answered: a repeated ID is refused at the start
        self._index = pd.Index(ids, dtype=object)
        if not self._index.is_unique:
            raise AlignmentError(f"{party}: its own IDs repeat; each must be one customer")
        self._psi = (psi.server.CreateWithNewKey(True) if psi_key is None
                     else psi.server.CreateFromKey(psi_key, True))
        self._key = key
        self.answered = 0

    @property
    def psi_key(self) -> bytes:
        """The party's PSI key, to keep in the node's own state between messages."""
        return bytes(self._psi.GetPrivateKeyBytes())

    def setup(self, lender_rows: int) -> bytes:
        """Blind and compress the party's own IDs (needs only the lender's set size).

        The set is built for :func:`setup_capacity` lookups, so that one setup serves every
        lender request up to that size (:class:`SetupCache`).
        """
        return self.setup_for(lender_rows)[0]

    def setup_for(self, lender_rows: int) -> tuple[bytes, int]:
        """Return the setup message and the number of lookups it was built for.

        ``openmined.psi``'s compressed set fails to build for some ratios of lookups to set
        size (``basic_string::_M_replace_aux``); the request's own size is the fallback.
        """
        for capacity in dict.fromkeys((setup_capacity(lender_rows, len(self.ids)),
                                       max(lender_rows, 1))):
            try:
                return self._psi.CreateSetupMessage(
                    FALSE_POSITIVE_RATE, capacity, self.ids,
                    psi.DataStructure.GCS).SerializeToString(), capacity
            except ValueError as exc:
                failure = exc
        raise AlignmentError(f"{self.party}: openmined.psi could not build the compressed set of "
                             f"{len(self.ids)} IDs for {lender_rows} lookups ({failure})")

    def answer(self, request: bytes, lender_key: bytes, *, answers: AnswerCache | None = None
               ) -> tuple[bytes, bytes]:
        """Return the lender's request blinded again and the party's public channel key.

        ``answers`` answers only the request's values not answered before
        (:class:`~federation.alignment_cache.AnswerCache`); ``answered`` then counts them.
        """
        if answers is None:
            client_request = psi.Request()
            client_request.ParseFromString(request)
            response = self.process(client_request)
            self.answered = len(client_request.encrypted_elements)
        else:
            response, self.answered = answers.answer(self, request)
        channel = X25519PrivateKey.generate()
        self._key = shared_key(channel, lender_key, self.party)
        return response, public_bytes(channel)

    def process(self, request: psi.Request) -> bytes:
        """Blind the values of a parsed request again with the party's key."""
        return answered_request(self._psi, request)

    @property
    def channel_key(self) -> bytes:
        """The agreed key, to keep in the node's own state until the sealed message arrives."""
        if self._key is None:
            raise AlignmentError(f"{self.party}: no channel key yet; answer the request first")
        return self._key

    def receive(self, sealed: bytes) -> np.ndarray:
        """Open the sealed intersection; return the positions of those IDs in ``ids``."""
        return self._positions(self._open(sealed))

    def receive_split(self, sealed: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Open an intersection sealed with the lender's splits: positions and split codes."""
        lines = self._open(sealed)
        if any(not line or line[0] not in "012" for line in lines):
            raise AlignmentError(f"{self.party}: the sealed intersection carries no split "
                                 "(0, 1 or 2) before an ID; a training alignment needs the "
                                 "lender's split of every shared customer")
        splits = np.asarray([int(line[0]) for line in lines], dtype=np.int8)
        return self._positions([line[1:] for line in lines]), splits

    def _open(self, sealed: bytes) -> list[str]:
        try:
            plain = AESGCM(self.channel_key).decrypt(sealed[:_NONCE], sealed[_NONCE:],
                                                     self.party.encode())
        except Exception as exc:  # cryptography raises InvalidTag without a message
            raise AlignmentError(f"{self.party}: the sealed intersection does not open "
                                 f"({type(exc).__name__}); it was altered or not meant for "
                                 "this party") from exc
        return plain.decode().split("\n") if plain else []

    def _positions(self, shared: list[str]) -> np.ndarray:
        positions = np.asarray(self._index.get_indexer(pd.Index(shared, dtype=object)),
                               dtype=np.int64)
        missing = int((positions < 0).sum())
        if missing:
            raise AlignmentError(f"{self.party}: the lender sent {missing} IDs this party "
                                 "does not hold (a PSI false positive or a tampered message)")
        return positions
