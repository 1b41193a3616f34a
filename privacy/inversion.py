"""Embedding inversion: how well the receiver of a party's embeddings rebuilds its columns.

In vertical federation the lender receives, for every aligned customer, the embedding each
passive party computes from its own columns. An embedding is a function of those columns: a
lender that knows some customers' columns (for example from its own bureau pulls) can fit a
decoder from embedding to columns on those customers and apply it to every other one. The audit
measures exactly that: a decoder trained on a share of the released rows (the rows the attacker
is assumed to know), scored by its R^2 on the rest, column by column. R^2 near 1 means the
embedding gives the column away; near 0 (or below) means the decoder does no better than the
known rows' mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

__all__ = ["DECODERS", "decoder_r2"]

DECODERS = {
    "mlp": "MLPRegressor (64, 64), multi-output, early stopping; inputs and targets standardized",
    "ridge": "RidgeCV (alpha 1e-3..1e3), one per column; inputs and targets standardized",
}
_MIN_ROWS = 10


def _decoder(name: str, seed: int) -> Pipeline:
    if name == "mlp":
        model: Any = MLPRegressor(hidden_layer_sizes=(64, 64), early_stopping=True,
                                  max_iter=300, random_state=seed)
    else:
        model = RidgeCV(alphas=np.logspace(-3, 3, 13))
    return make_pipeline(StandardScaler(), model)


def _fit_predict(decoder: str, seed: int, x_known: np.ndarray, target: np.ndarray,
                 x_held: np.ndarray) -> np.ndarray:
    """Fit on the known rows' standardized targets (NaN: missing); predict the held-out rows."""
    if decoder == "mlp":
        model = _decoder(decoder, seed).fit(x_known, np.nan_to_num(target))
        return np.asarray(model.predict(x_held)).reshape(len(x_held), -1)
    out = np.zeros((len(x_held), target.shape[1]))
    for j in range(target.shape[1]):
        present = ~np.isnan(target[:, j])
        if present.sum() >= _MIN_ROWS:  # else the column's mean: 0 once standardized
            out[:, j] = _decoder(decoder, seed).fit(x_known[present],
                                                    target[present, j]).predict(x_held)
    return out


def _known_and_held(rows: int, known_share: float, seed: int,
                    max_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Draw the rows whose columns the attacker knows and the rows it is scored on."""
    order = np.random.default_rng(seed).permutation(rows)
    if max_rows is not None:
        order = order[:max_rows]
    n_known = int(round(known_share * len(order)))
    known, held = order[:n_known], order[n_known:]
    if min(len(known), len(held)) < _MIN_ROWS:
        raise ValueError(f"the inversion audit needs at least {_MIN_ROWS} known and "
                         f"{_MIN_ROWS} held-out rows, got {len(known)} and {len(held)}")
    return known, held


def _held_out_r2(names: list[str], truth: np.ndarray,
                 predicted: np.ndarray) -> dict[str, float | None]:
    """Score each column on its present held-out values (None under two distinct values)."""
    r2: dict[str, float | None] = {}
    for j, name in enumerate(names):
        present = ~np.isnan(truth[:, j])
        values = truth[present, j]
        r2[name] = (float(r2_score(values, predicted[present, j]))
                    if len(np.unique(values)) >= 2 else None)
    return r2


def decoder_r2(embeddings: np.ndarray, columns: dict[str, np.ndarray], *, known_share: float,
               seed: int, decoder: str = "mlp", max_rows: int | None = None) -> dict[str, Any]:
    """Train a decoder on the known rows; return its held-out R^2 per column.

    Parameters
    ----------
    embeddings:
        ``(rows, width)``: what the receiver holds for each row.
    columns:
        The party's numeric columns on the same rows (NaN where a value is missing). The
        ridge decoder fits each column on the known rows where it is present; the MLP fits
        every known row, a missing value counted as its column's mean (the embedding tells a
        missing value apart, so the network learns it as a case of its own). Missing values are
        left out when the decoder is scored. A column with fewer than two distinct held-out
        values gets None.
    known_share:
        The share of rows the attacker knows the columns of (a seeded draw).
    seed:
        The draw of the known rows and the decoder's initialisation (the attacker's own).
    decoder:
        ``mlp`` or ``ridge`` (:data:`DECODERS`).
    max_rows:
        Rows used at most (a seeded sample), to bound the cost.

    Returns
    -------
    dict
        ``r2`` (column: held-out R^2 or None), ``mean_r2`` (over the columns with one),
        ``known_share``, ``decoder`` (what it is), ``rows`` (held-out rows scored),
        ``known_rows``.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(400, 3))
    >>> cols = {"a": x @ [1.0, 2.0, 0.0], "noise": rng.normal(size=400)}
    >>> out = decoder_r2(x, cols, known_share=0.5, seed=0, decoder="ridge")
    >>> round(out["r2"]["a"], 3), out["r2"]["noise"] < 0.05, out["rows"]
    (1.0, True, 200)
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
    if not 0 < known_share < 1:
        raise ValueError(f"known_share must lie in (0, 1), got {known_share}")
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (rows, width), got shape {x.shape}")
    names = list(columns)
    y = np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in names])
    if len(y) != len(x):
        raise ValueError(f"{len(x)} embeddings for {len(y)} rows of columns")
    known, held = _known_and_held(len(x), known_share, seed, max_rows)
    with np.errstate(all="ignore"):  # an all-missing column gives NaN here, caught below
        mean, std = np.nanmean(y[known], axis=0), np.nanstd(y[known], axis=0)
    mean, std = np.nan_to_num(mean), np.where(np.isfinite(std) & (std > 0), std, 1.0)
    with threadpool_limits(1):  # small matrices: a second BLAS thread cost 10x here
        predicted = _fit_predict(decoder, seed, x[known], (y[known] - mean) / std, x[held])
    r2 = _held_out_r2(names, y[held], predicted * std + mean)
    scored = [v for v in r2.values() if v is not None]
    return {"r2": r2, "mean_r2": float(np.mean(scored)) if scored else None,
            "known_share": known_share, "decoder": f"{decoder}: {DECODERS[decoder]}",
            "rows": int(len(held)), "known_rows": int(len(known))}
