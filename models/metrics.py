"""Credit-scoring metrics on predicted default probabilities.

Every report computes its metrics from a :class:`ScoreSummary` of each split: counts of
defaulters and of the others in coarse score bins, the sums behind the Brier score, the log-loss
and the calibration table, and the node's own AUC, KS and calibration error computed on its rows.
Summaries of disjoint rows add up, so a horizontal server pools its lenders' summaries and a
vertical server reads the lender's, without a single row; a simulation and a deployment compute
the same numbers the same way.

A summary leaves its node, and whoever knows one row's score reads the bin that row fell in: a
bin of a few rows would give its label away. So a summary's bins are cells of a public grid
(:data:`SCORE_GRID`, fixed in advance), merged from the lowest score up until each bin holds at
least :data:`MIN_BIN_ROWS` rows, a rule that looks at how many rows fall in each cell but never
at their labels (:func:`merged_starts`).

The row-level functions (scikit-learn's AUC, ROC curve, Brier score and log-loss; expected
calibration error and the population stability index, short enough to state here) are the
definitions the summaries are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SCORE_CELLS = 200
"""Cells of the public score grid: equal steps of the log-odds between 1e-4 and 1 - 1e-4."""
SCORE_GRID = np.r_[0.0, 1.0 / (1.0 + np.exp(-np.linspace(-9.2, 9.2, SCORE_CELLS - 1))), 1.0]
"""Edges of the grid's cells (``SCORE_CELLS + 1``), from 0 to 1: about 9% apart in odds."""
MIN_BIN_ROWS = 20
"""Fewest rows in a bin of a summary (a split of fewer rows is one bin): see
``docs/privacy.md``, "Score summaries", for the attack it stops and what it costs."""
CALIBRATION_BINS = 10
"""Equal-width bins of the calibration table and the expected calibration error."""
CLIP = 1e-7


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score CDFs of goods and bads.

    >>> round(ks_statistic(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])), 3)
    1.0
    """
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ranked, scores = y[order], p[order]
    last = np.r_[scores[1:] != scores[:-1], True]  # a threshold after each distinct score
    tpr = np.cumsum(ranked == 1)[last] / max(int((y == 1).sum()), 1)
    fpr = np.cumsum(ranked != 1)[last] / max(int((y != 1).sum()), 1)
    return float(max(np.max(tpr - fpr), 0.0))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Compute the expected calibration error over equal-width bins.

    The mean absolute gap between predicted and observed default rate per bin, weighted by the
    share of rows in each bin.

    >>> round(expected_calibration_error(np.array([0, 1, 0, 1]), np.array([0.5] * 4)), 3)
    0.0
    >>> round(expected_calibration_error(np.array([0, 0]), np.array([0.3, 0.3])), 3)
    0.3
    """
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        rows = which == b
        total += rows.mean() * abs(float(p[rows].mean()) - float(y[rows].mean()))
    return float(total)


def population_stability_index(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """PSI of ``actual`` scores against ``expected`` scores, on deciles of ``expected``.

    Below 0.1 is usually read as stable, above 0.25 as a shift.

    >>> rng = np.random.default_rng(0)
    >>> a = rng.random(10_000)
    >>> population_stability_index(a, rng.random(10_000)) < 0.01
    True
    >>> population_stability_index(a, a ** 3) > 0.25
    True
    """
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.clip(e, 1e-6, None), np.clip(a, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def score_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, KS, Gini, Brier score, log-loss and expected calibration error.

    >>> m = score_metrics(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6]))
    >>> m["auc"], m["gini"]
    (1.0, 1.0)
    """
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
    auc = float(roc_auc_score(y, p))
    return {
        "auc": auc,
        "ks": ks_statistic(y, p),
        "gini": 2.0 * auc - 1.0,
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC from counts of defaulters and of the others per ordered score bin (ties count half).

    >>> histogram_auc(np.array([0, 0, 2]), np.array([2, 0, 0]))
    1.0
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((np.sum(pos * below) + 0.5 * np.sum(pos * neg)) / (pos.sum() * neg.sum()))


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC of row-level scores: :func:`histogram_auc`, one bin per distinct score.

    >>> rank_auc(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1]))
    0.875
    """
    values, which = np.unique(np.asarray(scores), return_inverse=True)
    labels = np.asarray(labels)
    return histogram_auc(np.bincount(which[labels == 1], minlength=len(values)),
                         np.bincount(which[labels == 0], minlength=len(values)))


