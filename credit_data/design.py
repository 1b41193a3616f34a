"""Model inputs: one block of columns per party, rows aligned on the lender's applicants.

Each party builds its own block alone: it fits its preprocessor on its own training rows (its
customers whose ID hashes to the training split under its own split key, applicants or not)
and transforms the rows of the applicants it knows. The applicants' split is the lender's (its
split key's), as in a vertical federation. An applicant a party does not know gets zeros and,
for the parties other than the lender, a presence indicator of 0, so thin-file applicants stay
in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from credit_data.errors import DataError
from credit_data.preprocessing import PartyPreprocessor
from credit_data.settings import LABEL_HOLDER, DataSettings
from credit_data.split import (
    TRAIN,
    assign_split,
    check_label_splits,
    reproducible_split_key,
    split_keys_of,
)
from credit_data.tables import PartyTable, Population


@dataclass(frozen=True)
class PartyBlock:
    """One party's transformed columns for every applicant (zeros where it does not know one)."""

    party: str
    values: np.ndarray
    names: tuple[str, ...]
    present: np.ndarray
    preprocessing: dict[str, Any] | None = None  # its JSON form, for the model bundle

    @property
    def width(self) -> int:
        """Number of columns."""
        return self.values.shape[1]


@dataclass(frozen=True)
class Design:
    """Applicant IDs, labels, split and per-party blocks, all row-aligned."""

    ids: np.ndarray
    y: np.ndarray
    split: np.ndarray
    blocks: dict[str, PartyBlock]

    def matrix(self, parties: tuple[str, ...], split: int | None = None) -> np.ndarray:
        """Concatenate the named parties' blocks, optionally for one split only."""
        rows = slice(None) if split is None else self.split == split
        return np.concatenate([self.blocks[p].values[rows] for p in parties], axis=1)

    def labels(self, split: int | None = None) -> np.ndarray:
        """Return the 0/1 labels as float32, optionally for one split only."""
        return self.y if split is None else self.y[self.split == split]

    def widths(self, parties: tuple[str, ...]) -> dict[str, int]:
        """Columns per party, in the given order."""
        return {p: self.blocks[p].width for p in parties}

    def feature_names(self, parties: tuple[str, ...]) -> list[str]:
        """Party-qualified names of the columns of ``matrix(parties)``."""
        return [f"{p}.{n}" for p in parties for n in self.blocks[p].names]

    def rows(self, split: int) -> int:
        """Count the applicants in one split."""
        return int((self.split == split).sum())


def party_block(table: PartyTable, applicant_ids: pd.Index, settings: DataSettings,
                seed: int, split_key: bytes | None = None,
                train: np.ndarray | None = None) -> PartyBlock:
    """Preprocess one party's table and lay it out on the applicants' rows.

    Fitted on the party's rows in ``train`` (a mask over its table), else on its training rows
    under ``split_key`` (see :func:`credit_data.split.split_keys_of`).
    """
    if train is None:
        key = split_key if split_key is not None else reproducible_split_key(seed, table.party)
        train = assign_split(table.frame.index, key, settings.split) == TRAIN
    if not train.any():
        raise DataError(f"{table.source}: party '{table.party}' has no rows in the training split")
    pre = PartyPreprocessor(table.numeric, table.categorical, settings.scaler, seed,
                            table.source)
    pre.fit(table.frame.loc[train])
    position = table.frame.index.get_indexer(applicant_ids)
    present = position >= 0
    values = np.zeros((len(applicant_ids), len(pre.feature_names)), dtype=np.float32)
    if present.any():
        values[present] = pre.transform(table.frame.iloc[position[present]])
    names = pre.feature_names
    if table.party != LABEL_HOLDER:
        values = np.concatenate([values, present[:, None].astype(np.float32)], axis=1)
        names = names + ("present",)
    return PartyBlock(table.party, values, names, present, pre.to_json_dict())


def build_design(population: Population, settings: DataSettings, seed: int,
                 split_keys: Mapping[str, bytes] | None = None,
                 split: np.ndarray | None = None) -> Design:
    """Align every party's block on the lender's applicants.

    ``split_keys`` maps each party to its split key (the lender's splits the applicants; each
    party's picks the rows its preprocessing is fitted on); without them the seed fixes them.
    ``split`` gives the applicants' split instead of the lender's key (a horizontal
    federation's, whose lenders each split their own).
    """
    lender = population.tables[LABEL_HOLDER]
    assert lender.labels is not None
    ids = lender.frame.index
    keys = split_keys_of(split_keys, population.tables, seed)
    if split is None:
        split = assign_split(ids, keys[LABEL_HOLDER], settings.split)
    blocks = {party: party_block(table, ids, settings, seed, keys[party],
                                 train=(split == TRAIN) if party == LABEL_HOLDER else None)
              for party, table in population.tables.items()}
    y = lender.labels[settings.label].to_numpy(dtype=np.float32)
    check_label_splits(y, split, lender.source, settings.label)
    return Design(ids=ids.to_numpy(dtype=object), y=y, split=split, blocks=blocks)
