"""The in-memory form of what each party holds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pandas as pd

ROWS_AT_ONCE = 65_536
"""Rows hashed at a time by :meth:`PartyTable.fingerprint`."""


@dataclass(frozen=True)
class PartyTable:
    """One party's rows, keyed by customer ID.

    Attributes
    ----------
    party:
        Stable party id (``lender``, ``bureau``, ``social``).
    frame:
        Feature columns only, indexed by the customer ID as a string.
    numeric, categorical:
        The feature columns by kind; together they are ``frame.columns``.
    source:
        Where the rows came from (a file path, or ``synthetic``), for error messages and reports.
    labels:
        At the label holder only: the 0/1 outcome column(s), aligned with ``frame``.
    """

    party: str
    frame: pd.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    source: str
    labels: pd.DataFrame | None = None

    @property
    def features(self) -> tuple[str, ...]:
        """All feature columns, numeric first."""
        return self.numeric + self.categorical

    @property
    def n_rows(self) -> int:
        """Number of customers this party knows."""
        return len(self.frame)

    def rows(self, mask: pd.Series | Any) -> PartyTable:
        """Return the same table cut to the rows of ``mask`` (labels too)."""
        return PartyTable(self.party, self.frame.loc[mask], self.numeric, self.categorical,
                          self.source, None if self.labels is None else self.labels.loc[mask])

    def fingerprint(self) -> str:
        """SHA-256 over the IDs, column names and values: equal exactly when the table is.

        The rows' hashes are taken ``ROWS_AT_ONCE`` at a time (a row's hash is its own), so a
        large table is never hashed whole at once.
        """
        digest = hashlib.sha256("\x1f".join(map(str, self.frame.columns)).encode())
        for start in range(0, len(self.frame), ROWS_AT_ONCE):
            rows = self.frame.iloc[start:start + ROWS_AT_ONCE]
            digest.update(pd.util.hash_pandas_object(rows, index=True).to_numpy().tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Population:
    """The party tables of one dataset, plus what only a simulation can know.

    ``truth`` (synthetic data only) holds, for each label, the true probability of every
    applicant, indexed like the lender's table; no party ever sees it.
    """

    name: str
    tables: dict[str, PartyTable]
    truth: pd.DataFrame | None = None
