"""Column summaries on a public grid, and the preprocessing a noisy summary fits.

Under differential privacy no preprocessing may be fitted on exact training rows (a quantile
transform's end points are the exact column minimum and maximum; a one-hot vocabulary lists
rare categories). Instead a party counts its training rows on a grid fixed in advance
(:func:`column_counts`), :mod:`privacy.summary` noises the counts, and
:class:`SketchPreprocessor` is fitted from the noisy counts alone: quantile knots for every
numeric column, missing-value indicators, category vocabularies. No column bounds need be
declared: the grid is a symmetric log scale that covers every finite value.

Plain numpy and pandas; no randomness here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri

MISSING_CATEGORY = "__missing__"
_STEPS_PER_DECADE = 20
_POSITIVE = 10.0 ** (np.arange(-4 * _STEPS_PER_DECADE, 10 * _STEPS_PER_DECADE + 1)
                     / _STEPS_PER_DECADE)
GRID = np.r_[-_POSITIVE[::-1], _POSITIVE]
"""Bin edges: 0, then +-10^(k/20) from 1e-4 to 1e10 (about 12% apart); values past the outer
edges fall in the outer bins. ``len(GRID) + 1`` bins."""
QUANTILES = np.linspace(0.0, 1.0, 201)
"""Probabilities at which a fitted column keeps its knots."""
_P_CLIP = 5e-4


def categories_of(values: pd.Series) -> pd.Series:
    """Categories as strings, with missing values as a category of their own."""
    return values.astype(object).where(values.notna(), MISSING_CATEGORY).astype(str)


@dataclass(frozen=True)
class ColumnCounts:
    """Exact counts of one party's training rows: never leaves the party as they are."""

    rows: int
    numeric: dict[str, np.ndarray]  # per column: counts per grid bin, then the missing count
    categorical: dict[str, dict[str, int]]
    positives: int | None = None

    @property
    def cells_per_record(self) -> int:
        """Cells one record adds 1 to: one per column, plus the label count."""
        return len(self.numeric) + len(self.categorical) + (self.positives is not None)


def column_counts(frame: pd.DataFrame, numeric: tuple[str, ...], categorical: tuple[str, ...],
                  labels: np.ndarray | None = None) -> ColumnCounts:
    """Count training rows per grid bin (numeric), per category, and the positive labels.

    >>> c = column_counts(pd.DataFrame({"a": [0.5, 2.0, None]}), ("a",), ())
    >>> int(c.numeric["a"].sum()), int(c.numeric["a"][-1])
    (3, 1)
    """
    out: dict[str, np.ndarray] = {}
    for column in numeric:
        values = frame[column].to_numpy(dtype=np.float64)
        missing = np.isnan(values)
        bins = np.searchsorted(GRID, values[~missing], side="right")
        counts = np.bincount(bins, minlength=len(GRID) + 1).astype(np.float64)
        out[column] = np.r_[counts, float(missing.sum())]
    cats = {c: {str(k): int(v) for k, v in categories_of(frame[c]).value_counts().items()}
            for c in categorical}
    positives = None if labels is None else int(np.asarray(labels).sum())
    return ColumnCounts(len(frame), out, cats, positives)