def merged_starts(cell_rows: np.ndarray, min_rows: int = MIN_BIN_ROWS) -> np.ndarray:
    """Return the first grid cell of each bin: cells merged upwards until a bin holds ``min_rows``.

    Only the number of rows per cell decides (never a label); what is left at the top joins the
    bin below it, so every bin holds ``min_rows`` rows or more unless all rows are fewer.

    >>> merged_starts(np.array([5, 0, 20, 3, 30, 1, 2]), min_rows=20).tolist()
    [0, 3]
    >>> merged_starts(np.array([3, 4]), min_rows=20).tolist()
    [0]
    """
    starts, held = [0], 0
    for cell, rows in enumerate(cell_rows[:-1]):
        held += int(rows)
        if held >= min_rows:
            starts.append(cell + 1)
            held = 0
    if len(starts) > 1 and held + int(cell_rows[-1]) < min_rows:
        starts.pop()  # the top remainder joins the bin below
    return np.asarray(starts, dtype=np.int64)


def exact_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, KS, calibration error and the rare-label figures of rows, computed where they are.

    Numpy only (:data:`EXACT_KEYS`); the rare-label figures as :func:`rare_label_metrics` takes
    them from a bin per distinct score.

    >>> exact_metrics(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6]))["auc"]
    1.0
    """
    values, which = np.unique(p, return_inverse=True)
    rare = rare_label_of_bins(np.bincount(which[y == 1], minlength=len(values)),
                              np.bincount(which[y != 1], minlength=len(values)))
    out = {"auc": rank_auc(p, y), "ks": ks_statistic(y, p),
           "ece": expected_calibration_error(y, p),
           "average_precision": rare["average_precision"]}
    for group in ("recall_at_fpr", "caught_in_riskiest"):
        out |= {f"{group}_{r:g}": rare[group][f"{r:g}"] for r in FRAUD_RATES}
    return out


FRAUD_RATES = (0.01, 0.05)
"""The false-positive rates and the riskiest shares of applicants fraud teams read at."""
EXACT_KEYS = ("auc", "ks", "ece", "average_precision",
              *(f"{group}_{r:g}" for group in ("recall_at_fpr", "caught_in_riskiest")
                for r in FRAUD_RATES))
"""The figures a node computes on its own rows and sends with its summary."""


@dataclass(frozen=True)
class ScoreSummary:
    """What a report needs of one split's scores and labels, and no row.

    ``starts`` gives each bin's first cell of :data:`SCORE_GRID` (a bin runs to the next one's
    start); ``positives`` and ``negatives`` count defaulters and the others per bin,
    ``score_sums`` adds their scores; ``squared_error`` and ``log_loss`` are the sums behind the
    Brier score and the log-loss. ``exact`` holds the AUC, KS, calibration error and rare-label
    figures the node computed on its rows (:func:`exact_metrics`); a pooled summary has none and
    computes them from its bins. Summaries of disjoint rows add up (``+``): bins that differ are
    spread evenly over their cells first.

    >>> s = ScoreSummary.of(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6]))
    >>> m = s.metrics()
    >>> m["auc"], round(m["brier"], 4), s.rows, s.defaults, len(s.starts)
    (1.0, 0.1125, 4, 2, 1)
    """

    positives: np.ndarray
    negatives: np.ndarray
    score_sums: np.ndarray
    squared_error: float
    log_loss: float
    starts: np.ndarray
    exact: dict[str, float] | None = None

    @classmethod
    def of(cls, y: np.ndarray, p: np.ndarray) -> ScoreSummary:
        """Summarise labels ``y`` (0/1) and scores ``p`` (probabilities): what a node sends."""
        y = np.asarray(y).astype(np.int64)
        p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
        cells = _cell(p)
        starts = merged_starts(np.bincount(cells, minlength=SCORE_CELLS))
        which = np.searchsorted(starts, cells, side="right") - 1
        k = len(starts)
        exact = exact_metrics(y, p) if 0 < y.sum() < len(y) else None
        return cls(
            positives=np.bincount(which[y == 1], minlength=k),
            negatives=np.bincount(which[y == 0], minlength=k),
            score_sums=np.bincount(which, weights=p, minlength=k),
            squared_error=float(np.sum((p - y) ** 2)),
            log_loss=float(-np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))),
            starts=starts, exact=exact)

    def __add__(self, other: ScoreSummary) -> ScoreSummary:
        if np.array_equal(self.starts, other.starts):
            a, b, starts = self._counts(), other._counts(), self.starts
        else:
            a, b, starts = self.cells(), other.cells(), np.arange(SCORE_CELLS)
        return ScoreSummary(a[0] + b[0], a[1] + b[1], a[2] + b[2],
                            self.squared_error + other.squared_error,
                            self.log_loss + other.log_loss, starts)

    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.positives, self.negatives, self.score_sums

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positives, negatives and score sums per grid cell, each bin's spread evenly."""
        width = np.diff(np.r_[self.starts, SCORE_CELLS])
        bin_of = np.repeat(np.arange(len(self.starts)), width)
        pos, neg, sums = (np.asarray(v, dtype=np.float64)[bin_of] / width[bin_of]
                          for v in self._counts())
        return pos, neg, sums

    @property
    def rows(self) -> int:
        return int(round(float(self.positives.sum() + self.negatives.sum())))

    @property
    def defaults(self) -> int:
        return int(round(float(self.positives.sum())))

    # the wire form: plain lists and numbers (a Flower ConfigRecord holds them as they are)
    def to_record(self, prefix: str) -> dict[str, Any]:
        """Flatten into ``{prefix + field: list or float}``."""
        out = {prefix + "starts": self.starts.astype(int).tolist(),
               prefix + "positives": self.positives.astype(int).tolist(),
               prefix + "negatives": self.negatives.astype(int).tolist(),
               prefix + "score_sums": self.score_sums.astype(float).tolist(),
               prefix + "squared_error": self.squared_error, prefix + "log_loss": self.log_loss}
        for key, value in (self.exact or {}).items():
            out[f"{prefix}exact_{key}"] = float(value)
        return out

    @classmethod
    def from_record(cls, record: Any, prefix: str) -> ScoreSummary:
        """Read back what :meth:`to_record` wrote, refusing a malformed or impossible summary.

        Bins must start at cell 0 and rise; counts must be whole and non-negative, every bin
        hold :data:`MIN_BIN_ROWS` rows (unless there is one bin); every sum must be finite and
        within what the counts allow (each bin's scores within its cells, a squared error of
        at most one per row).
        """
        starts = np.asarray(record[prefix + "starts"], dtype=np.float64)
        if (starts.ndim != 1 or not 1 <= len(starts) <= SCORE_CELLS or starts[0] != 0
                or np.any(np.diff(starts) <= 0) or starts[-1] >= SCORE_CELLS
                or np.any(starts != np.round(starts))):
            raise ValueError(f"score summary '{prefix}starts': expected rising cells of the "
                             f"{SCORE_CELLS}-cell score grid, from 0")
        starts = starts.astype(np.int64)
        positives, negatives = (_whole(record, prefix, key, len(starts))
                                for key in ("positives", "negatives"))
        per_bin = positives + negatives
        if len(starts) > 1 and np.any(per_bin < MIN_BIN_ROWS):
            raise ValueError(f"score summary '{prefix}': a bin of fewer than {MIN_BIN_ROWS} "
                             "rows would give its rows' labels away")
        score_sums = np.asarray(record[prefix + "score_sums"], dtype=np.float64)
        low = SCORE_GRID[starts] * per_bin - 1e-6
        high = SCORE_GRID[np.r_[starts[1:], SCORE_CELLS]] * per_bin + 1e-6
        if (score_sums.shape != starts.shape or not np.all(np.isfinite(score_sums))
                or np.any(score_sums < low) or np.any(score_sums > high)):
            raise ValueError(f"score summary '{prefix}score_sums': expected a finite sum per "
                             "bin, within its cells' scores")
        squared_error = float(record[prefix + "squared_error"])
        log_loss = float(record[prefix + "log_loss"])
        rows = int(per_bin.sum())
        if not (np.isfinite(squared_error) and 0 <= squared_error <= rows + 1e-6
                and np.isfinite(log_loss) and log_loss >= 0):
            raise ValueError(f"score summary '{prefix}': squared error {squared_error} or "
                             f"log-loss {log_loss} impossible for {rows} rows")
        return cls(positives, negatives, score_sums, squared_error, log_loss, starts,
                   _exact(record, prefix))

    # metrics ------------------------------------------------------------------------------
    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """Return false and true positive rates at every bin edge, from the highest score down."""
        tpr = np.concatenate([[0.0], np.cumsum(self.positives[::-1])]) / max(self.defaults, 1)
        fpr = np.concatenate([[0.0], np.cumsum(self.negatives[::-1])]) / max(
            self.rows - self.defaults, 1)
        return fpr, tpr

    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per calibration bin: mean score, observed default rate and number of rows.

        Each summary bin counts in the equal-width calibration bin of its mean score.
        """
        rows = (self.positives + self.negatives).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(rows > 0, self.score_sums / rows, 0.0)
        group = _bin(means, CALIBRATION_BINS)
        total = np.bincount(group, weights=rows, minlength=CALIBRATION_BINS)
        sums = np.bincount(group, weights=self.score_sums, minlength=CALIBRATION_BINS)
        pos = np.bincount(group, weights=self.positives.astype(np.float64),
                          minlength=CALIBRATION_BINS)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / total, pos / total, total

    def deciles(self, groups: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return mean score and observed default rate per decile of the scores.

        The deciles are cut at bin edges (a bin counts in the decile of its middle row): the
        calibration curve of the plots.
        """
        counts = (self.positives + self.negatives).astype(np.float64)
        share = np.cumsum(counts) / max(counts.sum(), 1.0)
        group = np.minimum((np.maximum(share - counts / max(counts.sum(), 1.0) / 2, 0)
                            * groups).astype(np.int64), groups - 1)
        rows = np.bincount(group, weights=counts, minlength=groups)
        score = np.bincount(group, weights=self.score_sums, minlength=groups)
        pos = np.bincount(group, weights=self.positives.astype(np.float64), minlength=groups)
        used = rows > 0
        return score[used] / rows[used], pos[used] / rows[used]

    def metrics(self) -> dict[str, float]:
        """AUC, KS, Gini, Brier score, log-loss and expected calibration error.

        The node's own figures where it sent them (:attr:`exact`), else from the bins.
        """
        n, pos = self.rows, self.defaults
        if n == 0:
            raise ValueError("a score summary of no rows has no metrics")
        neg_total = n - pos
        if pos == 0 or neg_total == 0:
            auc = ks = float("nan")
        else:
            auc = histogram_auc(self.positives, self.negatives)
            fpr, tpr = self.roc()
            ks = float(np.max(tpr - fpr))
        mean_score, observed, rows = self.calibration()
        used = rows > 0
        ece = float(np.sum(rows[used] * np.abs(mean_score[used] - observed[used])) / n)
        found = {"auc": auc, "ks": ks, "ece": ece} | {
            k: v for k, v in (self.exact or {}).items() if k in ("auc", "ks", "ece")}
        return {"auc": found["auc"], "ks": found["ks"], "gini": 2.0 * found["auc"] - 1.0,
                "brier": self.squared_error / n, "log_loss": self.log_loss / n,
                "ece": found["ece"]}


