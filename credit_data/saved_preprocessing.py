"""A party's fitted preprocessing as JSON, and applying it again to new rows.

A model bundle keeps its party's preprocessing as plain JSON (no pickled estimator): the values
the fit produced (imputation medians, quantiles or scaling moments, the columns that get a
missing-value indicator, category vocabularies). :class:`SavedPreprocessing` reads it back and
transforms new rows exactly as training did: the quantile and scaling steps are scikit-learn's
own estimators, rebuilt from the saved values. Three kinds are saved:

* ``fitted``: :class:`~credit_data.preprocessing.PartyPreprocessor` (fitted on exact rows);
* ``sketch``: :class:`~credit_data.summary.Sketch` (fitted from a noisy summary, under DP);
* ``schema``: :class:`~credit_data.federated_scaling.Schema` (a horizontal federation's).

A category never seen in training is encoded as zeros (unknown) and counted, not refused.

>>> frame = pd.DataFrame({"a": [1.0, None, 3.0, 4.0], "c": ["x", "y", None, "x"]})
>>> from credit_data.preprocessing import PartyPreprocessor
>>> pre = PartyPreprocessor(("a",), ("c",), Scaler.standard, seed=0).fit(frame)
>>> saved = SavedPreprocessing.from_json_dict(pre.to_json_dict())
>>> bool(np.allclose(saved.transform(frame, "f.csv").x, pre.transform(frame)))
True
>>> saved.transform(pd.DataFrame({"a": [2.0], "c": ["z"]}), "new.csv").unknown_categories
{'c': 1}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import QuantileTransformer

from credit_data.errors import DataError
from credit_data.federated_scaling import Schema, encode
from credit_data.settings import Scaler
from credit_data.summary import Sketch, categories_of

KINDS = ("fitted", "sketch", "schema")
SHARED_SCHEMA = "shared"
"""The preprocessing key of a horizontal model's shared schema in a bundle."""


@dataclass(frozen=True)
class Encoded:
    """Rows encoded for the model, and how many values of each column were never seen."""

    x: np.ndarray
    unknown_categories: dict[str, int]


@dataclass(frozen=True)
class SavedPreprocessing:
    """One party's preprocessing, read from its bundle's ``preprocessing.json``."""

    kind: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    values: dict[str, Any]

    @classmethod
    def from_json_dict(cls, raw: dict[str, Any]) -> SavedPreprocessing:
        """Read the JSON form; a missing key is named."""
        try:
            kind = str(raw["kind"])
            if kind not in KINDS:
                raise DataError(f"preprocessing.json: kind '{kind}' is not one of {KINDS}")
            return cls(kind=kind, numeric=tuple(raw["numeric"]),
                       categorical=tuple(raw["categorical"]),
                       categories={k: tuple(v) for k, v in raw["categories"].items()},
                       values=raw)
        except (KeyError, TypeError) as exc:
            raise DataError(f"preprocessing.json: missing or malformed key {exc}") from exc

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The encoded columns, in the model's order."""
        return tuple(self.values["feature_names"])

    @property
    def columns(self) -> tuple[str, ...]:
        """The source columns the preprocessing reads, numeric first."""
        return self.numeric + self.categorical

    def check_columns(self, frame: pd.DataFrame, numeric: tuple[str, ...],
                      categorical: tuple[str, ...], source: str) -> None:
        """Refuse a table that lacks a column, or holds one with another type than training."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: column(s) {missing} the model was trained on are missing")
        for column in self.numeric:
            if column in categorical or not pd.api.types.is_numeric_dtype(frame[column]):
                raise DataError(f"{source}: column '{column}' was numeric in training but is "
                                "categorical here (wrong type); declare it as in training")
        for column in self.categorical:
            if column in numeric:
                raise DataError(f"{source}: column '{column}' was categorical in training but "
                                "is numeric here (wrong type); add it to data.parties.*."
                                "categorical as in training")

    def transform(self, frame: pd.DataFrame, source: str) -> Encoded:
        """Encode ``frame`` as training did; count the categories never seen in training."""
        self.check_columns(frame, tuple(c for c in frame.columns if c in self.numeric),
                           tuple(c for c in frame.columns if c in self.categorical), source)
        unknown = {}
        for column in self.categorical:
            seen = categories_of(frame[column])
            unseen = int((~seen.isin(self.categories[column])).sum())
            if unseen:
                unknown[column] = unseen
        if self.kind == "sketch":
            sketch = Sketch(self.numeric, self.categorical,
                            {k: list(v) for k, v in self.values["knots"].items()},
                            tuple(self.values["with_indicator"]), self.categories)
            x = sketch.transform(frame)
        elif self.kind == "schema":
            x = encode(frame, Schema.from_json_dict(self.values))
        else:
            x = self._fitted(frame)
        if not np.isfinite(x).all():
            bad = sorted({self.feature_names[i] for i in np.flatnonzero(~np.isfinite(x).all(0))})
            raise DataError(f"{source}: column(s) {bad} cannot be encoded (values overflow)")
        return Encoded(x, unknown)

    def _fitted(self, frame: pd.DataFrame) -> np.ndarray:
        v = self.values
        blocks: list[np.ndarray] = []
        kept = list(v["imputed"])
        if self.numeric:
            values = frame[list(self.numeric)].to_numpy(dtype=np.float64)
            numbers = frame[kept].to_numpy(dtype=np.float64)
            medians = np.asarray(v["medians"], dtype=np.float64)
            numbers = np.where(np.isnan(numbers), medians, numbers)
            if kept:
                blocks.append(self._scale(numbers))
            index = [self.numeric.index(c) for c in v["with_indicator"]]
            blocks.append(np.isnan(values[:, index]).astype(np.float64))
        for column in self.categorical:
            seen = categories_of(frame[column]).to_numpy()
            vocab = np.asarray(self.categories[column], dtype=object)
            blocks.append((seen[:, None] == vocab[None, :]).astype(np.float64))
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def _scale(self, numbers: np.ndarray) -> np.ndarray:
        v = self.values
        if v["scaler"] == Scaler.quantile.value:
            quantiles = np.asarray(v["quantiles"], dtype=np.float64)
            scaler = QuantileTransformer(output_distribution="normal",
                                         n_quantiles=quantiles.shape[0])
            scaler.quantiles_ = quantiles
            scaler.references_ = np.asarray(v["references"], dtype=np.float64)
            scaler.n_quantiles_ = quantiles.shape[0]
            scaler.n_features_in_ = quantiles.shape[1]
            return np.asarray(scaler.transform(numbers), dtype=np.float64)
        mean = np.asarray(v["mean"], dtype=np.float64)
        scale = np.asarray(v["scale"], dtype=np.float64)
        return (numbers - mean) / scale


def sketch_json(sketch: Sketch) -> dict[str, Any]:
    """Return the JSON form of a preprocessing fitted from a noisy summary."""
    return {"kind": "sketch", **sketch.to_json_dict(),
            "feature_names": list(sketch.feature_names)}


def schema_json(schema: Schema) -> dict[str, Any]:
    """Return the JSON form of a horizontal federation's shared schema."""
    return {"kind": "schema", **schema.to_json_dict(),
            "feature_names": list(schema.feature_names)}
