"""Reason codes of the binned scorecard: the points each column cost, against a reference.

A scorecard's score is its offset plus one bin's points per column, so what a column cost an
applicant is exact: the column's reference points less the points of the applicant's bin. The
two methods of the Regulation B official commentary (12 CFR 1002, Supplement I, comment
9(b)(2)-5) are offered:

* ``maximum`` ("points below maximum"): against the column's best bin, the points the applicant
  would have had with the best value; every column an applicant is not at its best in costs
  points;
* ``average``: against the column's average points over a reference population: every scored
  applicant or, with ``explain.cutoff`` (in points), the applicants just above the cut-off
  (the ``band`` points above it; "the average points of applicants at or slightly above the
  minimum passing score").

Each party computes its own columns' costs from its own bins (no feature value leaves it); the
lender ranks every applicant's adverse factors across the parties (:func:`ranked_reasons`).
Plain numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

METHODS = ("maximum", "average")
"""The Regulation B commentary's two methods (comment 9(b)(2)-5)."""
BAND = 20.0
"""Points above ``explain.cutoff`` that count as "just above" it (the ``average`` method)."""


def column_points(bin_points: np.ndarray, columns: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Sum each row's points per column: ``[rows, bins]`` to ``[rows, columns]``.

    ``columns`` names each bin's column (bins of a column next to each other).

    >>> column_points(np.array([[1.0, 0.0, 5.0]]), ["a", "a", "b"])
    (array([[1., 5.]]), ['a', 'b'])
    """
    names = list(dict.fromkeys(columns))
    index = np.array([names.index(c) for c in columns], dtype=np.int64)
    out = np.zeros((bin_points.shape[0], len(names)))
    np.add.at(out.T, index, bin_points.T)
    return out, names


def reference_points(table_points: np.ndarray, columns: Sequence[str], method: str,
                     per_column: np.ndarray | None = None,
                     reference_rows: np.ndarray | None = None,
                     implicit: Sequence[str] = ()) -> np.ndarray:
    """Return each column's reference points under ``method``.

    ``table_points``: the scorecard table's points per bin (its columns named by ``columns``);
    ``maximum`` takes each column's best bin, and for the ``implicit`` columns (a flag, a one-hot
    column whose merged or unseen categories set no bin) their bin of 0 points too.
    ``average`` needs ``per_column`` (rows' points per column, :func:`column_points`) and,
    optionally, a mask of the ``reference_rows``.

    >>> reference_points(np.array([3.0, -2.0, 1.0]), ["a", "a", "b"], "maximum").tolist()
    [3.0, 1.0]
    >>> reference_points(np.array([3.0, -2.0]), ["a", "f"], "maximum", implicit=["f"]).tolist()
    [3.0, 0.0]
    >>> reference_points(np.array([3.0, -2.0, 1.0]), ["a", "a", "b"], "average",
    ...                  np.array([[3.0, 1.0], [-2.0, 1.0]])).tolist()
    [0.5, 1.0]
    """
    if method not in METHODS:
        raise ValueError(f"explain.scorecard_reference must be one of {METHODS}, got '{method}'")
    names = list(dict.fromkeys(columns))
    if method == "maximum":
        best = np.full(len(names), -np.inf)
        for points, column in zip(table_points, columns, strict=True):
            j = names.index(column)
            best[j] = max(best[j], float(points))
        for column in implicit:  # a flag not set, a merged category: 0 points
            if column in names:
                best[names.index(column)] = max(best[names.index(column)], 0.0)
        return best
    if per_column is None:
        raise ValueError("the average method needs the applicants' points per column")
    rows = per_column if reference_rows is None else per_column[reference_rows]
    if not len(rows):
        raise ValueError("no applicant in the reference population (explain.cutoff: no score "
                         f"within {BAND:g} points above it)")
    return rows.mean(axis=0)


def near_cutoff(score_points: np.ndarray, cutoff: float | None) -> np.ndarray | None:
    """Mask of the applicants just above the cut-off (``None``: no cut-off, everyone counts).

    >>> near_cutoff(np.array([590.0, 605.0, 640.0]), 600.0).tolist()
    [False, True, False]
    """
    if cutoff is None:
        return None
    return (score_points >= cutoff) & (score_points < cutoff + BAND)


def points_lost(per_column: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Points each column cost each applicant (``reference - own``; > 0 is adverse).

    The sum over a party's columns is its partial score's distance from the reference's.
    """
    return reference[None, :] - per_column


def ranked_reasons(lost: Sequence[tuple[np.ndarray, Sequence[tuple[str, str]]]],
                   k: int) -> pd.DataFrame:
    """Return each applicant's top ``k`` adverse factors across every party, by points lost.

    ``lost``: per party, its points lost ``[rows, columns]`` and each column's (code,
    description). Columns as the split network's reasons (``reason_i``, ``reason_i_text``,
    ``reason_i_points``, > 0); an applicant with fewer adverse factors gets empty ones.

    >>> t = ranked_reasons([(np.array([[5.0, -1.0]]), [("l.a", "a"), ("l.b", "b")]),
    ...                     (np.array([[7.0]]), [("b.c", "c")])], 2)
    >>> [str(t.loc[0, c]) for c in ("reason_1", "reason_1_points", "reason_2", "reason_2_points")]
    ['b.c', '7.0', 'l.a', '5.0']
    """
    points = np.concatenate([block for block, _ in lost], axis=1)
    codes = [code for _, names in lost for code in names]
    rows = len(points)
    order = np.argsort(-points, axis=1, kind="stable")
    out: dict[str, object] = {}
    for r in range(k):
        if r < points.shape[1]:
            picked = points[np.arange(rows), order[:, r]]
            index = order[:, r]
        else:
            picked, index = np.zeros(rows), np.zeros(rows, dtype=np.int64)
        adverse = picked > 0
        out[f"reason_{r + 1}"] = np.where(adverse, [codes[j][0] for j in index], "")
        out[f"reason_{r + 1}_text"] = np.where(adverse, [codes[j][1] for j in index], "")
        out[f"reason_{r + 1}_points"] = np.where(adverse, np.round(picked, 2), 0.0)
    return pd.DataFrame(out)