def _whole(record: Any, prefix: str, key: str, bins: int) -> np.ndarray:
    """Return whole non-negative counts, one per bin, from a record (else a ValueError)."""
    raw = np.asarray(record[prefix + key], dtype=np.float64)
    if raw.shape != (bins,) or not np.all(np.isfinite(raw)) or np.any(raw < 0) or np.any(
            raw != np.round(raw)):
        raise ValueError(f"score summary '{prefix}{key}': expected {bins} whole non-negative "
                         "counts, one per bin")
    return raw.astype(np.int64)


def _exact(record: Any, prefix: str) -> dict[str, float] | None:
    """Return the node's own metrics in a record (all or none), each a number in [0, 1]."""
    keys = [f"{prefix}exact_{k}" for k in EXACT_KEYS]
    present = [k in record for k in keys]
    if not any(present):
        return None
    values = [float(record[k]) for k in keys] if all(present) else []
    if len(values) != len(keys) or not all(np.isfinite(v) and 0 <= v <= 1 for v in values):
        raise ValueError(f"score summary '{prefix}': expected the node's {list(EXACT_KEYS)} "
                         "together, each between 0 and 1")
    return dict(zip(EXACT_KEYS, values, strict=True))


RARE_LABEL = 0.05
"""Below this positive rate (fraud) a run also reports :func:`rare_label_metrics`."""


