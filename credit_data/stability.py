r"""Stability indices of a column against bins frozen from training rows (pure numpy/pandas).

A party freezes, from its own training rows, the bins of each of its columns
(:func:`freeze_columns`): numeric columns by training deciles, categorical ones by their
categories (the rare ones together as ``other``), a bin of missing values for each. Later it
counts a period's rows into the same bins (:func:`bin_counts`), merges neighbouring bins until
each holds at least ``min_count`` rows on both sides (:func:`merge_small`), and computes the
characteristic stability index (the population stability index of one column):

.. math::

    \mathrm{CSI} = \sum_b (c_b - r_b) \ln(c_b / r_b)

over the bins' shares ``r_b`` (training) and ``c_b`` (the period). Only the index and the
merged counts leave the party.

>>> import pandas as pd
>>> train = pd.DataFrame({"x": [float(i) for i in range(1000)]})
>>> spec = freeze_columns(train, ("x",), ())["x"]
>>> len(spec["edges"]), sum(spec["counts"])
(9, 1000)
>>> round(column_index(train["x"], spec, min_count=10).index, 12)
0.0
>>> column_index(train["x"] + 500, spec, min_count=10).index > 0.25
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from credit_data.errors import DataError
from credit_data.summary import Sketch

__all__ = ["BINS", "ColumnIndex", "bin_counts", "column_index", "freeze_columns",
           "freeze_from_sketch", "freeze_values", "merge_small", "psi", "status_of"]

BINS = 10
"""Numeric columns are frozen into training deciles (fewer where values repeat)."""
OTHER = "__other__"
MIN_CATEGORY_SHARE = 0.01
"""A category holding less than this share of the training rows is counted as ``other``."""


def freeze_values(values: np.ndarray | pd.Series, bins: int = BINS) -> dict[str, Any]:
    """Freeze the bins of one numeric column: interior quantile edges and training counts.

    The last bin holds the missing values.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    edges = (np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
             if len(finite) else np.zeros(0))
    spec: dict[str, Any] = {"kind": "numeric", "edges": [float(e) for e in edges]}
    spec["counts"] = [int(c) for c in bin_counts(v, spec)]
    return spec


def _freeze_categorical(values: pd.Series) -> dict[str, Any]:
    counts = values.dropna().astype(str).value_counts()
    kept = sorted(counts[counts >= MIN_CATEGORY_SHARE * max(len(values), 1)].index)
    spec: dict[str, Any] = {"kind": "categorical", "categories": kept}
    spec["counts"] = [int(c) for c in bin_counts(values, spec)]
    return spec


