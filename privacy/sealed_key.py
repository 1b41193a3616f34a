"""A run's secret key at rest: sealed under the node's master key, kept outside the run.

A node's noise key decides its label flips, its noisy summary and its embedding noise; whoever
holds it and what the run released (the flipped labels' gradients, a noisy release) undoes the
noise. So the key never rests in the clear beside what it protects: a run directory holds only
the key sealed (AES-256-GCM) under the node's master key, ``master.key`` (32 random bytes, mode
0600, drawn once per node), which lives in a directory outside every run directory (a deployed
node's ``--state-dir``; a simulated party's ``federation.key_dir``). A copy of a run directory
alone opens nothing. The sealed key stays while the run may be resumed and is removed when the
run finishes (:func:`forget`), which leaves a marker so that a later message of that run never
draws a fresh key (its flips would be drawn twice).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from credit_data.errors import ConfigError, PrivacyLedgerError

KEY_BYTES = 32
NONCE_BYTES = 12
MASTER_KEY_FILE = "master.key"
SEALED_SUFFIX = ".sealed"
FORGOTTEN_SUFFIX = ".removed"
_CONTEXT = b"credit-fl sealed key v1|"


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) whole, unless another writer was first."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(name, path)  # atomic; fails if another worker was first
        except FileExistsError:
            pass
    finally:
        os.unlink(name)


def master_key(key_dir: Path) -> bytes:
    """Return the node's master key in ``key_dir`` (drawn from the OS once, mode 0600)."""
    path = key_dir / MASTER_KEY_FILE
    if not path.is_file():
        _write_once(path, secrets.token_bytes(KEY_BYTES))
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise PrivacyLedgerError(f"{path}: a master key of {len(key)} bytes, not {KEY_BYTES}; "
                                 "the node refuses to open or seal keys with it")
    return key


def seal(key: bytes, master: bytes, label: str) -> bytes:
    """Return ``key`` encrypted and authenticated under ``master`` (``label`` is bound in).

    >>> master = bytes(32)
    >>> unseal(seal(b"k" * 32, master, "lender"), master, "lender", "x") == b"k" * 32
    True
    """
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(master).encrypt(nonce, key, _CONTEXT + label.encode())


def unseal(blob: bytes, master: bytes, label: str, where: str) -> bytes:
    """Open a sealed key; raise :class:`PrivacyLedgerError` naming ``where`` if it does not open.

    >>> sealed = seal(b"k" * 32, bytes(32), "lender")
    >>> unseal(sealed, bytes(31) + b"x", "lender", "noise.key.sealed")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.PrivacyLedgerError: noise.key.sealed: the sealed key does not open ...
    """
    try:
        key = AESGCM(master).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                     _CONTEXT + label.encode())
    except (InvalidTag, ValueError):
        raise PrivacyLedgerError(f"{where}: the sealed key does not open under the node's "
                                 "master key (another node's, or edited); the node refuses to "
                                 "draw a fresh one") from None
    if len(key) != KEY_BYTES:
        raise PrivacyLedgerError(f"{where}: a sealed key of {len(key)} bytes, not {KEY_BYTES}")
    return key


def check_apart(key_dir: Path, run_dir: Path) -> None:
    """Raise :class:`ConfigError` if the master key's directory lies inside the run's."""
    inner, outer = key_dir.resolve(), run_dir.resolve()
    if inner == outer or outer in inner.parents:
        raise ConfigError(f"key directory {key_dir} lies inside the run's directory {run_dir}; "
                          "a master key must live outside every run directory")


def kept_key(path: Path, key_dir: Path, label: str) -> bytes:
    """Return the run's key sealed at ``<path>.sealed``, drawn and sealed on first use.

    ``path`` is where an older version kept the key in the clear: such a key is sealed and its
    clear file removed. A run whose key was removed at its end (``<path>.removed``) gets no
    fresh one.
    """
    sealed = path.with_name(path.name + SEALED_SUFFIX)
    master = master_key(key_dir)
    if not sealed.is_file():
        if path.with_name(path.name + FORGOTTEN_SUFFIX).is_file():
            raise PrivacyLedgerError(f"{path}: this run finished at this node and its key was "
                                     "removed; the node draws no fresh one for it")
        if path.is_file():  # an older version's key in the clear: seal it, remove it
            clear = path.read_bytes()
            if len(clear) != KEY_BYTES:
                raise PrivacyLedgerError(f"{path}: a noise key of {len(clear)} bytes, not "
                                         f"{KEY_BYTES}; the node refuses to draw noise from it")
            _write_once(sealed, seal(clear, master, label))
        else:
            _write_once(sealed, seal(secrets.token_bytes(KEY_BYTES), master, label))
    key = unseal(sealed.read_bytes(), master, label, str(sealed))
    path.unlink(missing_ok=True)
    return key


def forget(path: Path) -> bool:
    """Remove the run's key at ``path`` (sealed or clear), leaving a marker; True if one was."""
    sealed = path.with_name(path.name + SEALED_SUFFIX)
    found = sealed.is_file() or path.is_file()
    if found:
        path.with_name(path.name + FORGOTTEN_SUFFIX).write_text(
            "the run's noise key was removed when the run finished\n")
    sealed.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return found