def rare_label_metrics(summary: ScoreSummary) -> dict[str, Any]:
    """Metrics for a rare label (fraud), as fraud teams read them, from a score summary.

    ``average_precision`` (PR-AUC; the rows of a bin count together, as scikit-learn counts
    tied scores), ``recall_at_fpr`` (the share of positives caught at a false-positive
    rate of 1% and 5%) and ``caught_in_riskiest`` (the share of positives among the riskiest 1%
    and 5% of applicants), both interpolated within a bin. A node's summary carries them as the
    node computed them on its rows (one bin per distinct score); a pooled one, from its bins.

    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random(20_000) < 0.02).astype(int)
    >>> p = np.clip(0.3 * y + rng.random(20_000) * 0.7, 0, 1)
    >>> from sklearn.metrics import average_precision_score
    >>> m = rare_label_metrics(ScoreSummary.of(y, p))
    >>> abs(m["average_precision"] - average_precision_score(y, p)) < 0.01
    True
    """
    found = rare_label_of_bins(summary.positives, summary.negatives)
    if summary.exact is None:
        return found
    return {"average_precision": summary.exact["average_precision"],
            **{group: {f"{r:g}": summary.exact[f"{group}_{r:g}"] for r in FRAUD_RATES}
               for group in ("recall_at_fpr", "caught_in_riskiest")},
            "positive_rate": found["positive_rate"]}


