"""One entry point that turns data settings into party tables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError
from credit_data.files import load_files, load_frames
from credit_data.periods import period_population
from credit_data.settings import LABEL_HOLDER, DataSettings, Source
from credit_data.synthetic import LABELS
from credit_data.tables import Population

MIN_ROWS = 100
"""The smallest ``data.max_rows``: below it the validation and test splits hold a handful."""


def load_population(settings: DataSettings, seed: int, *, labels: bool = True,
                    frames: Mapping[str, pd.DataFrame] | None = None) -> Population:
    """Generate (``source=synthetic``) or read (``source=files``) every party's table.

    ``frames`` (one pandas DataFrame per party) replaces the files and is validated as they
    are (:func:`~credit_data.files.load_frames`). With ``data.max_rows`` the population is cut
    to that many of the lender's applicants. ``labels=False`` (scoring new applicants) reads a
    lender's file without its label column.
    """
    if settings.max_rows is not None and settings.max_rows < MIN_ROWS:
        raise ConfigError(f"data.max_rows must be at least {MIN_ROWS}, got {settings.max_rows}")
    if frames is not None:
        population = load_frames(frames, settings, labels=labels)
    elif settings.source is Source.frames:
        raise ConfigError("data.source=frames: the rows are DataFrames handed to "
                          "credit_fl.train or TrainedModel.score; give them there, or choose "
                          "data=csv or data=synthetic")
    elif settings.source is Source.synthetic:
        if settings.label not in LABELS:
            raise ConfigError(f"data.label must be one of {LABELS} for synthetic data, "
                              f"got '{settings.label}'")
        population = period_population(settings.n_customers, seed, settings.synthetic,
                                       period=settings.period, shift=settings.shift)
    else:
        population = load_files(settings, labels=labels)
    if settings.max_rows is None:
        return population
    return subsample(population, settings.max_rows, seed)


def subsample(population: Population, max_rows: int, seed: int) -> Population:
    """Keep ``max_rows`` of the lender's applicants, and only their rows at the other parties.

    The applicants kept are those with the smallest keyed hash of their ID (a key apart from
    the split's, so the split of the sample has the configured fractions).

    >>> from credit_data.synthetic import generate
    >>> small = subsample(generate(2_000, seed=0), 500, seed=0)
    >>> small.tables["lender"].n_rows, set(small.tables["bureau"].frame.index) <= set(
    ...     small.tables["lender"].frame.index)
    (500, True)
    """
    lender = population.tables[LABEL_HOLDER]
    if lender.n_rows <= max_rows:
        return population
    ids = lender.frame.index
    hashed = pd.util.hash_pandas_object(pd.Series(np.asarray(ids, dtype=object)), index=False,
                                        hash_key=f"max-rows{seed & 0xFFFFFFFF:08x}",
                                        categorize=False).to_numpy()
    keep = ids[np.sort(np.argsort(hashed, kind="stable")[:max_rows])]
    tables = {}
    for party, table in population.tables.items():
        rows = table.frame.index.isin(keep)
        tables[party] = dataclasses.replace(
            table, frame=table.frame[rows],
            labels=table.labels[rows] if table.labels is not None else None)
    truth = (population.truth.loc[population.truth.index.isin(keep)]
             if population.truth is not None else None)
    return dataclasses.replace(population, tables=tables, truth=truth)
