"""Credit-scoring metrics on predicted default probabilities.

Every report computes its metrics from a :class:`ScoreSummary` of each split: counts of
defaulters and of the others in fine score bins, plus the sums behind the Brier score, the
log-loss and the calibration table. Summaries of disjoint rows add up, so a horizontal server
pools its lenders' summaries and a vertical server reads the lender's, without a single row;
a simulation and a deployment compute the same numbers the same way.

The row-level functions (scikit-learn's AUC, ROC curve, Brier score and log-loss; expected
calibration error and the population stability index, short enough to state here) are the
definitions the summaries are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SUMMARY_BINS = 10_000
"""Equal-width score bins of a summary: AUC and KS within about 1e-4 of the row-level ones."""
CALIBRATION_BINS = 10
"""Equal-width bins of the calibration table and the expected calibration error."""
CLIP = 1e-7


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score CDFs of goods and bads.

    >>> round(ks_statistic(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])), 3)
    1.0
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


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


@dataclass(frozen=True)
class ScoreSummary:
    """What a report needs of one split's scores and labels, and no row.

    ``positives`` and ``negatives`` count defaulters and the others in :data:`SUMMARY_BINS`
    equal-width score bins; ``score_sums`` adds the scores in each of the
    :data:`CALIBRATION_BINS` calibration bins; ``squared_error`` and ``log_loss`` are the sums
    behind the Brier score and the log-loss. Summaries of disjoint rows add up (``+``).

    >>> s = ScoreSummary.of(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6]))
    >>> m = s.metrics()
    >>> m["auc"], round(m["brier"], 4), s.rows, s.defaults
    (1.0, 0.1125, 4, 2)
    """

    positives: np.ndarray
    negatives: np.ndarray
    score_sums: np.ndarray
    squared_error: float
    log_loss: float

    @classmethod
    def of(cls, y: np.ndarray, p: np.ndarray) -> ScoreSummary:
        """Summarise labels ``y`` (0/1) and scores ``p`` (probabilities)."""
        y = np.asarray(y).astype(np.int64)
        p = np.clip(np.asarray(p, dtype=np.float64), CLIP, 1 - CLIP)
        fine = _bin(p, SUMMARY_BINS)
        coarse = _bin(p, CALIBRATION_BINS)
        return cls(
            positives=np.bincount(fine[y == 1], minlength=SUMMARY_BINS),
            negatives=np.bincount(fine[y == 0], minlength=SUMMARY_BINS),
            score_sums=np.bincount(coarse, weights=p, minlength=CALIBRATION_BINS),
            squared_error=float(np.sum((p - y) ** 2)),
            log_loss=float(-np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))))

    def __add__(self, other: ScoreSummary) -> ScoreSummary:
        return ScoreSummary(self.positives + other.positives, self.negatives + other.negatives,
                            self.score_sums + other.score_sums,
                            self.squared_error + other.squared_error,
                            self.log_loss + other.log_loss)

    @property
    def rows(self) -> int:
        return int(self.positives.sum() + self.negatives.sum())

    @property
    def defaults(self) -> int:
        return int(self.positives.sum())

    # the wire form: plain lists and numbers (a Flower MetricRecord holds them as they are)
    def to_record(self, prefix: str) -> dict[str, Any]:
        """Flatten into ``{prefix + field: list or float}``."""
        return {prefix + "positives": self.positives.astype(int).tolist(),
                prefix + "negatives": self.negatives.astype(int).tolist(),
                prefix + "score_sums": self.score_sums.astype(float).tolist(),
                prefix + "squared_error": self.squared_error, prefix + "log_loss": self.log_loss}

    @classmethod
    def from_record(cls, record: Any, prefix: str) -> ScoreSummary:
        """Read back what :meth:`to_record` wrote, refusing a malformed or impossible summary.

        Counts must be whole and non-negative, and every sum finite and within what the counts
        allow (a sum of scores in [0, 1], a squared error of at most one per row).
        """
        def counts(key: str) -> np.ndarray:
            raw = np.asarray(record[prefix + key], dtype=np.float64)
            if raw.shape != (SUMMARY_BINS,) or not np.all(np.isfinite(raw)) or np.any(
                    raw < 0) or np.any(raw != np.round(raw)):
                raise ValueError(f"score summary '{prefix}{key}': expected {SUMMARY_BINS} "
                                 "whole non-negative counts")
            return raw.astype(np.int64)

        positives, negatives = counts("positives"), counts("negatives")
        score_sums = np.asarray(record[prefix + "score_sums"], dtype=np.float64)
        squared_error = float(record[prefix + "squared_error"])
        log_loss = float(record[prefix + "log_loss"])
        rows = int(positives.sum() + negatives.sum())
        k = SUMMARY_BINS // CALIBRATION_BINS
        per_bin = (positives + negatives).reshape(CALIBRATION_BINS, k).sum(axis=1)
        if (score_sums.shape != (CALIBRATION_BINS,) or not np.all(np.isfinite(score_sums))
                or np.any(score_sums < 0) or np.any(score_sums > per_bin + 1e-6)):
            raise ValueError(f"score summary '{prefix}score_sums': expected "
                             f"{CALIBRATION_BINS} finite sums within the bins' row counts")
        if not (np.isfinite(squared_error) and 0 <= squared_error <= rows + 1e-6
                and np.isfinite(log_loss) and log_loss >= 0):
            raise ValueError(f"score summary '{prefix}': squared error {squared_error} or "
                             f"log-loss {log_loss} impossible for {rows} rows")
        return cls(positives, negatives, score_sums, squared_error, log_loss)

    # metrics ------------------------------------------------------------------------------
    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """Return false and true positive rates at every bin edge, from the highest score down."""
        tpr = np.concatenate([[0.0], np.cumsum(self.positives[::-1])]) / max(self.defaults, 1)
        fpr = np.concatenate([[0.0], np.cumsum(self.negatives[::-1])]) / max(
            self.rows - self.defaults, 1)
        return fpr, tpr

    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per calibration bin: mean score, observed default rate and number of rows."""
        k = SUMMARY_BINS // CALIBRATION_BINS
        pos = self.positives.reshape(CALIBRATION_BINS, k).sum(axis=1)
        rows = pos + self.negatives.reshape(CALIBRATION_BINS, k).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.score_sums / rows, pos / rows, rows

    def deciles(self, groups: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Return mean score and observed default rate per decile of the scores.

        The deciles are cut at fine bin edges and the mean score taken at the bins' centres
        (within half a fine bin of the exact mean): the calibration curve of the plots.
        """
        counts = (self.positives + self.negatives).astype(np.float64)
        share = np.cumsum(counts) / max(counts.sum(), 1.0)
        group = np.minimum((np.maximum(share - counts / max(counts.sum(), 1.0) / 2, 0)
                            * groups).astype(np.int64), groups - 1)
        centres = (np.arange(SUMMARY_BINS) + 0.5) / SUMMARY_BINS
        rows = np.bincount(group, weights=counts, minlength=groups)
        score = np.bincount(group, weights=counts * centres, minlength=groups)
        pos = np.bincount(group, weights=self.positives.astype(np.float64), minlength=groups)
        used = rows > 0
        return score[used] / rows[used], pos[used] / rows[used]

    def metrics(self) -> dict[str, float]:
        """AUC, KS, Gini, Brier score, log-loss and expected calibration error."""
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
        return {"auc": auc, "ks": ks, "gini": 2.0 * auc - 1.0, "brier": self.squared_error / n,
                "log_loss": self.log_loss / n, "ece": ece}


RARE_LABEL = 0.05
"""Below this positive rate (fraud) a run also reports :func:`rare_label_metrics`."""
FRAUD_RATES = (0.01, 0.05)
"""The false-positive rates and the riskiest shares of applicants fraud teams read at."""


def rare_label_metrics(summary: ScoreSummary) -> dict[str, Any]:
    """Metrics for a rare label (fraud), as fraud teams read them, from a score summary.

    ``average_precision`` (PR-AUC; tied scores, a fine bin, count together as scikit-learn
    counts tied scores), ``recall_at_fpr`` (the share of positives caught at a false-positive
    rate of 1% and 5%) and ``caught_in_riskiest`` (the share of positives among the riskiest 1%
    and 5% of applicants), both interpolated within a bin.

    >>> rng = np.random.default_rng(0)
    >>> y = (rng.random(20_000) < 0.02).astype(int)
    >>> p = np.clip(0.3 * y + rng.random(20_000) * 0.7, 0, 1)
    >>> from sklearn.metrics import average_precision_score
    >>> m = rare_label_metrics(ScoreSummary.of(y, p))
    >>> abs(m["average_precision"] - average_precision_score(y, p)) < 0.01
    True
    """
    pos = summary.positives[::-1].astype(np.float64)  # from the highest score down
    neg = summary.negatives[::-1].astype(np.float64)
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
    """:func:`population_stability_index` on summaries: deciles taken at the fine bin edges.

    >>> rng = np.random.default_rng(0)
    >>> a = ScoreSummary.of(rng.integers(0, 2, 10_000), rng.random(10_000))
    >>> b = ScoreSummary.of(rng.integers(0, 2, 10_000), rng.random(10_000))
    >>> summary_stability_index(a, b) < 0.01
    True
    """
    e_counts = (expected.positives + expected.negatives).astype(np.float64)
    a_counts = (actual.positives + actual.negatives).astype(np.float64)
    share = np.cumsum(e_counts) / e_counts.sum()
    # the fine bin in which each decile of the expected scores ends
    cuts = np.unique(np.searchsorted(share, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[0], cuts + 1, [SUMMARY_BINS]])
    edges = np.unique(np.minimum(edges, SUMMARY_BINS))
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