def rare_label_of_bins(positives: np.ndarray, negatives: np.ndarray) -> dict[str, Any]:
    """:func:`rare_label_metrics` from counts per ordered score bin (lowest score first)."""
    pos = np.asarray(positives, dtype=np.float64)[::-1]  # from the highest score down
    neg = np.asarray(negatives, dtype=np.float64)[::-1]
    total_pos, total_neg = max(pos.sum(), 1.0), max(neg.sum(), 1.0)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    used = (pos + neg) > 0
    precision = tp[used] / (tp[used] + fp[used])
    recall_step = pos[used] / total_pos
    fpr = np.concatenate([[0.0], fp / total_neg])
    tpr = np.concatenate([[0.0], tp / total_pos])
    share = np.concatenate([[0.0], (tp + fp) / (total_pos + total_neg)])
    return {"average_precision": float(np.sum(recall_step * precision)),
            "recall_at_fpr": {f"{r:g}": float(np.interp(r, fpr, tpr)) for r in FRAUD_RATES},
            "caught_in_riskiest": {f"{r:g}": float(np.interp(r, share, tpr))
                                   for r in FRAUD_RATES},
            "positive_rate": float(pos.sum() / (total_pos + total_neg))}


def summary_stability_index(expected: ScoreSummary, actual: ScoreSummary,
                            bins: int = 10) -> float:
    """:func:`population_stability_index` on summaries: deciles taken at the grid's cell edges.

    Both summaries are spread over the grid's cells first (:meth:`ScoreSummary.cells`).

    >>> rng = np.random.default_rng(0)
    >>> a = ScoreSummary.of(rng.integers(0, 2, 10_000), rng.random(10_000))
    >>> b = ScoreSummary.of(rng.integers(0, 2, 10_000), rng.random(10_000))
    >>> summary_stability_index(a, b) < 0.01
    True
    """
    e_pos, e_neg, _ = expected.cells()
    a_pos, a_neg, _ = actual.cells()
    e_counts, a_counts = e_pos + e_neg, a_pos + a_neg
    share = np.cumsum(e_counts) / e_counts.sum()
    # the cell in which each decile of the expected scores ends
    cuts = np.unique(np.searchsorted(share, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[0], cuts + 1, [SCORE_CELLS]])
    edges = np.unique(np.minimum(edges, SCORE_CELLS))
    e = np.add.reduceat(e_counts, edges[:-1]) / e_counts.sum()
    a = np.add.reduceat(a_counts, edges[:-1]) / a_counts.sum()
    e, a = np.clip(e, 1e-6, None), np.clip(a, 1e-6, None)
    return float(np.sum((a - e) * np.log(a / e)))


