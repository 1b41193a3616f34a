"""Issue 30, finding 9: a row's label is not read off the score summary its node releases.

The adversary knows one row's score and reads the released summary of the row's split (the
lender's, in vertical; its own lender's, in horizontal): it guesses the label from the share of
defaulters in the bin the score fell in. That guess must be no better than the best guess from
the score alone plus :data:`MARGIN`; the old release (label counts in 10,000 equal bins) fails
the same test. Both guesses are scored at their best threshold, chosen with the labels in hand.
Scores are the synthetic generator's true default probabilities (a calibrated model).
"""

from __future__ import annotations

import numpy as np
import pytest

from credit_data.partition import dirichlet_partition
from credit_data.synthetic import generate
from federation.protocol import pooled_auc
from models.metrics import MIN_BIN_ROWS, ScoreSummary, histogram_auc, rank_auc
from models.summary_attack import bin_shares, equal_bin_shares, label_read_gain

pytestmark = pytest.mark.unit

MARGIN = 0.02
"""What reading the bin may add to the score alone: 2 points of accuracy."""
TEST_SHARE = 0.15  # the default test split
LENDERS = 5


def _scored(customers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A test split's labels and scores (the generator's true default probabilities)."""
    population = generate(customers, seed=seed)
    lender = population.tables["lender"]
    assert lender.labels is not None
    y = lender.labels["default_12m"].to_numpy().astype(np.int64)
    p = population.truth["default_12m"].reindex(lender.frame.index).to_numpy()
    test = np.random.default_rng(seed).random(len(y)) < TEST_SHARE
    return y[test], p[test]


def _groups(y: np.ndarray, p: np.ndarray, horizontal: bool, seed: int
            ) -> tuple[list, list]:
    """The reader's view under the new and the old release: one group per released summary."""
    owner = (dirichlet_partition(y, LENDERS, 0.5, seed) if horizontal
             else np.zeros(len(y), dtype=np.int64))
    new, old = [], []
    for k in np.unique(owner):
        mine = owner == k
        summary = ScoreSummary.of(y[mine], p[mine])
        new.append((bin_shares(summary, p[mine]), p[mine], y[mine]))
        old.append((equal_bin_shares(y[mine], p[mine]), p[mine], y[mine]))
    return new, old


@pytest.mark.parametrize("horizontal", [False, True], ids=["vertical", "horizontal"])
@pytest.mark.parametrize("customers", [1_000, 5_000, 20_000])
def test_a_rows_label_is_not_read_off_its_bin(customers, horizontal):
    # Prepare: the test split of a run of this size, released as one summary (vertical) or
    # one per lender (horizontal)
    y, p = _scored(customers, seed=customers % 7)
    new, old = _groups(y, p, horizontal, seed=1)
    # Execute: the attack on the release, and on the old 10,000-bin release
    from_bins, from_score = label_read_gain(new)
    old_bins, _ = label_read_gain(old)
    print(f"{customers} customers ({len(y)} test rows), "
          f"{'horizontal' if horizontal else 'vertical'}: score alone {from_score:.4f}, "
          f"bins {from_bins:.4f}, old bins {old_bins:.4f}")
    # Assert: the bins add at most MARGIN to the score; the old release gave labels away
    assert from_bins <= from_score + MARGIN
    assert old_bins > from_score + MARGIN


def test_every_released_bin_holds_the_minimum_of_rows():
    y, p = _scored(5_000, seed=3)
    summary = ScoreSummary.of(y, p)
    held = summary.positives + summary.negatives
    assert len(held) > 5 and held.min() >= MIN_BIN_ROWS
    assert held.sum() == len(y)
    few = ScoreSummary.of(y[:MIN_BIN_ROWS - 1], p[:MIN_BIN_ROWS - 1])  # fewer rows: one bin
    assert len(few.starts) == 1


@pytest.mark.parametrize(("rows", "single", "pooled"), [(1_000, 0.005, 0.07),
                                                       (100_000, 0.001, 0.001)])
def test_auc_from_summaries_stays_near_the_exact_auc(rows, single, pooled):
    # Prepare: scored rows, one node's summary and five skewed lenders' summaries
    population = generate(max(rows, 1_000), seed=11)
    lender = population.tables["lender"]
    assert lender.labels is not None
    y = lender.labels["default_12m"].to_numpy().astype(np.int64)[:rows]
    p = population.truth["default_12m"].reindex(lender.frame.index).to_numpy()[:rows]
    owner = dirichlet_partition(y, LENDERS, 0.5, 0)
    # Execute
    summary = ScoreSummary.of(y, p)
    lenders = [ScoreSummary.of(y[owner == k], p[owner == k]) for k in range(LENDERS)]
    exact = rank_auc(p, y)
    # Assert: the node's own AUC is exact; the AUC of its bins, and of five lenders' bins
    # pooled (a horizontal server's), within the stated tolerance
    assert summary.metrics()["auc"] == exact
    assert abs(histogram_auc(summary.positives, summary.negatives) - exact) <= single
    assert abs(pooled_auc(lenders) - exact) <= pooled
