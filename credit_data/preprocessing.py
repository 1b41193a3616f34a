"""Preprocessing that one party fits on its own training rows and applies alone.

Numeric columns: median imputation, a missing-value indicator for every column that has gaps in
training, then a quantile transform to a normal shape (or standard scaling). Categorical columns:
one-hot encoding with "missing" as a category of its own and unseen categories ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, QuantileTransformer, StandardScaler

from credit_data.errors import DataError
from credit_data.settings import Scaler
from credit_data.summary import categories_of


class PartyPreprocessor:
    """Fit on one party's training rows; transform any of its rows to a float32 matrix.

    Examples
    --------
    >>> frame = pd.DataFrame({"a": [1.0, None, 3.0, 4.0], "c": ["x", "y", None, "x"]})
    >>> pre = PartyPreprocessor(("a",), ("c",), Scaler.standard, seed=0).fit(frame)
    >>> pre.feature_names
    ('a', 'a.missing', 'c=__missing__', 'c=x', 'c=y')
    >>> pre.transform(frame).shape
    (4, 5)
    """

    def __init__(self, numeric: tuple[str, ...], categorical: tuple[str, ...], scaler: Scaler,
                 seed: int, source: str = "") -> None:
        self.source = source  # the party's file, for errors
        self.numeric = numeric
        self.categorical = categorical
        self.scaler = scaler
        self.seed = seed
        self._transformer: ColumnTransformer | None = None
        self.feature_names: tuple[str, ...] = ()

    def _scaler(self, n_rows: int) -> QuantileTransformer | StandardScaler:
        if self.scaler is Scaler.quantile:
            return QuantileTransformer(output_distribution="normal",
                                       n_quantiles=max(2, min(1000, n_rows)),
                                       subsample=200_000, random_state=self.seed)
        return StandardScaler()

    def fit(self, frame: pd.DataFrame) -> PartyPreprocessor:
        """Fit on the party's own training rows."""
        self._transformer = self._build(len(frame))
        self._transformer.fit(self._prepare(frame))
        self.feature_names = self._names()
        return self

    def _build(self, n_rows: int) -> ColumnTransformer:
        parts = []
        if self.numeric:
            scale = Pipeline([("impute", SimpleImputer(strategy="median")),
                              ("scale", self._scaler(n_rows))])
            parts.append(("num", scale, list(self.numeric)))
            parts.append(("missing", MissingIndicator(features="missing-only", error_on_new=False),
                          list(self.numeric)))
        if self.categorical:
            parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False,
                                               dtype=np.float32), list(self.categorical)))
        return ColumnTransformer(parts, sparse_threshold=0.0, verbose_feature_names_out=False)

    def fit_transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Fit on the party's own training rows and return them transformed (one pass)."""
        self._transformer = self._build(len(frame))
        x = self._transformer.fit_transform(self._prepare(frame))
        self.feature_names = self._names()
        return self._finite(np.asarray(x, dtype=np.float32), frame)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Transform rows of this party to a dense float32 matrix."""
        if self._transformer is None:
            raise RuntimeError("PartyPreprocessor.transform called before fit")
        return self._finite(np.asarray(self._transformer.transform(self._prepare(frame)),
                                       dtype=np.float32), frame)

    def _finite(self, x: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
        """Return ``x``, or name the columns whose values the scaler could not represent."""
        bad = ~np.isfinite(x).all(axis=0)
        if not bad.any():
            return x
        columns = sorted({self.feature_names[i].split("=")[0].removesuffix(".missing")
                          for i in np.flatnonzero(bad)})
        largest = ", ".join(f"'{c}' up to {float(np.nanmax(np.abs(frame[c]))):.3g}"
                            for c in columns if c in self.numeric)
        where = f"{self.source}: " if self.source else ""
        raise DataError(f"{where}column(s) {columns} cannot be scaled with data.scaler="
                        f"{self.scaler.value} ({largest}): the values overflow it; use "
                        "data.scaler=quantile or rescale the column(s)")

    def _prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[list(self.numeric) + list(self.categorical)]  # copy on write (pandas 3)
        for column in self.categorical:
            out[column] = categories_of(out[column])
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """Return what the fit produced as JSON (a model bundle's ``preprocessing.json``).

        Read back by :class:`credit_data.saved_preprocessing.SavedPreprocessing`.
        """
        if self._transformer is None:
            raise RuntimeError("PartyPreprocessor.to_json_dict called before fit")
        out: dict[str, Any] = {
            "kind": "fitted", "scaler": self.scaler.value, "numeric": list(self.numeric),
            "categorical": list(self.categorical), "imputed": [], "medians": [],
            "with_indicator": [], "categories": {}, "feature_names": list(self.feature_names)}
        for name, fitted, columns in self._transformer.transformers_:
            if name == "num":
                impute, scale = fitted.named_steps["impute"], fitted.named_steps["scale"]
                out["imputed"] = [str(c) for c in impute.get_feature_names_out(columns)]
                out["medians"] = [float(m) for m in impute.statistics_
                                  if not np.isnan(m)]
                if self.scaler is Scaler.quantile:
                    out["quantiles"] = scale.quantiles_.tolist()
                    out["references"] = scale.references_.tolist()
                else:
                    out["mean"], out["scale"] = scale.mean_.tolist(), scale.scale_.tolist()
            elif name == "missing":
                out["with_indicator"] = [columns[i] for i in fitted.features_]
            elif name == "cat":
                out["categories"] = {c: [str(v) for v in cats] for c, cats in
                                     zip(columns, fitted.categories_, strict=True)}
        return out

    def _names(self) -> tuple[str, ...]:
        assert self._transformer is not None
        names: list[str] = []
        for name, fitted, columns in self._transformer.transformers_:
            if name == "num":
                kept = fitted.named_steps["impute"].get_feature_names_out(columns)
                names += [str(c) for c in kept]
            elif name == "missing":
                names += [f"{columns[i]}.missing" for i in fitted.features_]
            elif name == "cat":
                for column, cats in zip(columns, fitted.categories_, strict=True):
                    names += [f"{column}={c}" for c in cats]
        return tuple(names)