def knots_from_counts(bins: np.ndarray, floor: float) -> list[float] | None:
    """Values at :data:`QUANTILES` from (noisy) grid counts; ``None`` when nothing is left.

    ``floor`` is what a cell's noise can reach (four deviations). The finest resolution is
    picked (grid bins merged by 1, 2, 4, ... 256) at which the cells above the floor, whose
    noise grows with the square root of the merge, hold at least 80% of the column's noisy
    total; the column's span runs from the first to the last such cell, and within it every
    cell counts with its noisy value (clipped at 0). Values spread evenly within a cell.

    >>> bins = np.zeros(len(GRID) + 1); bins[np.searchsorted(GRID, [1.5, 3.0], "right")] = 50
    >>> k = knots_from_counts(bins, 0.0)
    >>> 1.4 < k[0] < k[-1] < 3.3
    True
    """
    edges = np.r_[GRID[0], GRID, GRID[-1]]  # bin i runs from edges[i] to edges[i + 1]
    total = max(float(bins.sum()), 1.0)
    for merge in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        n = int(np.ceil(len(bins) / merge))
        cells = np.add.reduceat(bins, np.arange(0, len(bins), merge))
        above = np.flatnonzero(cells > floor * np.sqrt(merge))
        if len(above) and cells[above].sum() >= 0.8 * total:
            break
    else:
        return None
    first, last = above[0], above[-1]
    kept = np.zeros(n)
    kept[first:last + 1] = np.clip(cells[first:last + 1], 0.0, None)
    starts = np.minimum(np.arange(n) * merge, len(bins) - 1)
    ends = np.minimum(starts + merge, len(bins))
    lo, hi = edges[starts], edges[ends]
    span = kept[first:last + 1]
    p = np.r_[0.0, np.cumsum(span) / span.sum()]
    x = np.r_[lo[first], hi[first:last + 1]]
    rising = np.r_[True, np.diff(p) > 0]
    return [float(v) for v in np.interp(QUANTILES, p[rising], x[rising])]


def transform_numeric(values: np.ndarray, knots: list[float]) -> np.ndarray:
    """Map values through the knots' CDF to a standard normal (NaN to 0, the median).

    >>> transform_numeric(np.array([np.nan, -5.0, 5.0]), [0.0, 1.0, 2.0]).round(2).tolist()
    [0.0, -3.29, 3.29]
    """
    k = np.asarray(knots, dtype=np.float64)
    probabilities = np.linspace(0.0, 1.0, len(k))
    unique, first = np.unique(k, return_index=True)
    last = len(k) - 1 - np.unique(k[::-1], return_index=True)[1]
    middle = (probabilities[first] + probabilities[last]) / 2  # ties: the middle of their span
    if len(unique) == 1:
        p = np.full(values.shape, 0.5)
    else:
        p = np.interp(values, unique, middle)
    out = ndtri(np.clip(p, _P_CLIP, 1 - _P_CLIP))
    return np.where(np.isnan(values), 0.0, out)


def through_knots(values: np.ndarray, numeric: tuple[str, ...],
                  knots: dict[str, list[float]]) -> np.ndarray:
    """Map each numeric column (a matrix, NaN where missing) through its knots."""
    return np.stack([transform_numeric(values[:, i], knots[c]) for i, c in enumerate(numeric)],
                    axis=1)


