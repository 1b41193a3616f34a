"""Preprocessing for a horizontal federation, agreed from aggregate statistics alone.

Lenders in a horizontal federation must encode their rows the same way, or one model cannot
serve them all. Each lender sends only counts, sums and sums of squares of its numeric columns
and the set of categories it has seen (:func:`local_moments`); the server merges them
(:func:`merge_moments`) into a shared :class:`Schema`; each lender then encodes its own rows
with it (:func:`encode`): standardisation with the pooled mean and deviation, missing values to
the mean plus an indicator, one-hot categories over the union of categories.

Under differential privacy the exact statistics are never sent: each lender sends a noisy
summary instead (:mod:`privacy.summary`), and the schema carries quantile knots fitted from the
pooled noisy counts (:meth:`Schema.from_sketch`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from credit_data.errors import DataError
from credit_data.summary import Sketch, categories_of, encode_columns, through_knots


@dataclass(frozen=True)
class Schema:
    """The shared encoding: column order, pooled moments and category vocabularies."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    with_indicator: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    knots: dict[str, list[float]] | None = None  # under DP: quantile knots from noisy counts

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoded columns, in order."""
        return (self.numeric + tuple(f"{c}.missing" for c in self.with_indicator)
                + tuple(f"{c}={v}" for c in self.categorical for v in self.categories[c]))

    def to_json(self) -> str:
        """Serialise for a message."""
        return json.dumps(self.__dict__)

    def to_json_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form (what a model bundle keeps)."""
        return json.loads(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> Schema:
        """Read back :meth:`to_json`."""
        return cls.from_json_dict(json.loads(text))

    @classmethod
    def from_json_dict(cls, raw: dict[str, Any]) -> Schema:
        """Read back :meth:`to_json_dict`."""
        return cls(numeric=tuple(raw["numeric"]), categorical=tuple(raw["categorical"]),
                   mean=tuple(raw["mean"]), std=tuple(raw["std"]),
                   with_indicator=tuple(raw["with_indicator"]),
                   categories={k: tuple(v) for k, v in raw["categories"].items()},
                   knots=raw.get("knots"))

    @classmethod
    def from_sketch(cls, sketch: Sketch) -> Schema:
        """Build the shared encoding from the lenders' noisy summaries (under DP)."""
        return cls(numeric=sketch.numeric, categorical=sketch.categorical,
                   mean=tuple(0.0 for _ in sketch.numeric),
                   std=tuple(1.0 for _ in sketch.numeric),
                   with_indicator=sketch.with_indicator, categories=sketch.categories,
                   knots=sketch.knots)


def local_moments(frame: pd.DataFrame, numeric: tuple[str, ...],
                  categorical: tuple[str, ...]) -> dict[str, Any]:
    """Aggregate statistics of one lender's training rows: nothing row-level leaves.

    >>> f = pd.DataFrame({"a": [1.0, 3.0, None], "c": ["x", "y", "x"]})
    >>> m = local_moments(f, ("a",), ("c",))
    >>> m["numeric"]["a"], m["categorical"]["c"]
    ([2, 4.0, 10.0], ['x', 'y'])
    """
    out: dict[str, Any] = {"rows": len(frame), "numeric": {}, "categorical": {}}
    for column in numeric:
        values = frame[column].to_numpy(dtype=np.float64)
        seen = values[~np.isnan(values)]
        out["numeric"][column] = [int(len(seen)), float(seen.sum()), float((seen ** 2).sum())]
    for column in categorical:
        out["categorical"][column] = sorted(categories_of(frame[column]).unique().tolist())
    return out


def merge_moments(parts: list[dict[str, Any]], numeric: tuple[str, ...],
                  categorical: tuple[str, ...]) -> Schema:
    """Pool the lenders' statistics into the shared schema.

    >>> a = {"rows": 2, "numeric": {"x": [2, 2.0, 2.0]}, "categorical": {}}
    >>> b = {"rows": 2, "numeric": {"x": [1, 3.0, 9.0]}, "categorical": {}}
    >>> s = merge_moments([a, b], ("x",), ())
    >>> s.mean, s.with_indicator
    ((1.6666666666666667,), ('x',))
    """
    rows = sum(p["rows"] for p in parts)
    mean, std, with_indicator = [], [], []
    for column in numeric:
        count = sum(p["numeric"][column][0] for p in parts)
        total = sum(p["numeric"][column][1] for p in parts)
        total_sq = sum(p["numeric"][column][2] for p in parts)
        mu = total / count if count else 0.0
        var = max(total_sq / count - mu ** 2, 0.0) if count else 0.0
        if not (np.isfinite(mu) and np.isfinite(var)):
            raise DataError(f"column '{column}' cannot be standardized: the lenders' sums of "
                            "its values overflow (values near 1e308?); rescale the column")
        mean.append(mu)
        std.append(float(np.sqrt(var)) if var > 1e-12 else 1.0)
        if count < rows:
            with_indicator.append(column)
    categories = {c: tuple(sorted(set().union(*(p["categorical"][c] for p in parts))))
                  for c in categorical}
    return Schema(numeric, categorical, tuple(mean), tuple(std), tuple(with_indicator),
                  categories)


def encode(frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Encode one lender's rows with the shared schema (float32, fixed column layout)."""
    if schema.knots is not None:
        knots = schema.knots
        return encode_columns(frame, schema.numeric, schema.with_indicator, schema.categorical,
                              schema.categories,
                              lambda values: through_knots(values, schema.numeric, knots))

    def standardize(values: np.ndarray) -> np.ndarray:
        scaled = (values - np.asarray(schema.mean)) / np.asarray(schema.std)
        return np.where(np.isnan(values), 0.0, scaled)

    return encode_columns(frame, schema.numeric, schema.with_indicator, schema.categorical,
                          schema.categories, standardize)
