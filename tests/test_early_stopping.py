"""The best epoch is never a NaN one (a diverged epoch's validation score)."""

import numpy as np
import pytest

from models.settings import Criterion, TrainSettings
from models.training import EarlyStopping

pytestmark = pytest.mark.unit

Y = np.array([0, 1, 0, 1])


def _watch(criterion: Criterion) -> EarlyStopping:
    return EarlyStopping(TrainSettings(criterion=criterion, smoothing=1, patience=2,
                                       min_epochs=1))


@pytest.mark.parametrize("criterion", list(Criterion))
def test_a_nan_epoch_is_never_the_best_and_does_not_hide_a_later_one(criterion):
    watch = _watch(criterion)
    good = np.array([0.2, 0.8, 0.2, 0.8])
    assert watch.observe(1, Y, good, auc=0.9 if criterion is Criterion.auc else None)
    assert not watch.observe(2, Y, np.full(4, np.nan), auc=float("nan"))
    assert watch.best_epoch == 1 and watch.best == pytest.approx(watch.values[0])
    better = np.array([0.1, 0.9, 0.1, 0.9])
    assert watch.observe(3, Y, better, auc=0.95 if criterion is Criterion.auc else None)
    assert watch.best_epoch == 3
    assert not watch.observe(4, Y, good, auc=0.9 if criterion is Criterion.auc else None)
