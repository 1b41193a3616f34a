"""Score points and grades from probabilities of default, and each grade's default rate.

A credit team reads a score as points, not as a probability. The scaling is the usual one
(:class:`models.settings.ScorecardSettings`): points grow by ``pdo`` each time the odds of
good double. Grades are bands of points. Every run's report shows how the test rows fall into
the grades, with each grade's default rate, computed from the lender's score summary (counts of
defaulters and of the others in 10,000 probability bins), as every mode reports its metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.metrics import SUMMARY_BINS, ScoreSummary
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


def grade_table(summary: ScoreSummary, card: ScorecardSettings) -> list[dict[str, Any]]:
    """Return, per grade, the rows, their share, the defaulters and the default rate.

    From a score summary: each 1/10,000-wide probability bin is graded at its middle, so a row
    within half a bin of a grade's edge may be counted in the next grade.
    """
    middles = (np.arange(SUMMARY_BINS) + 0.5) / SUMMARY_BINS
    bins = grades_of(points(middles, card), card)
    total = int(summary.positives.sum() + summary.negatives.sum())
    floors: list[float | None] = [*card.grade_floors, None]
    rows = []
    for name, floor in zip(card.grades, floors, strict=True):
        mine = bins == name
        bad = int(summary.positives[mine].sum())
        n = bad + int(summary.negatives[mine].sum())
        rows.append({"grade": name, "min_points": floor, "rows": n,
                     "share": n / total if total else 0.0, "defaulters": bad,
                     "default_rate": bad / n if n else None})
    return rows
