r"""Blacklists: each holder's list of customer IDs it confirmed as fraud or charged off.

A holder is an institution apart from the federation's parties (another lender, a consortium):
it holds its list and nothing else. ``data=csv`` reads one file per holder
(``data.blacklists.<holder>=<path>``, a column ``data.id_column``); synthetic data draws the
lists from the population's own truth, with realistic coverage and errors
(:func:`synthetic_lists`):

* each fraudulent identity among the lender's applicants (``truth["fraud_type"]``: synthetic
  identities, and the victims of stolen identities, whose IDs were used elsewhere too) is on
  holder *k*'s list with probability ``0.45, 0.30, 0.25, 0.25, ...``: it defrauded that holder
  before, confirmed or not by the lender;
* a genuine applicant is on it with probability ``0.1 * p_default`` (charged off at the holder:
  risky, not fraud) plus ``0.001`` (a listing in error);
* and the list holds as many IDs again, times ten, of people who never applied to the lender.

Lists are pure functions of ``(population, holder's position, seed)``, from a stream of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError, DataError
from credit_data.tables import Population

LIST_STREAM = 37
FRAUD_COVERAGE = (0.45, 0.30, 0.25)
CHARGED_OFF = 0.1
IN_ERROR = 0.001
OUTSIDERS = 10  # IDs of people who never applied, per listed applicant


@dataclass(frozen=True)
class HolderList:
    """One holder's list: the IDs, and where they came from (for messages)."""

    holder: str
    ids: tuple[str, ...]
    source: str


def synthetic_lists(population: Population, holders: tuple[str, ...],
                    seed: int) -> dict[str, HolderList]:
    """Draw each holder's list from the population's truth (the module docstring's rules).

    >>> from credit_data.synthetic import generate
    >>> lists = synthetic_lists(generate(2_000, seed=1), ("consortium", "telco"), seed=1)
    >>> sorted(lists), len(lists["consortium"].ids) > len(lists["telco"].ids)
    (['consortium', 'telco'], True)
    """
    truth = population.truth
    if truth is None or "fraud_type" not in truth:
        raise ConfigError("blacklists: synthetic lists need the generator's truth; "
                          "data=csv reads one file per holder (data.blacklists.<holder>)")
    fraudulent = (truth["fraud_type"] != "").to_numpy()
    p_genuine = CHARGED_OFF * truth["default_12m"].to_numpy(dtype=float) + IN_ERROR
    out = {}
    for k, holder in enumerate(holders):
        rng = np.random.default_rng([seed, LIST_STREAM, k])
        coverage = FRAUD_COVERAGE[min(k, len(FRAUD_COVERAGE) - 1)]
        draw = rng.random(len(truth))
        listed = np.where(fraudulent, draw < coverage, draw < p_genuine)
        applicants = truth.index[listed].astype(str)
        numbers = rng.choice(90_000_000, size=OUTSIDERS * len(applicants), replace=False)
        outsiders = pd.Index([f"X{n + 10_000_000}" for n in numbers])
        ids = applicants.append(outsiders)[rng.permutation(len(applicants) + len(outsiders))]
        out[holder] = HolderList(holder, tuple(ids), "synthetic")
    return out


def read_list(path: Path, id_column: str, holder: str) -> HolderList:
    """Read one holder's list file; a missing file or column, or an empty list, is named.

    Repeated IDs count once.
    """
    key = f"data.blacklists.{holder}"
    if not path.is_file():
        raise DataError(f"{path}: file not found ({key})")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({key}): {exc}") from exc
    if id_column not in frame.columns:
        raise DataError(f"{path}: ID column '{id_column}' is missing ({key}); the file has "
                        f"columns {list(frame.columns)[:12]}")
    ids = frame[id_column].str.strip()
    ids = ids[ids != ""]
    if ids.empty:
        raise DataError(f"{path}: the list of holder '{holder}' is empty ({key})")
    return HolderList(holder, tuple(dict.fromkeys(ids)), str(path))


def holder_lists(holders: tuple[str, ...], files: dict[str, str], id_column: str,
                 population: Population | None, seed: int) -> dict[str, HolderList]:
    """Each holder's list: from its file where ``data.blacklists`` names one, else synthetic.

    A file named for a holder that ``blacklists.holders`` does not list is refused.
    """
    extra = sorted(set(files) - set(holders))
    if extra:
        raise ConfigError(f"data.blacklists names {extra}, which blacklists.holders does not "
                          f"list (holders: {list(holders)})")
    drawn = [h for h in holders if h not in files]
    out = {h: read_list(Path(files[h]), id_column, h) for h in holders if h in files}
    if drawn:
        if population is None or population.truth is None:
            raise ConfigError(f"data.blacklists.{drawn[0]}: no list file for this holder")
        out = synthetic_lists(population, holders, seed) | out
    return {h: out[h] for h in holders}
