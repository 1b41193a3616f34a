"""Alignment that costs only what changed: each side keeps its PSI work between runs.

A full alignment costs one elliptic-curve multiplication per ID three times over: the lender
blinds its applicants (the request), each party blinds them again (the response), the lender
unblinds the response and looks it up in the party's compressed set (the intersection). Each
side keeps on its own disk, owner-only, under the node's PSI cache
(``federation.psi_cache``; a deployed node's ``<state-dir>/psi-cache``):

* the **lender** (:class:`RequestCache`): one long-lived PSI key and the blinded value of each
  applicant of its last request; a run blinds only the applicants it has not blinded before
  (the request of the others is the same value again, ``H(id)^a`` with the same ``a``);
* the **lender** (:class:`FoundCache`, one per party): which of its applicants the party's set
  held, with the digest of the party's setup message it was looked up in; while the party sends
  the same set (the same digest), only the new applicants are unblinded and looked up;
* each **party** (:class:`AnswerCache`): each blinded request value it answered and its answer,
  under its PSI key (the key of its cached set, :class:`~federation.alignment.SetupCache`); it
  answers only the values it has not answered before.

Nothing of this changes the messages: the request, the response and the sealed intersection
are what a full PSI sends, value for value, so the other side cannot tell a cached answer from a
fresh one and the intersection is the full PSI's. What each side learns about the change is in
docs/privacy.md ("Alignment that costs only what changed").

>>> import tempfile
>>> from federation.alignment import PartyAlignment, SetupCache
>>> root = Path(tempfile.mkdtemp())
>>> requests, answers = RequestCache(root), AnswerCache(root, "bureau")
>>> key, request, blinded = requests.request(["a", "b", "c"])
>>> party_key, setup, _ = SetupCache(root, "bureau").setup(["c", "a", "x"], 3)
>>> side = PartyAlignment("bureau", ["c", "a", "x"], psi_key=party_key)
>>> response, answered = answers.answer(side, request)
>>> found, looked_up = FoundCache(root, "bureau").found(key, ["a", "b", "c"], setup, response)
>>> found.tolist(), (blinded, answered, looked_up)
([True, False, True], (3, 3, 3))
>>> key, request, blinded = requests.request(["a", "b", "c", "d"])  # one new applicant
>>> response, answered = answers.answer(side, request)
>>> found, looked_up = FoundCache(root, "bureau").found(key, ["a", "b", "c", "d"], setup, response)
>>> found.tolist(), (blinded, answered, looked_up)
([True, False, True, False], (1, 1, 1))
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import private_set_intersection.python as psi

from credit_data.errors import AlignmentError
from credit_data.settings import LABEL_HOLDER
from federation.psi_slices import blinded_request, found_rows
from federation.storage import write_atomic

__all__ = ["AnswerCache", "FoundCache", "RequestCache"]


class PartySide(Protocol):
    """What :meth:`AnswerCache.answer` uses of a party's side of the PSI.

    That side is :class:`federation.alignment.PartyAlignment`, which imports this module.
    """

    @property
    def psi_key(self) -> bytes:
        """The party's PSI key."""
        ...

    def process(self, request: psi.Request) -> bytes:
        """Answer a PSI request over the party's own set."""
        ...

ELEMENT_BYTES = 33
"""A blinded ID: a compressed point of P-256."""

KEY = 32
"""A PSI key."""


def _directory(root: Path, party: str, name: str) -> Path:
    path = root / party / name
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # the party's own: its keys are there
    return path


def _elements(blob: bytes, what: Path) -> list[bytes]:
    if len(blob) % ELEMENT_BYTES:
        raise AlignmentError(f"{what}: a cache of blinded IDs whose size is no multiple of "
                             f"{ELEMENT_BYTES} bytes; delete it to align from scratch")
    return [blob[i:i + ELEMENT_BYTES] for i in range(0, len(blob), ELEMENT_BYTES)]


