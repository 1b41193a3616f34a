"""Train / validation / test assignment by customer ID.

The split is a keyed hash of the ID under the **split key of the node that decides it** (the
lender in vertical, each lender in horizontal; :mod:`privacy.split_key`): a secret the node
draws once, which no seed or run config reaches, so no coordinator can move a customer out of
the training split by picking seeds, and nobody without the key knows a customer's split. The
same key splits the same customer the same way in every run; a vertical lender tells each party
the split of the customers they share, sealed with the intersection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError, DataError
from credit_data.settings import SplitSettings

TRAIN, VAL, TEST = 0, 1, 2
SPLITS = {TRAIN: "train", VAL: "val", TEST: "test"}
"""Each split's code and its name, the one table every module uses."""


def check_split(settings: SplitSettings) -> None:
    """Raise a ConfigError unless both fractions are positive and leave rows to train on."""
    for key in ("val", "test"):
        value = getattr(settings, key)
        if not 0.0 < value < 1.0:
            raise ConfigError(f"data.split.{key} must lie strictly between 0 and 1, got {value}")
    if settings.val + settings.test >= 1.0:
        raise ConfigError(f"data.split.val + data.split.test must be below 1, got "
                          f"{settings.val + settings.test}")


def reproducible_split_key(seed: int, party: str) -> bytes:
    """Return a split key derived from public values: the seed fixes the split (research only).

    >>> reproducible_split_key(0, "lender") == reproducible_split_key(0, "lender")
    True
    """
    return hashlib.sha256(f"reproducible-split:{seed}:{party}".encode()).digest()


def split_keys_of(keys: Mapping[str, bytes] | None, parties: Iterable[str],
                  seed: int) -> dict[str, bytes]:
    """Return each party's split key: from ``keys``, else derived from ``seed`` (research).

    A federation's nodes key their splits with their own secrets (:mod:`privacy.split_key`);
    without ``keys`` the seed fixes every split, as ``privacy.reproducible_noise`` does.

    >>> split_keys_of(None, ["lender"], 0) == {"lender": reproducible_split_key(0, "lender")}
    True
    """
    return {p: (keys[p] if keys is not None else reproducible_split_key(seed, p))
            for p in parties}


ROWS_AT_ONCE = 65_536
"""IDs hashed at a time: a large table's IDs are never all copied at once."""


def assign_split(ids: pd.Index | np.ndarray, key: bytes, settings: SplitSettings) -> np.ndarray:
    """Return 0 (train), 1 (val) or 2 (test) for each ID, keyed by the node's split ``key``.

    Keyed BLAKE2b of the ID (64 bits of output, a 256-bit key) read as a uniform number in
    [0, 1): below ``test`` the test split, below ``test + val`` validation, else training.

    Examples
    --------
    >>> s = SplitSettings(val=0.2, test=0.2)
    >>> a = assign_split(pd.Index(["a", "b", "c"]), key=bytes(32), settings=s)
    >>> b = assign_split(pd.Index(["c", "a"]), key=bytes(32), settings=s)
    >>> bool(a[2] == b[0] and a[0] == b[1])
    True
    """
    check_split(settings)
    if not 16 <= len(key) <= 64:
        raise ConfigError(f"a split key of {len(key)} bytes; expected 16 to 64 (a node's "
                          "256-bit split key)")
    hashed = np.concatenate([np.frombuffer(b"".join(
        hashlib.blake2b(str(i).encode(), key=key, digest_size=8).digest()
        for i in np.asarray(ids[start:start + ROWS_AT_ONCE], dtype=object)), dtype=">u8")
        for start in range(0, len(ids), ROWS_AT_ONCE)] or [np.zeros(0, ">u8")])
    u = (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out = np.full(len(u), TRAIN, dtype=np.int8)
    out[u < settings.val + settings.test] = VAL
    out[u < settings.test] = TEST
    return out


def check_label_splits(y: np.ndarray, split: np.ndarray, source: str, label: str) -> None:
    """Refuse labelled rows that cannot train: every split needs defaulters and the others.

    A file of a few rows used to pass the checks and fail deep inside training (a division by
    zero, an empty array).

    >>> check_label_splits(np.array([0, 1, 1.0]), np.array([0, 0, 1]), "a.csv", "y")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.DataError: a.csv: the val split has 1 rows (1 with y=1), the test ...
    """
    problems = []
    for code, name in SPLITS.items():
        part = y[split == code]
        positives = int((part == 1).sum())
        if len(part) == 0 or positives in (0, len(part)):
            problems.append(f"the {name} split has {len(part)} rows ({positives} with "
                            f"{label}=1)")
    if problems:
        raise DataError(f"{source}: {', '.join(problems)}: each of the train, validation and "
                        f"test splits needs rows of both classes ({len(y)} rows in all; a few "
                        "hundred at least, with both classes in each split)")
