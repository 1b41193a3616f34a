"""Typed, frozen settings of the data layer.

These dataclasses are the one definition of the ``data`` config group; the Hydra schema in
``experiments.config`` is derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

PARTIES: tuple[str, ...] = ("lender", "bureau", "social")
"""Stable party ids. The lender holds the labels."""

LABEL_HOLDER = "lender"


class Source(StrEnum):
    """Where the party tables come from."""

    synthetic = "synthetic"
    files = "files"
    frames = "frames"  # pandas DataFrames handed to ``credit_fl.train`` (kept by no config)


class Shift(StrEnum):
    """What changes in a later period of synthetic data (``credit_data.periods``)."""

    none = "none"
    downturn = "downturn"
    concept = "concept"


class Scaler(StrEnum):
    """How each party scales its numeric columns."""

    quantile = "quantile"
    standard = "standard"


DUCKDB_SUFFIXES: tuple[str, ...] = (".duckdb", ".ddb")
"""A ``path`` ending so names a DuckDB database (its ``query`` selects the party's rows)."""


@dataclass(frozen=True)
class PartySource:
    """One party's table (a CSV or Parquet file, or a database query) and its columns.

    ``features=None`` takes every column but the ID (and, at the lender, the label); each
    non-numeric one must then be declared in ``categorical``. A ``path`` ending in
    ``.parquet`` is a Parquet file; one ending in ``.duckdb`` (a DuckDB database) or a
    SQLAlchemy URL needs ``query``, the SQL that selects the party's rows
    (:mod:`credit_data.sources`).
    """

    path: str
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    id_column: str | None = None
    named_by: str = ""
    """What named the file, for errors: by default ``data.parties.<party>.path``."""
    query: str | None = None
    """At a database: the SQL query whose result is the party's table."""


@dataclass(frozen=True)
class SyntheticSettings:
    """Shape of the synthetic population (see ``credit_data.synthetic``)."""

    bureau_coverage: float = 0.95
    social_coverage: float = 0.93
    bureau_non_applicants: float = 1.0
    social_non_applicants: float = 1.5
    missing_rate: float = 0.04


@dataclass(frozen=True)
class SplitSettings:
    """Fractions of customers in validation and test; the rest train."""

    val: float = 0.15
    test: float = 0.15


@dataclass(frozen=True)
class DataSettings:
    """Everything that decides which rows and columns each party holds."""

    name: str = "synthetic"
    source: Source = Source.synthetic
    n_customers: int = 100_000
    id_column: str = "customer_id"
    label: str = "default_12m"
    parties: dict[str, PartySource] = field(default_factory=dict)
    synthetic: SyntheticSettings = field(default_factory=SyntheticSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    scaler: Scaler = Scaler.quantile
    blacklists: dict[str, str] = field(default_factory=dict)
    """``data=csv``: each blacklist holder's list file (holder -> CSV path with the ID column).
    Synthetic data draws the lists from the population (:mod:`credit_data.blacklists`)."""
    consent: dict[str, str] = field(default_factory=dict)
    """Each party's consent records (party -> CSV file; :mod:`credit_data.consent`): only the
    customers consenting to the run's purpose take part. A party without one uses every row."""
    max_rows: int | None = None
    """Run on a pilot-sized sample: at most this many of the lender's applicants (a keyed hash of
    the ID and the seed picks them), and each other party's rows of those applicants only."""
    period: int = 1
    """Synthetic data: which period's cohort of applicants (1: the training population; see
    :mod:`credit_data.periods`). With ``data=csv`` a period is a set of party files."""
    shift: Shift = Shift.none
    """Synthetic data, periods 2 and later: ``none``, ``downturn`` or ``concept``."""


class PartitionScheme(StrEnum):
    """How applicants are spread over the lenders of a horizontal federation."""

    dirichlet = "dirichlet"
    region = "region"


@dataclass(frozen=True)
class PartitionSettings:
    """How applicants are spread over ``n_lenders`` lenders in a horizontal federation.

    ``dirichlet``: skewed by a Dirichlet(``alpha``) over the default rate; ``region``: each
    lender holds whole regions (``region_column`` at the lender).
    """

    scheme: PartitionScheme = PartitionScheme.dirichlet
    n_lenders: int = 5
    alpha: float = 0.5
    region_column: str = "region"
