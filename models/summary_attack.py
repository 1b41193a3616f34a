"""The attack a score summary must stop: reading a row's label off the bin its score fell in.

The adversary knows one row's score (the model's output for a customer it can score, or a
score shown to the customer) and reads a released :class:`~models.metrics.ScoreSummary`: it
finds the bin the score fell in and guesses the label from the bin's counts. Against it stands
the best guess from the score alone. Both guesses are scored at their best, with the labels in
hand (the threshold that gives the most right answers), so the gain measured is an upper bound
of what any rule on the bin's share of defaulters adds to the score.

With bins of one or two rows (the old 10,000 equal bins) the bin's counts are the row's label;
with bins of :data:`~models.metrics.MIN_BIN_ROWS` rows on a coarse public grid they add almost
nothing (``tests/test_score_summaries.py``, ``experiments/bench.py summaries``).
"""

from __future__ import annotations

import numpy as np

from models.metrics import CLIP, SCORE_CELLS, SCORE_GRID, ScoreSummary

__all__ = ["best_guess_accuracy", "bin_shares", "equal_bin_shares", "label_read_gain"]


def bin_shares(summary: ScoreSummary, scores: np.ndarray) -> np.ndarray:
    """Return, for each score, the share of defaulters in the summary's bin it falls in.

    >>> s = ScoreSummary.of(np.r_[np.zeros(30), np.ones(30)], np.linspace(0.01, 0.99, 60))
    >>> s.positives.tolist(), s.negatives.tolist()
    ([0, 30], [21, 9])
    >>> bin_shares(s, np.array([0.02, 0.98])).round(3).tolist()
    [0.0, 0.769]
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), CLIP, 1 - CLIP)
    cells = np.clip(np.searchsorted(SCORE_GRID, p, side="right") - 1, 0, SCORE_CELLS - 1)
    which = np.searchsorted(summary.starts, cells, side="right") - 1
    held = (summary.positives + summary.negatives).astype(np.float64)
    return summary.positives[which] / np.maximum(held[which], 1.0)


def equal_bin_shares(labels: np.ndarray, scores: np.ndarray, bins: int = 10_000) -> np.ndarray:
    """Return each row's bin share under exact counts in equal-width bins (the old release).

    >>> equal_bin_shares(np.array([0, 1, 1]), np.array([0.1, 0.5, 0.5001])).tolist()
    [0.0, 1.0, 1.0]
    """
    cell = np.minimum((np.asarray(scores) * bins).astype(np.int64), bins - 1)
    held = np.bincount(cell, minlength=bins)
    return np.bincount(cell[np.asarray(labels) == 1], minlength=bins)[cell] / held[cell]


def best_guess_accuracy(evidence: np.ndarray, labels: np.ndarray) -> float:
    """Return the most right answers any rule "label 1 when the evidence exceeds t" gets.

    >>> best_guess_accuracy(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    1.0
    >>> best_guess_accuracy(np.array([0.5, 0.5]), np.array([0, 1]))
    0.5
    """
    order = np.argsort(-np.asarray(evidence, dtype=np.float64), kind="stable")
    ranked, values = np.asarray(labels)[order] == 1, np.asarray(evidence)[order]
    cut = np.r_[True, values[1:] != values[:-1], True]  # cut only between distinct values
    flagged_right = np.r_[0, np.cumsum(ranked)]
    flagged_wrong = np.r_[0, np.cumsum(~ranked)]
    right = flagged_right + ((~ranked).sum() - flagged_wrong)
    return float(right[cut].max() / len(ranked))


def label_read_gain(groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
                    ) -> tuple[float, float]:
    """Return the share of rows labelled right from their bins, and from their scores alone.

    Each group is one released summary's rows: ``(bin shares, scores, labels)``; a horizontal
    federation has one group per lender (the reader knows which lender's summary a row is in),
    so the score-alone guess gets a threshold per lender too.

    >>> y = np.array([0, 1, 0, 1])
    >>> label_read_gain([(y.astype(float), np.array([0.2, 0.3, 0.4, 0.1]), y)])
    (1.0, 0.5)
    """
    rows = sum(len(labels) for _, _, labels in groups)
    from_bins = sum(best_guess_accuracy(shares, labels) * len(labels)
                    for shares, _, labels in groups)
    from_scores = sum(best_guess_accuracy(scores, labels) * len(labels)
                      for _, scores, labels in groups)
    return from_bins / rows, from_scores / rows