def encode_columns(frame: pd.DataFrame, numeric: tuple[str, ...],
                   with_indicator: tuple[str, ...], categorical: tuple[str, ...],
                   categories: dict[str, tuple[str, ...]],
                   scale: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Encode rows in the shared layout: scaled numbers, missing-value indicators, one-hot.

    ``scale`` maps the numeric matrix (NaN where missing) to its scaled values; a category
    outside ``categories`` gets zeros.

    >>> f = pd.DataFrame({"a": [1.0, None], "c": ["x", "y"]})
    >>> encode_columns(f, ("a",), ("a",), ("c",), {"c": ("x",)}, np.nan_to_num).tolist()
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    blocks = []
    if numeric:
        values = frame[list(numeric)].to_numpy(dtype=np.float64)
        blocks.append(scale(values))
        index = [numeric.index(c) for c in with_indicator]
        blocks.append(np.isnan(values[:, index]).astype(np.float64))
    for column in categorical:
        seen = categories_of(frame[column]).to_numpy()
        vocab = np.asarray(categories[column], dtype=object)
        blocks.append((seen[:, None] == vocab[None, :]).astype(np.float64))
    if not blocks:
        return np.zeros((len(frame), 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1).astype(np.float32)


@dataclass(frozen=True)
class Sketch:
    """Preprocessing fitted from a noisy summary: safe to apply, publish or ship."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    knots: dict[str, list[float]]
    with_indicator: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    base_rate: float | None = None

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoded columns, in order."""
        return (self.numeric + tuple(f"{c}.missing" for c in self.with_indicator)
                + tuple(f"{c}={v}" for c in self.categorical for v in self.categories[c]))

    def to_json_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        return {"numeric": list(self.numeric), "categorical": list(self.categorical),
                "knots": self.knots, "with_indicator": list(self.with_indicator),
                "categories": {k: list(v) for k, v in self.categories.items()},
                "base_rate": self.base_rate}

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode rows: numeric columns through the knots, indicators, one-hot categories.

        A category the sketch does not know gets zeros.
        """
        return encode_columns(frame, self.numeric, self.with_indicator, self.categorical,
                              self.categories, lambda values: through_knots(values, self.numeric,
                                                                            self.knots))


def sketch_from_summaries(summaries: list[dict[str, Any]], numeric: tuple[str, ...],
                          categorical: tuple[str, ...]) -> Sketch:
    """Fit the preprocessing from one or more noisy summaries (pooled by adding counts).

    Each summary (see :func:`privacy.summary.noisy_summary`) carries its noise's standard
    deviation; a cell counts as non-empty above four deviations of the pooled noise, so a
    cell that held no record shows up with probability about 3e-5.
    """
    noise = float(np.sqrt(sum(s["noise_std"] ** 2 for s in summaries)))
    floor = 4.0 * noise
    knots, with_indicator = {}, []
    for column in numeric:
        cells = np.sum([np.asarray(s["numeric"][column], dtype=np.float64) for s in summaries],
                       axis=0)
        fitted = knots_from_counts(cells[:-1], floor)
        knots[column] = fitted if fitted is not None else [0.0]
        if cells[-1] > floor:
            with_indicator.append(column)
    categories = {}
    for column in categorical:
        seen: set[str] = set()
        for s in summaries:
            seen |= set(s["categorical"][column])
        categories[column] = tuple(sorted(seen))
    positives = [s.get("positives") for s in summaries]
    base_rate = None
    if positives and all(p is not None for p in positives):
        rows = sum(s["rows"] for s in summaries)
        pooled = sum(float(p) for p in positives if p is not None)
        base_rate = float(min(max(pooled / max(rows, 1), 1e-3), 1 - 1e-3))
    return Sketch(numeric, categorical, knots, tuple(with_indicator), categories, base_rate)


def indicator_shares(summary: dict[str, Any], sketch: Sketch) -> dict[str, float]:
    """Return each indicator column's share of the rows as a noisy summary has it.

    ``c.missing``: the column's noisy missing count over its noisy total; ``c=v``: the released
    category's noisy count over the noisy total of the first numeric column (with none, over
    the column's released counts; their shares scaled down to sum to 1 where noise took them
    past it). Noisy counts clipped at 0: post-processing of the summary, inside its epsilon (a
    scorecard's ``average`` reference under DP, :func:`models.binned_scorecard.summary_bin_shares`).

    >>> s = {"numeric": {"a": [30.0, 50.0, 20.0]}, "categorical": {"c": {"x": 25.0}}}
    >>> indicator_shares(s, Sketch(("a",), ("c",), {"a": [0.0, 1.0]}, ("a",), {"c": ("x",)}))
    {'a.missing': 0.2, 'c=x': 0.25}
    """
    def total(cells: Any) -> float:
        return max(float(np.clip(np.asarray(cells, dtype=np.float64), 0.0, None).sum()), 1.0)

    out: dict[str, float] = {}
    for column in sketch.with_indicator:
        cells = np.asarray(summary["numeric"][column], dtype=np.float64)
        out[f"{column}.missing"] = min(max(float(cells[-1]), 0.0) / total(cells), 1.0)
    for column in sketch.categorical:
        counts = summary["categorical"].get(column, {})
        rows = (total(summary["numeric"][sketch.numeric[0]]) if sketch.numeric
                else total(list(counts.values())))
        shares = {v: max(float(counts.get(v, 0.0)), 0.0) / rows for v in sketch.categories[column]}
        whole = max(sum(shares.values()), 1.0)  # noise may take the released past the rows
        out |= {f"{column}={v}": share / whole for v, share in shares.items()}
    return out
