"""Later periods of the synthetic population: new cohorts of applicants and the book again.

Period 1 (``data.period=1``, the default) is the population a model trains on, exactly as
:func:`credit_data.synthetic.generate` draws it. A later period ``p`` has two views:

* **the cohort** (:func:`cohort`, what ``data.period=p`` loads): ``n_customers`` new applicants
  drawn as period 1 is, from a stream of their own (``[seed, COHORT_STREAM, p]``), with IDs
  prefixed ``P<p>-`` so that they never meet period 1's; each party's table holds its rows of
  them and its own non-applicants;
* **the book** (:func:`book`, what ``credit-fl rerate`` scores): period 1's applicants, the
  same IDs, observed again ``p - 1`` years later at every party: a year older (``age``,
  ``years_employed``, ``history_length_months``, ``account_age_months``), income drifted by
  a few percent, and new delinquencies at the bureau drawn from each borrower's own true
  risk (``delinq_30d_24m``).

``data.shift`` says what changed in the period (periods 2 and later only):

* ``none``: nothing; the same population, new people.
* ``downturn``: a share ``DOWNTURN_HIT`` of people are hit (a job loss, a pay cut). Their true
  default log-odds rise by ``DOWNTURN_RISK``; at the **lender** their ``income`` falls to
  ``DOWNTURN_INCOME`` of what it was and their ``debt_to_income`` rises by
  ``DOWNTURN_DTI``; at the **bureau** their ``utilization`` log-odds rise by
  ``DOWNTURN_UTILIZATION`` and ``delinq_30d_24m`` gains Poisson(``DOWNTURN_DELINQUENCY``).
  Every other column, and every **social** column, is drawn as in period 1.
* ``concept``: P(default | columns) changes and the columns do not: every applicant's default
  log-odds rise by ``CONCEPT_RISK``. No column moves; a model's calibrated probabilities
  understate the risk (what a label-free estimate cannot see).

Everything stays a pure function of ``(n_customers, seed, settings, period, shift)``.

>>> from credit_data.synthetic import generate
>>> p1 = generate(500, seed=3)
>>> same = period_population(500, 3, None, period=1, shift=Shift.none)
>>> same.tables["bureau"].fingerprint() == p1.tables["bureau"].fingerprint()
True
>>> p2 = period_population(500, 3, None, period=2, shift=Shift.downturn)
>>> p2.tables["lender"].frame.index[0].startswith("P2-")
True
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError
from credit_data.settings import Shift, SyntheticSettings
from credit_data.tables import Population

__all__ = ["SHIFTED_COLUMNS", "Shift", "book", "cohort", "period_population"]

COHORT_STREAM = 33
BOOK_STREAM = 34
SHIFT_STREAM = 35
DOWNTURN_HIT = 0.5
DOWNTURN_RISK = 1.0
DOWNTURN_INCOME = 0.5
DOWNTURN_DTI = 0.15
DOWNTURN_UTILIZATION = 1.5
DOWNTURN_DELINQUENCY = 1.5
CONCEPT_RISK = 0.8
BOOK_DELINQUENCY = 2.0
"""A borrower's new 30-day delinquencies in a year: Poisson(this times its true risk)."""


SHIFTED_COLUMNS: dict[Shift, dict[str, tuple[str, ...]]] = {
    Shift.none: {},
    Shift.downturn: {"lender": ("income", "debt_to_income"),
                     "bureau": ("utilization", "delinq_30d_24m")},
    Shift.concept: {},
}
"""The columns each shift moves, per party (every other column is drawn as in period 1)."""


def _check(period: int, shift: Shift) -> None:
    if period < 1:
        raise ConfigError(f"data.period must be 1 or later, got {period}")
    if period == 1 and shift is not Shift.none:
        raise ConfigError(f"data.shift={shift.value} applies to periods 2 and later; period 1 "
                          "is the population the model trained on")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def _hit(rng: np.random.Generator, ids: pd.Index) -> set[str]:
    """Who the downturn hits: a share of every ID any party holds, drawn once per period."""
    ordered = np.sort(np.asarray(ids, dtype=str))
    return set(ordered[rng.random(len(ordered)) < DOWNTURN_HIT].tolist())


def _raise_risk(rng: np.random.Generator, population: Population, rows: np.ndarray,
                shift_logit: float) -> Population:
    """Raise the default log-odds of ``rows`` (a mask over the lender's) by ``shift_logit``.

    Labels are coupled: a defaulter stays one, a non-defaulter defaults with the extra risk.
    """
    lender = population.tables["lender"]
    assert population.truth is not None and lender.labels is not None
    p = population.truth["default_12m"].to_numpy(dtype=np.float64)
    p_new = np.where(rows, _sigmoid(_logit(p) + shift_logit), p)
    extra = (p_new - p) / np.clip(1 - p, 1e-9, None)
    labels = lender.labels.copy()
    default = labels["default_12m"].to_numpy().astype(bool)
    labels["default_12m"] = (default | (rng.random(len(p)) < extra)).astype(np.int8)
    truth = population.truth.copy()
    truth["default_12m"] = p_new
    tables = dict(population.tables)
    tables["lender"] = dataclasses.replace(lender, labels=labels)
    return dataclasses.replace(population, tables=tables, truth=truth)