def freeze_columns(frame: pd.DataFrame, numeric: tuple[str, ...],
                   categorical: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Freeze every column's bins from a party's training rows (kept in its bundle)."""
    out = {c: freeze_values(frame[c].to_numpy(dtype=np.float64)) for c in numeric}
    out |= {c: _freeze_categorical(frame[c]) for c in categorical}
    return out


def freeze_from_sketch(frame: pd.DataFrame, sketch: Sketch) -> dict[str, dict[str, Any]]:
    """Freeze every column's bins from a party's noisy summary (a party under DP).

    The edges are deciles of the sketch's knots and the categories the ones the summary
    released, both paid for by the summary's epsilon: no edge moves with one training row, so
    the training counts in these bins have the sensitivity the monitoring noise assumes
    (:func:`freeze_columns` would cut at the exact training deciles). A numeric column without
    knots is one bin.

    >>> from credit_data.summary import Sketch
    >>> sketch = Sketch(("x",), (), {"x": [0.0, 100.0]}, (), {})
    >>> freeze_from_sketch(pd.DataFrame({"x": [5.0, 55.0, 95.0]}), sketch)["x"]["edges"][:2]
    [10.0, 20.0]
    """
    out: dict[str, dict[str, Any]] = {}
    for column in sketch.numeric:
        knots = np.asarray(sketch.knots.get(column) or [], dtype=np.float64)
        edges = (np.unique(np.interp(np.linspace(0, 1, BINS + 1)[1:-1],
                                     np.linspace(0, 1, len(knots)), knots))
                 if len(knots) else np.zeros(0))
        spec: dict[str, Any] = {"kind": "numeric", "edges": [float(e) for e in edges]}
        spec["counts"] = [int(c) for c in bin_counts(frame[column].to_numpy(np.float64), spec)]
        out[column] = spec
    for column in sketch.categorical:
        spec = {"kind": "categorical", "categories": sorted(sketch.categories[column])}
        spec["counts"] = [int(c) for c in bin_counts(frame[column], spec)]
        out[column] = spec
    return out


def bin_counts(values: np.ndarray | pd.Series, spec: dict[str, Any]) -> np.ndarray:
    """Count ``values`` into the frozen bins of ``spec`` (missing values in the last bin)."""
    if spec["kind"] == "numeric":
        v = np.asarray(values, dtype=np.float64)
        edges = np.asarray(spec["edges"], dtype=np.float64)
        finite = np.isfinite(v)
        index = np.where(finite, np.searchsorted(edges, np.where(finite, v, 0.0),
                                                 side="right"), len(edges) + 1)
        return np.bincount(index, minlength=len(edges) + 2).astype(np.int64)
    categories = list(spec["categories"])
    series = pd.Series(values, dtype=object)
    missing = series.isna().to_numpy()
    codes = pd.Categorical(series.astype(str), categories=categories).codes.astype(np.int64)
    index = np.where(missing, len(categories) + 1, np.where(codes < 0, len(categories), codes))
    return np.bincount(index, minlength=len(categories) + 2).astype(np.int64)


def merge_small(reference: np.ndarray, current: np.ndarray,
                min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins until each holds ``min_count`` rows on both sides.

    Bins are walked in order (the missing bin last); a group closes once both its counts reach
    ``min_count``; a short last group joins the one before. Empty on both sides: dropped.

    >>> merge_small(np.array([5, 50, 3, 60]), np.array([40, 2, 50, 1]), 10)
    (array([55, 63]), array([42, 51]))
    """
    groups_r: list[int] = []
    groups_c: list[int] = []
    acc_r = acc_c = 0
    for r, c in zip(reference.tolist(), current.tolist(), strict=True):
        acc_r, acc_c = acc_r + r, acc_c + c
        if acc_r >= min_count and acc_c >= min_count:
            groups_r.append(acc_r)
            groups_c.append(acc_c)
            acc_r = acc_c = 0
    if acc_r or acc_c:
        if groups_r:
            groups_r[-1] += acc_r
            groups_c[-1] += acc_c
        else:
            groups_r, groups_c = [acc_r], [acc_c]
    return np.array(groups_r, dtype=np.int64), np.array(groups_c, dtype=np.int64)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Return the population stability index of two count vectors over the same bins.

    A bin empty on one side only is given half a count there (it stays finite).

    >>> psi(np.array([50, 50]), np.array([50, 50]))
    0.0
    >>> round(psi(np.array([50, 50]), np.array([80, 20])), 4)
    0.4159
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if r.sum() <= 0 or c.sum() <= 0:
        raise DataError("a stability index needs rows on both sides")
    r, c = np.where(r > 0, r, 0.5), np.where(c > 0, c, 0.5)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


@dataclass(frozen=True)
class ColumnIndex:
    """One column's stability index and the merged counts it was computed from."""

    index: float
    reference: tuple[int, ...]
    current: tuple[int, ...]

    @property
    def rows(self) -> int:
        """Rows counted in the period."""
        return int(sum(self.current))


def column_index(values: np.ndarray | pd.Series, spec: dict[str, Any],
                 min_count: int) -> ColumnIndex:
    """Count ``values`` into ``spec``'s bins, merge the small ones and return the index."""
    reference, current = merge_small(np.asarray(spec["counts"], dtype=np.int64),
                                     bin_counts(values, spec), min_count)
    return ColumnIndex(psi(reference, current), tuple(int(r) for r in reference),
                       tuple(int(c) for c in current))


def status_of(value: float, watch: float, act: float) -> str:
    """``stable`` below ``watch``, ``watch`` below ``act``, else ``act``.

    >>> [status_of(v, 0.1, 0.25) for v in (0.05, 0.1, 0.3)]
    ['stable', 'watch', 'act']
    """
    return "act" if value >= act else "watch" if value >= watch else "stable"
