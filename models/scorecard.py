"""Score points and grades from probabilities of default, and each grade's default rate.

A credit team reads a score as points, not as a probability. The scaling is the usual one
(:class:`models.settings.ScorecardSettings`): points grow by ``pdo`` each time the odds of
good double. Grades are bands of points. Every run's report shows how the test rows fall into
the grades, with each grade's default rate, computed from the lender's score summary (counts of
defaulters and of the others in coarse score bins), as every mode reports its metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from models.metrics import ScoreSummary
from models.settings import ScorecardSettings

EPS = 1e-9


def points(p: np.ndarray | float, card: ScorecardSettings) -> np.ndarray:
    """Return the points of probabilities of default ``p``.

    >>> card = ScorecardSettings()
    >>> float(points(0.05, card))  # odds 19:1 good:bad: the base points
    600.0
    >>> round(float(points(1 / 39, card)), 6)  # odds of good doubled: pdo more
    650.0
    """
    factor = card.pdo / math.log(2)
    offset = card.base_points - factor * math.log(card.base_odds)
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return offset - factor * np.log(q / (1 - q))


def grades_of(score_points: np.ndarray, card: ScorecardSettings) -> np.ndarray:
    """Return each score's grade: the best grade whose floor it reaches, else the last.

    >>> grades_of(np.array([700.0, 600.0, 100.0]), ScorecardSettings()).tolist()
    ['A', 'C', 'E']
    """
    values = np.asarray(score_points, dtype=np.float64)
    out = np.full(len(values), card.grades[-1], dtype=object)
    for name, floor in reversed(list(zip(card.grades, card.grade_floors, strict=False))):
        out[values >= floor] = name
    return out



SCORES_COLUMNS = ("id", "probability", "points", "grade")
"""The scores table's columns, in every mode and at every node that scores."""


def scores_table(ids: Any, probability: np.ndarray, card: ScorecardSettings) -> pd.DataFrame:
    """Return the scores table: ``id, probability, points, grade`` (points to 2 decimals).

    The one builder of it: batch scoring (vertical and one-bundle), the scoring service and a
    horizontal lender's node all call it.

    >>> scores_table(["a", "b"], np.array([0.05, 0.5]), ScorecardSettings()).columns.tolist()
    ['id', 'probability', 'points', 'grade']
    """
    score_points = points(probability, card)
    return pd.DataFrame({"id": ids, "probability": probability,
                         "points": np.round(score_points, 2),
                         "grade": grades_of(score_points, card)})


def grade_table(summary: ScoreSummary, card: ScorecardSettings) -> list[dict[str, Any]]:
    """Return, per grade, the rows, their share, the defaulters and the default rate.

    From a score summary: each bin (20 rows or more, :data:`models.metrics.MIN_BIN_ROWS`) is
    graded at its mean score, so the rows of a bin that straddles a grade's edge count in the
    grade of their mean.
    """
    held = (summary.positives + summary.negatives).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(held > 0, summary.score_sums / held, 0.0)
    bins = grades_of(points(means, card), card)
    total = summary.rows
    floors: list[float | None] = [*card.grade_floors, None]
    rows = []
    for name, floor in zip(card.grades, floors, strict=True):
        mine = bins == name
        bad = round(float(summary.positives[mine].sum()))
        n = round(float(held[mine].sum()))
        rows.append({"grade": name, "min_points": floor, "rows": n,
                     "share": n / total if total else 0.0, "defaulters": bad,
                     "default_rate": bad / n if n else None})
    return rows
