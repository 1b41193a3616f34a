"""What each party of a vertical federation holds at its own node, ready to train.

Every party preprocesses its own table alone (fit on its own customers of its training split,
exactly as :func:`credit_data.design.party_block` does for the centralized model), so no
statistics travel. Rows stay in the party's own table order; after alignment a party only ever
uses the rows of the intersection, in the lender's order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from credit_data.errors import DataError
from credit_data.preprocessing import PartyPreprocessor
from credit_data.saved_preprocessing import sketch_json
from credit_data.settings import DataSettings
from credit_data.split import TRAIN, assign_split, check_label_splits, reproducible_split_key
from credit_data.stability import freeze_columns, freeze_from_sketch
from credit_data.summary import Sketch
from credit_data.tables import PartyTable


@dataclass(frozen=True)
class NodeRows:
    """One party's preprocessed rows, in its own table order.

    ``split`` is the party's own (its split key's): at the lender, the split of every applicant;
    at a passive party, which of its customers its preprocessing was fitted on (the aligned
    customers' split comes from the lender). ``y`` (the labels) is set at the lender only. With
    a preprocessing fitted from the party's
    noisy summary (under DP), ``summary_history`` is that release in RDP terms (to compose
    with the party's other mechanisms), ``summary_selection_delta`` its category-selection
    delta, and ``summary_base_rate`` the lender's noisy positive rate.
    """

    party: str
    ids: list[str]
    x: np.ndarray
    split: np.ndarray
    names: tuple[str, ...]
    y: np.ndarray | None = None
    summary_history: tuple[tuple[float, float, int], ...] = ()
    summary_selection_delta: float = 0.0
    summary_base_rate: float | None = None
    source_columns: int = 0
    preprocessing: dict[str, Any] | None = None  # its JSON form, for the model bundle
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    fingerprint: str = ""  # of the party's table (see PartyTable.fingerprint)
    reference: dict[str, Any] | None = None
    """Each column's bins frozen from the party's training rows (:mod:`credit_data.stability`),
    for its bundle: monitoring compares later periods with them at the party."""
    summary_shares: dict[str, float] | None = None
    """Under DP, each indicator column's share of the rows in the party's noisy summary
    (:func:`credit_data.summary.indicator_shares`): a scorecard's ``average`` reference."""

    @property
    def width(self) -> int:
        """Number of model input columns."""
        return self.x.shape[1]


def training_rows(table: PartyTable, settings: DataSettings, split_key: bytes) -> np.ndarray:
    """Return the party's rows in its own training split (a mask over its table).

    ``split_key`` is the party's own (:mod:`privacy.split_key`): which of its customers its
    preprocessing is fitted on is the party's decision. Which aligned customers train is the
    lender's, sent with the intersection.
    """
    train = assign_split(table.frame.index, split_key, settings.split) == TRAIN
    if not train.any():
        raise DataError(f"{table.source}: party '{table.party}' has no rows in the training split")
    return train


def node_rows(table: PartyTable, settings: DataSettings, seed: int,
              split_key: bytes | None = None, sketch: Sketch | None = None,
              summary_history: tuple[tuple[float, float, int], ...] = (),
              summary_selection_delta: float = 0.0) -> NodeRows:
    """Preprocess one party's table at its own node.

    Without ``sketch`` the preprocessing is fitted on the exact training rows; with it (under
    DP) the sketch fitted from the party's noisy summary is applied instead. The split comes
    from the party's ``split_key`` (a node always passes its own; without one the seed fixes
    it, as for research runs: :func:`credit_data.split.split_keys_of`); ``seed`` seeds the
    preprocessing's subsample.
    """
    key = split_key if split_key is not None else reproducible_split_key(seed, table.party)
    split = assign_split(table.frame.index, key, settings.split)
    train = split == TRAIN
    if not train.any():
        raise DataError(f"{table.source}: party '{table.party}' has no rows in the training split")
    y = None
    if table.labels is not None:
        y = table.labels[settings.label].to_numpy(dtype=np.float32)
        check_label_splits(y, split, table.source, settings.label)
    ids = [str(i) for i in table.frame.index]
    fingerprint = table.fingerprint()
    training = table.frame.loc[train]
    # the monitoring bins: under DP from the noisy summary, else the training rows' deciles
    reference = (freeze_from_sketch(training, sketch) if sketch is not None
                 else freeze_columns(training, table.numeric, table.categorical))
    if sketch is not None:
        del training
        x = _in_chunks(table.frame, sketch.transform, len(sketch.feature_names))
        return NodeRows(party=table.party, ids=ids, x=x, split=split,
                        names=sketch.feature_names, y=y, summary_history=summary_history,
                        summary_selection_delta=summary_selection_delta,
                        summary_base_rate=sketch.base_rate,
                        preprocessing=sketch_json(sketch), numeric=table.numeric,
                        categorical=table.categorical, fingerprint=fingerprint,
                        source_columns=len(table.features), reference=reference)
    pre = PartyPreprocessor(table.numeric, table.categorical, settings.scaler, seed,
                            table.source)
    pre.fit(training)
    del training
    x = _in_chunks(table.frame, pre.transform, len(pre.feature_names))
    return NodeRows(party=table.party, ids=ids, x=x, split=split, names=pre.feature_names, y=y,
                    preprocessing=pre.to_json_dict(), numeric=table.numeric,
                    categorical=table.categorical, fingerprint=fingerprint,
                    source_columns=len(table.features), reference=reference)


TRANSFORM_ROWS = 65_536
"""Rows a party's preprocessing turns into its design at a time."""


def _in_chunks(frame: pd.DataFrame, transform: Callable[[pd.DataFrame], np.ndarray],
               width: int) -> np.ndarray:
    """Return ``transform`` of every row of ``frame`` as one float32 design, built in chunks.

    A row's design depends on that row alone, so the chunks give the whole's design; only one
    chunk's working copies are held at a time.
    """
    x = np.empty((len(frame), width), np.float32)
    for start in range(0, len(frame), TRANSFORM_ROWS):
        x[start:start + TRANSFORM_ROWS] = transform(frame.iloc[start:start + TRANSFORM_ROWS])
    return x


def assign_chunk(ids: list[str] | np.ndarray, seed: int, epoch: int, chunks: int) -> np.ndarray:
    """Return the chunk (0 .. chunks-1) of each ID in one epoch of a vertical federation.

    A keyed hash of the ID, so the lender and every party find the same chunks on their own.

    >>> a = assign_chunk(["x", "y", "z"], seed=0, epoch=1, chunks=4)
    >>> b = assign_chunk(["z", "x"], seed=0, epoch=1, chunks=4)
    >>> bool(a[2] == b[0] and a[0] == b[1]) and set(a.tolist()) <= {0, 1, 2, 3}
    True
    """
    key = hashlib.sha256(f"chunk:{seed}:{epoch}".encode()).hexdigest()[:16]
    # IDs are unique: pandas' default (factorize first) only costs time, same hashes
    hashed = pd.util.hash_pandas_object(pd.Series(np.asarray(ids, dtype=object)), index=False,
                                        hash_key=key, categorize=False).to_numpy()
    return (hashed % np.uint64(chunks)).astype(np.int64)