def report_metrics(summaries: dict[str, ScoreSummary], private: bool = False
                   ) -> dict[str, dict[str, Any]]:
    """Return validation and test metrics, with the PSI of the test scores.

    The PSI's reference is the training scores, or under DP the validation scores: the
    training rows' scores are outside every guarantee, so a private run publishes nothing
    computed from them (``psi_reference`` says which; a private node sends no training summary).
    """
    for name in ("val", "test"):
        summary = summaries[name]
        if summary.defaults in (0, summary.rows):
            raise ValueError(f"the {name} split holds {summary.rows} rows of one class only "
                             f"({summary.defaults} defaults): its AUC is undefined; use more "
                             "rows or a larger data.split fraction")
    metrics: dict[str, dict[str, Any]] = {name: summaries[name].metrics()
                                          for name in ("val", "test")}
    reference = "val" if private else "train"
    metrics["test"]["psi"] = summary_stability_index(summaries[reference], summaries["test"])
    metrics["test"]["psi_reference"] = reference
    test = summaries["test"]
    if test.defaults / test.rows < RARE_LABEL:  # a fraud label: what fraud teams read
        metrics["test"]["rare_label"] = rare_label_metrics(test)
    return metrics


def _bin(p: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((p * bins).astype(np.int64), bins - 1)


def _cell(p: np.ndarray) -> np.ndarray:
    """Each score's cell of :data:`SCORE_GRID`."""
    return np.clip(np.searchsorted(SCORE_GRID, p, side="right") - 1, 0, SCORE_CELLS - 1)


def caught_by_type(scores: np.ndarray, labels: np.ndarray, kinds: np.ndarray,
                   share: float = 0.05) -> dict[str, dict[str, float]]:
    """Per kind of positive (a fraud scheme): how many, and the share in the riskiest ``share``.

    ``kinds`` names each row's kind ("" for none); only positive rows of a named kind count.

    >>> s = np.array([0.9, 0.8, 0.1, 0.2, 0.3] + [0.0] * 35)
    >>> y = np.array([1, 1, 1, 0, 0] + [0] * 35)
    >>> k = np.array(["stolen", "synthetic", "stolen", "", ""] + [""] * 35)
    >>> caught_by_type(s, y, k)["stolen"]
    {'frauds': 2, 'caught_in_riskiest_5': 0.5}
    """
    cut = max(int(round(share * len(scores))), 1)
    riskiest = np.zeros(len(scores), dtype=bool)
    riskiest[np.argsort(-scores, kind="stable")[:cut]] = True
    out = {}
    for kind in sorted(set(kinds[(labels == 1) & (kinds != "")])):
        rows = (labels == 1) & (kinds == kind)
        out[str(kind)] = {"frauds": int(rows.sum()),
                          f"caught_in_riskiest_{round(share * 100)}": float(riskiest[rows].mean())}
    return out
