"""Each lender's own rows in a horizontal federation: its applicants, with the columns it holds.

A lender holds, for its own applicants, its application columns and the columns of the other
parties it pulls reports from (the bureau, by default), each prefixed by the party
(``bureau.utilization``), plus a ``<party>.present`` flag for applicants that party does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from credit_data.partition import lender_names, partition_applicants
from credit_data.settings import LABEL_HOLDER, DataSettings, PartitionSettings
from credit_data.split import assign_split, check_label_splits, split_keys_of
from credit_data.tables import Population


@dataclass(frozen=True)
class LenderRows:
    """One lender's applicants: raw columns, labels and split, row-aligned."""

    party: str
    frame: pd.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    y: np.ndarray
    split: np.ndarray

    @property
    def ids(self) -> np.ndarray:
        """Customer IDs, in row order."""
        return self.frame.index.to_numpy(dtype=object)

    def rows(self, split: int) -> pd.DataFrame:
        """Raw columns of one split."""
        return self.frame.loc[self.split == split]


def joined_columns(population: Population, parties: tuple[str, ...]
                   ) -> tuple[pd.DataFrame, tuple[str, ...], tuple[str, ...]]:
    """Join the other parties' columns onto the lender's applicants, before partitioning.

    Returns the joined frame and its numeric and categorical columns.
    """
    lender = population.tables[LABEL_HOLDER]
    ids = lender.frame.index
    frames = [lender.frame.add_prefix(f"{LABEL_HOLDER}.")]
    numeric = [f"{LABEL_HOLDER}.{c}" for c in lender.numeric]
    categorical = [f"{LABEL_HOLDER}.{c}" for c in lender.categorical]
    for party in parties:
        if party == LABEL_HOLDER:
            continue
        table = population.tables[party]
        joined = table.frame.reindex(ids).add_prefix(f"{party}.")
        joined[f"{party}.present"] = ids.isin(table.frame.index).astype(np.float64)
        frames.append(joined)
        numeric += [f"{party}.{c}" for c in table.numeric] + [f"{party}.present"]
        categorical += [f"{party}.{c}" for c in table.categorical]
    return pd.concat(frames, axis=1), tuple(numeric), tuple(categorical)


def horizontal_rows(population: Population, parties: tuple[str, ...], data: DataSettings,
                    partition: PartitionSettings, seed: int,
                    split_keys: Mapping[str, bytes] | None = None) -> dict[str, LenderRows]:
    """Split the applicants over ``partition.n_lenders`` lenders (``lender-0`` ...).

    Each lender splits its own applicants with its own key (``split_keys``; without them the
    seed fixes every split: :func:`credit_data.split.split_keys_of`).
    """
    lender = population.tables[LABEL_HOLDER]
    assert lender.labels is not None
    frame, numeric, categorical = joined_columns(population, parties)
    y = lender.labels[data.label].to_numpy(dtype=np.float32)
    owner = partition_applicants(partition, y, lender.frame, lender.source, seed)
    names = lender_names(partition.n_lenders)
    keys = split_keys_of(split_keys, names, seed)
    split = np.zeros(len(y), dtype=np.int8)
    for k, name in enumerate(names):
        split[owner == k] = assign_split(lender.frame.index[owner == k], keys[name], data.split)
    check_label_splits(y, split, lender.source, data.label)
    out = {}
    for k, name in enumerate(names):
        mine = owner == k
        out[name] = LenderRows(name, frame.loc[mine], numeric, categorical,
                               y[mine], split[mine])
    return out