def _downturn(rng: np.random.Generator, population: Population) -> Population:
    """Hit a share of people: the lender's and the bureau's columns of SHIFTED_COLUMNS move."""
    all_ids = pd.Index(np.concatenate([t.frame.index.to_numpy(dtype=str)
                                       for t in population.tables.values()])).unique()
    hit = _hit(rng, all_ids)
    tables = dict(population.tables)
    lender = tables["lender"].frame.copy()
    at = lender.index.isin(list(hit))
    lender.loc[at, "income"] = np.round(lender.loc[at, "income"] * DOWNTURN_INCOME, -1)
    lender.loc[at, "debt_to_income"] = np.round(np.clip(
        lender.loc[at, "debt_to_income"] + DOWNTURN_DTI, 0.0, 1.5), 3)
    tables["lender"] = dataclasses.replace(tables["lender"], frame=lender)
    if "bureau" in tables:
        bureau = tables["bureau"].frame.copy()
        bt = bureau.index.isin(list(hit))
        util = bureau.loc[bt, "utilization"].to_numpy(dtype=np.float64)
        bureau.loc[bt, "utilization"] = np.round(
            _sigmoid(_logit(util) + DOWNTURN_UTILIZATION), 3)  # NaN stays NaN
        bureau.loc[bt, "delinq_30d_24m"] += rng.poisson(DOWNTURN_DELINQUENCY, int(bt.sum()))
        tables["bureau"] = dataclasses.replace(tables["bureau"], frame=bureau)
    shifted = dataclasses.replace(population, tables=tables)
    return _raise_risk(rng, shifted, at, DOWNTURN_RISK)


def _shifted(population: Population, seed: int, period: int, shift: Shift) -> Population:
    rng = np.random.default_rng([seed, SHIFT_STREAM, period])
    if shift is Shift.downturn:
        return _downturn(rng, population)
    if shift is Shift.concept:
        n = population.tables["lender"].n_rows
        return _raise_risk(rng, population, np.ones(n, dtype=bool), CONCEPT_RISK)
    return population


def _prefixed(population: Population, prefix: str) -> Population:
    def rename(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        out.index = pd.Index([prefix + str(i) for i in frame.index], name=frame.index.name)
        return out

    tables = {p: dataclasses.replace(t, frame=rename(t.frame), labels=None if t.labels is None
                                     else rename(t.labels))
              for p, t in population.tables.items()}
    truth = None if population.truth is None else rename(population.truth)
    return dataclasses.replace(population, tables=tables, truth=truth)


def cohort(n_customers: int, seed: int, settings: SyntheticSettings | None, *, period: int,
           shift: Shift) -> Population:
    """Return period ``period``'s new applicants (period 1: the training population)."""
    from credit_data.synthetic import generate

    _check(period, shift)
    if period == 1:
        return generate(n_customers, seed, settings)
    stream = int(np.random.default_rng([seed, COHORT_STREAM, period]).integers(2**62))
    population = _prefixed(generate(n_customers, stream, settings), f"P{period}-")
    return _shifted(population, seed, period, shift)


def book(n_customers: int, seed: int, settings: SyntheticSettings | None, *, period: int,
         shift: Shift) -> Population:
    """Return period 1's applicants (the book) as every party observes them in ``period``."""
    from credit_data.synthetic import generate

    _check(period, shift)
    population = generate(n_customers, seed, settings)
    if period == 1:
        return population
    rng = np.random.default_rng([seed, BOOK_STREAM, period])
    years = period - 1
    assert population.truth is not None
    risk = population.truth["default_12m"]
    tables = {}
    for party, table in population.tables.items():
        frame = table.frame.copy()
        if party == "lender":
            frame["age"] = np.minimum(frame["age"] + years, 75)
            frame["years_employed"] = frame["years_employed"] + years
            frame["income"] = np.round(frame["income"] * np.exp(
                0.03 * years + 0.05 * rng.standard_normal(len(frame))), -1)
        elif party == "bureau":
            frame["history_length_months"] += 12 * years
            own = risk.reindex(frame.index).fillna(0.02).to_numpy()
            frame["delinq_30d_24m"] += rng.poisson(BOOK_DELINQUENCY * own * years)
        elif party == "social":
            frame["account_age_months"] += 12 * years
        tables[party] = dataclasses.replace(table, frame=frame)
    return _shifted(dataclasses.replace(population, tables=tables), seed, period, shift)


def period_population(n_customers: int, seed: int, settings: SyntheticSettings | None, *,
                      period: int, shift: Shift) -> Population:
    """Return the population ``data.period`` and ``data.shift`` load: the period's cohort."""
    return cohort(n_customers, seed, settings, period=period, shift=shift)
