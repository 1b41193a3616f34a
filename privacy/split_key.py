"""A node's split key: which of its customers train, decided by no one but the node.

The train/validation/test split (:func:`credit_data.split.assign_split`) is a keyed hash of
each customer's ID. Keyed on the run's seed, the coordinator that sets the seed could move any
customer out of the training split (into the test rows, whose scores and labels the node uses
in the clear) by trying seeds. So the key is the node's own: derived (HMAC-SHA256) from its
master key (:func:`privacy.sealed_key.master_key`: 32 bytes drawn once from the operating
system, mode 0600, in a directory outside every run directory: a deployed node's
``--state-dir``, a simulated party's ``<federation.key_dir>/<party>``). It is never written
anywhere else, and no seed or run config reaches it: the node splits its customers the same way
in every run, whatever the coordinator asks.

With reproducible noise (``privacy.reproducible_noise=true``, or a deployed node's own
``--reproducible-noise``) the split key comes from the seed and the party instead, as every
noise key does: for tests and research runs that must split the same on any machine.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from credit_data.errors import ConfigError
from credit_data.split import reproducible_split_key
from privacy.sealed_key import master_key

__all__ = ["derive_split_key"]

_CONTEXT = b"credit-fl split key v1"


def derive_split_key(key_dir: Path | None, party: str, *, seed: int,
                     reproducible: bool) -> bytes:
    """Return the node's 256-bit split key.

    From the master key in ``key_dir`` (drawn there on first use); from ``seed`` and ``party``
    when ``reproducible`` (no guarantee: anyone can derive it, and the seed moves it).

    >>> a = derive_split_key(None, "lender", seed=0, reproducible=True)
    >>> a == derive_split_key(None, "lender", seed=0, reproducible=True) != derive_split_key(
    ...     None, "lender", seed=1, reproducible=True)
    True
    >>> derive_split_key(None, "lender", seed=0, reproducible=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: lender: the node's split key comes from its master key, ...
    """
    if reproducible:
        return reproducible_split_key(seed, party)
    if key_dir is None:
        raise ConfigError(f"{party}: the node's split key comes from its master key, kept "
                          "outside every run directory; set federation.key_dir (a deployed "
                          "node: --state-dir)")
    return hmac.new(master_key(key_dir), _CONTEXT, hashlib.sha256).digest()
