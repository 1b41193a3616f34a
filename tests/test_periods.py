"""Issue 33, point 1: periods of the synthetic population, and the label-free estimate's math.

* Period 1 is the training population exactly (every table, label and truth).
* A downturn moves exactly the columns it names (SHIFTED_COLUMNS) and raises the default rate;
  ``none`` and ``concept`` move no column; ``concept`` raises the default rate.
* The label-free AUC estimate from calibrated probabilities lies within 0.02 of the AUC
  measured with outcomes on a period without concept drift, and the calibration check says
  it cannot be trusted on a period whose P(default | columns) changed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from credit_data.errors import ConfigError
from credit_data.loading import load_population
from credit_data.periods import SHIFTED_COLUMNS, book, cohort
from credit_data.settings import DataSettings, Shift
from credit_data.split import TRAIN, assign_split, reproducible_split_key
from credit_data.stability import column_index, freeze_columns
from credit_data.synthetic import generate
from models.metrics import rank_auc
from models.performance_estimate import calibration_check, estimated_auc

pytestmark = pytest.mark.unit
N = 3_000


def _same(a, b) -> None:
    assert sorted(a.tables) == sorted(b.tables)
    for party in a.tables:
        assert a.tables[party].fingerprint() == b.tables[party].fingerprint(), party
        if a.tables[party].labels is not None:
            pd.testing.assert_frame_equal(a.tables[party].labels, b.tables[party].labels)
    pd.testing.assert_frame_equal(a.truth, b.truth)


def test_period_one_is_the_generator_without_period_settings():
    plain = generate(N, seed=5)
    _same(plain, load_population(DataSettings(n_customers=N), 5))
    _same(plain, load_population(DataSettings(n_customers=N, period=1, shift=Shift.none), 5))
    _same(plain, cohort(N, 5, None, period=1, shift=Shift.none))
    _same(plain, book(N, 5, None, period=1, shift=Shift.none))
    later = load_population(DataSettings(n_customers=N, period=2), 5)
    assert later.tables["lender"].fingerprint() != plain.tables["lender"].fingerprint()
    assert not set(later.tables["lender"].frame.index) & set(plain.tables["lender"].frame.index)


def _indices(before, after) -> dict[tuple[str, str], float]:
    out = {}
    for party, table in before.tables.items():
        train = assign_split(table.frame.index, reproducible_split_key(0, party),
                             DataSettings().split) == TRAIN
        specs = freeze_columns(table.frame.loc[train], table.numeric, table.categorical)
        for column, spec in specs.items():
            out[party, column] = column_index(after.tables[party].frame[column], spec, 50).index
    return out


@pytest.mark.parametrize("shift", list(Shift))
def test_a_shift_moves_exactly_the_columns_it_names(shift):
    before = generate(N, seed=0)
    after = cohort(N, 0, None, period=2, shift=shift)
    moved = {(p, c) for p, cols in SHIFTED_COLUMNS[shift].items() for c in cols}
    for key, value in _indices(before, after).items():
        if key in moved:
            assert value >= 0.25, (key, value)
        else:
            assert value < 0.1, (key, value)
    rate = {k: v.tables["lender"].labels["default_12m"].mean() for k, v in
            {"before": before, "same": cohort(N, 0, None, period=2, shift=Shift.none),
             "after": after}.items()}
    if shift is Shift.none:
        assert abs(rate["after"] - rate["before"]) < 0.03
    else:  # the same people with the shift's extra risk: more defaulters, none fewer
        assert rate["after"] > rate["same"] + 0.05


def test_bad_periods_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="data.period must be 1 or later"):
        load_population(DataSettings(n_customers=N, period=0), 0)
    with pytest.raises(ConfigError, match="data.shift=downturn applies to periods 2"):
        load_population(DataSettings(n_customers=N, shift=Shift.downturn), 0)


def test_label_free_auc_within_0_02_without_concept_drift_and_untrusted_with_it():
    # the "model" is the true probability of the period before the shift: calibrated exactly
    # where P(default | columns) did not change
    same = cohort(20_000, 1, None, period=2, shift=Shift.none)
    p = same.truth["default_12m"].to_numpy()
    y = same.tables["lender"].labels["default_12m"].to_numpy()
    assert abs(estimated_auc(p) - rank_auc(p, y)) <= 0.02
    assert calibration_check(y, p)["trusted"]
    drifted = cohort(20_000, 1, None, period=2, shift=Shift.concept)
    assert drifted.tables["lender"].fingerprint() == same.tables["lender"].fingerprint()
    y_drift = drifted.tables["lender"].labels["default_12m"].to_numpy()
    check = calibration_check(y_drift, p)
    assert not check["trusted"] and check["z"] > 3
    assert np.mean(y_drift) > np.mean(y) + 0.05


def test_bins_count_as_by_hand_and_small_bins_merge():
    from credit_data.stability import bin_counts, merge_small, psi

    categorical = {"kind": "categorical", "categories": ["a", "b"]}
    assert bin_counts(pd.Series(["a", "b", "b", "z", None]), categorical).tolist() == [1, 2, 1, 1]
    numeric = {"kind": "numeric", "edges": [1.0, 2.0]}  # (-inf,1) [1,2) [2,inf) missing
    assert bin_counts(np.array([0.5, 1.0, 1.5, 2.0, 7.0, np.nan]), numeric).tolist() == [1, 2, 2, 1]
    reference, current = merge_small(np.array([30, 5, 40, 2]), np.array([20, 20, 3, 30]), 10)
    assert reference.tolist() == [30, 47] and current.tolist() == [20, 53]
    r, c = np.array([30, 47]) / 77, np.array([20, 53]) / 73
    assert psi(reference, current) == pytest.approx(float(np.sum((c - r) * np.log(c / r))))


def test_under_dp_one_training_row_moves_one_count_and_no_edge():
    # Prepare: the adversary's case (a column of tied values, where exact deciles jump when one
    # customer joins): 500 x 0, 500 x 1, 1000 x 2, 8000 x 3, and the same with one more 0
    from credit_data.stability import bin_counts, freeze_from_sketch
    from credit_data.summary import Sketch

    column = np.repeat([0.0, 1.0, 2.0, 3.0], [500, 500, 1000, 8000])
    before, after = pd.DataFrame({"x": column}), pd.DataFrame({"x": np.append(column, 0.0)})
    sketch = Sketch(("x",), (), {"x": [0.0, 0.5, 2.5, 3.0]}, (), {})  # the noisy summary's
    # Execute
    dp_before, dp_after = freeze_from_sketch(before, sketch), freeze_from_sketch(after, sketch)
    exact_before = freeze_columns(before, ("x",), ())
    exact_after = freeze_columns(after, ("x",), ())
    # Assert: under DP the edges are the sketch's and one count moves by one (the sensitivity
    # the monitoring noise assumes); the period's counts do not move at all
    assert dp_before["x"]["edges"] == dp_after["x"]["edges"]
    moved = np.abs(np.subtract(dp_after["x"]["counts"], dp_before["x"]["counts"]))
    assert moved.sum() == 1
    period = np.full(100, 2.0)
    assert (bin_counts(period, dp_before["x"]) == bin_counts(period, dp_after["x"])).all()
    # while exact deciles move an edge: why a party under DP must not freeze them
    assert exact_before["x"]["edges"] != exact_after["x"]["edges"]
