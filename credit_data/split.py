"""Train / validation / test assignment by customer ID.

The split is a keyed hash of the ID: every party computes the same assignment for the same
customer on its own, with nothing exchanged, and the seed fixes it.
"""

from __future__ import annotations

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


def assign_split(ids: pd.Index | np.ndarray, seed: int, settings: SplitSettings) -> np.ndarray:
    """Return 0 (train), 1 (val) or 2 (test) for each ID.

    Examples
    --------
    >>> s = SplitSettings(val=0.2, test=0.2)
    >>> a = assign_split(pd.Index(["a", "b", "c"]), seed=0, settings=s)
    >>> b = assign_split(pd.Index(["c", "a"]), seed=0, settings=s)
    >>> bool(a[2] == b[0] and a[0] == b[1])
    True
    """
    check_split(settings)
    key = f"{seed & 0xFFFFFFFFFFFFFFFF:016x}"[:16]
    # IDs are unique: pandas' default (factorize first) only costs time, same hashes
    hashed = pd.util.hash_pandas_object(pd.Series(np.asarray(ids, dtype=object)), index=False,
                                        hash_key=key, categorize=False).to_numpy()
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