class RequestCache:
    """The lender's PSI key and its applicants' blinded IDs, kept between runs.

    ``directory=None`` (no cache): a new key each run and every applicant blinded.
    """

    def __init__(self, directory: Path | None) -> None:
        self.root = directory

    def request(self, ids: list[str]) -> tuple[bytes, bytes, int]:
        """Return the PSI key, the request for ``ids`` and how many IDs were blinded now."""
        if self.root is None:
            client = psi.client.CreateWithNewKey(True)
            return bytes(client.GetPrivateKeyBytes()), blinded_request(client, ids), len(ids)
        path = _directory(self.root, LABEL_HOLDER, "psi-request") / "request.bin"
        known: dict[str, bytes] = {}
        if path.is_file():  # one file: key, IDs and values are always of one run
            blob = path.read_bytes()
            key, size = blob[:KEY], int.from_bytes(blob[KEY:KEY + 8], "big")
            kept = blob[KEY + 8:KEY + 8 + size].decode().split("\n") if size else []
            values = _elements(blob[KEY + 8 + size:], path)
            if len(kept) != len(values):
                raise AlignmentError(f"{path}: {len(kept)} IDs and {len(values)} blinded values; "
                                     "delete it to align from scratch")
            known = dict(zip(kept, values, strict=True))
            client = psi.client.CreateFromKey(key, True)
        else:
            client = psi.client.CreateWithNewKey(True)
        new = [i for i in ids if i not in known]
        if new:
            fresh = psi.Request()
            fresh.ParseFromString(blinded_request(client, new))
            known.update(zip(new, fresh.encrypted_elements, strict=True))
        request = psi.Request()
        request.reveal_intersection = True
        request.encrypted_elements.extend(known[i] for i in ids)
        key, text = bytes(client.GetPrivateKeyBytes()), "\n".join(ids).encode()
        write_atomic(path, key + len(text).to_bytes(8, "big") + text
                     + b"".join(known[i] for i in ids), mode=0o600)
        return key, request.SerializeToString(), len(new)


class FoundCache:
    """Which applicants a party's set held, for the setup message they were looked up in."""

    def __init__(self, directory: Path | None, party: str) -> None:
        self.path = (None if directory is None
                     else _directory(directory, LABEL_HOLDER, "psi-found") / f"{party}.bin")

    def found(self, psi_key: bytes, ids: list[str], setup: bytes,
              response: bytes) -> tuple[np.ndarray, int]:
        """Return, per applicant, whether the party holds it; and how many were looked up now."""
        digest = hashlib.sha256(psi_key + setup).digest()
        known: dict[str, bool] = {}
        if self.path is not None and self.path.is_file():
            blob = self.path.read_bytes()
            if blob[:32] == digest:
                for line in blob[32:].decode().split("\n") if len(blob) > 32 else []:
                    known[line[1:]] = line[0] == "1"
        todo = np.asarray([k for k, customer in enumerate(ids) if customer not in known],
                          dtype=np.int64)
        found = np.asarray([known.get(customer, False) for customer in ids], dtype=bool)
        if len(todo):
            full, part = psi.Response(), psi.Response()
            full.ParseFromString(response)
            if len(full.encrypted_elements) != len(ids):
                raise AlignmentError(f"the response holds {len(full.encrypted_elements)} values "
                                     f"for {len(ids)} applicants")
            if len(todo) < len(ids):  # else the whole response is looked up, as it came
                part.encrypted_elements.extend(full.encrypted_elements[k] for k in todo)
            server_setup = psi.ServerSetup()
            server_setup.ParseFromString(setup)
            client = psi.client.CreateFromKey(psi_key, True)
            hits = found_rows(client, server_setup, full if len(todo) == len(ids) else part)
            found[todo[hits]] = True
        if self.path is not None:
            lines = "\n".join(f"{int(f)}{customer}" for customer, f in zip(ids, found,
                                                                          strict=True))
            write_atomic(self.path, digest + lines.encode(), mode=0o600)
        return found, len(todo)


class AnswerCache:
    """A party's answers to the lender's blinded IDs, under its PSI key, kept between runs."""

    def __init__(self, directory: Path | None, party: str) -> None:
        self.root, self.party = directory, party

    def answer(self, side: PartySide, request: bytes) -> tuple[bytes, int]:
        """Return the response to ``request`` and how many of its values were answered now."""
        client_request = psi.Request()
        client_request.ParseFromString(request)
        if self.root is None:
            return side.process(client_request), len(client_request.encrypted_elements)
        key = side.psi_key
        path = (_directory(self.root, self.party, "psi-answers")
                / f"{hashlib.sha256(key).hexdigest()[:32]}.bin")
        known: dict[bytes, bytes] = {}
        if path.is_file():
            pairs = _elements(path.read_bytes(), path)
            known = dict(zip(pairs[0::2], pairs[1::2], strict=True))
        values = list(client_request.encrypted_elements)
        new = list(dict.fromkeys(v for v in values if v not in known))
        if new:
            part = psi.Request()
            part.reveal_intersection = client_request.reveal_intersection
            part.encrypted_elements.extend(new)
            answered = psi.Response()
            answered.ParseFromString(side.process(part))
            known.update(zip(new, answered.encrypted_elements, strict=True))
        response = psi.Response()
        response.encrypted_elements.extend(known[v] for v in values)
        write_atomic(path, b"".join(v + known[v] for v in dict.fromkeys(values)), mode=0o600)
        return response.SerializeToString(), len(new)
