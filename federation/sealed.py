"""Arrays sealed end to end between the lender and a party: the coordinator routes bytes.

Every embedding and every per-record gradient of a vertical run (training, the final scoring of
every split, batch scoring) travels sealed under a key that only its two ends hold: the
alignment's X25519 channel key (:func:`federation.alignment.shared_key`, signed with the node
keys in a deployment), stretched by HKDF-SHA256 into a key for the exchanges alone, and
AES-GCM with a fresh 96-bit nonce per message. The associated data binds each blob to the run,
its sender, its receiver, what it holds (``kind``) and where it belongs (``counter``: the
exchange's epoch and chunk, the final epoch): a router that swaps two blobs between chunks,
epochs, kinds or parties, replays one, or alters a byte, is refused by the receiver, which opens
with the counter it expects itself. What the server sees of an array is its length.

>>> import os
>>> key = exchange_key(os.urandom(32))
>>> bureau = SealedChannel(key, "run-1", own="bureau", peer="lender")
>>> lender = SealedChannel(key, "run-1", own="lender", peer="bureau")
>>> blob = bureau.seal("embeddings", (3, 1), np.ones((2, 4), np.float32))
>>> blob.dtype, lender.open("embeddings", (3, 1), blob).tolist()[0]
(dtype('uint8'), [1.0, 1.0, 1.0, 1.0])
>>> lender.open("embeddings", (3, 0), blob)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
credit_data.errors.AlignmentError: lender: the embeddings of (3, 0) from bureau do not open ...
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credit_data.errors import AlignmentError
from federation.alignment import transcript

_NONCE = 12
_DOMAIN = b"credit-fl sealed array v1"
KEY_PREFIX = "exchange "
"""Node state key of the exchange key with a peer: ``exchange <peer>``."""


def exchange_key(channel_key: bytes) -> bytes:
    """Derive the key of the exchanges from the alignment's channel key (HKDF-SHA256).

    A key of its own: the alignment's key seals the intersection, this one the arrays.

    >>> exchange_key(b"k" * 32) != exchange_key(b"j" * 32)
    True
    """
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_DOMAIN).derive(channel_key)


def state_key(peer: str) -> str:
    """Name of the exchange key with ``peer`` in a node's state (:data:`KEY_PREFIX`)."""
    return KEY_PREFIX + peer


def keep_key(keys: dict[str, bytes], peer: str, channel_key: bytes) -> None:
    """Keep the exchange key with ``peer``, derived from the alignment's ``channel_key``."""
    keys[state_key(peer)] = exchange_key(channel_key)


def _associated(run: str, sender: str, receiver: str, kind: str,
                counter: tuple[int, ...]) -> bytes:
    return transcript(_DOMAIN, run.encode(), sender.encode(), receiver.encode(), kind.encode(),
                      ",".join(str(int(c)) for c in counter).encode())


@dataclass(frozen=True)
class SealedChannel:
    """One node's end of a sealed channel with one peer (``own`` and ``peer``: party names)."""

    key: bytes
    run: str
    own: str
    peer: str

    @classmethod
    def of(cls, keys: dict[str, bytes], run: str, own: str, peer: str) -> SealedChannel:
        """Return the channel with ``peer`` whose key the node keeps in ``keys``."""
        key = keys.get(state_key(peer))
        if key is None:
            raise AlignmentError(f"{own}: no exchange key with {peer} in this node's state; "
                                 "the alignment with it did not run here")
        return cls(key, run, own, peer)

    def seal(self, kind: str, counter: tuple[int, ...], array: np.ndarray) -> np.ndarray:
        """Return ``array`` sealed for the peer, as bytes (a ``uint8`` array, to route)."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        nonce = os.urandom(_NONCE)
        sealed = nonce + AESGCM(self.key).encrypt(nonce, buffer.getvalue(), _associated(
            self.run, self.own, self.peer, kind, counter))
        return np.frombuffer(sealed, dtype=np.uint8)

    def open(self, kind: str, counter: tuple[int, ...], blob: np.ndarray | bytes
             ) -> np.ndarray:
        """Open what the peer sealed as ``kind`` at ``counter``; refuse anything else."""
        raw = blob.tobytes() if isinstance(blob, np.ndarray) else bytes(blob)
        try:
            plain = AESGCM(self.key).decrypt(raw[:_NONCE], raw[_NONCE:], _associated(
                self.run, self.peer, self.own, kind, counter))
        except Exception as exc:  # cryptography raises InvalidTag without a message
            raise AlignmentError(
                f"{self.own}: the {kind} of {tuple(counter)} from {self.peer} do not open "
                f"({type(exc).__name__}): altered, sealed for another exchange, party or run, "
                "or replayed by the router; refused") from exc
        return np.load(io.BytesIO(plain), allow_pickle=False)
