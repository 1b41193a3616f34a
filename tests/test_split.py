import numpy as np
import pandas as pd
import pytest

from credit_data.errors import ConfigError
from credit_data.settings import SplitSettings
from credit_data.split import TEST, TRAIN, VAL, assign_split

pytestmark = pytest.mark.unit


def test_fractions_and_determinism():
    ids = pd.Index([f"C{i}" for i in range(50_000)])
    s = SplitSettings(val=0.1, test=0.2)
    a = assign_split(ids, 3, s)
    assert np.array_equal(a, assign_split(ids, 3, s))
    assert abs((a == VAL).mean() - 0.1) < 0.01
    assert abs((a == TEST).mean() - 0.2) < 0.01
    assert abs((a == TRAIN).mean() - 0.7) < 0.01
    assert (a != assign_split(ids, 4, s)).mean() > 0.3


def test_each_party_computes_the_same_split_for_a_shared_customer():
    s = SplitSettings()
    lender = pd.Index([f"C{i}" for i in range(0, 10_000)])
    bureau = pd.Index([f"C{i}" for i in range(5_000, 20_000)][::-1])
    a = pd.Series(assign_split(lender, 0, s), index=lender)
    b = pd.Series(assign_split(bureau, 0, s), index=bureau)
    shared = lender.intersection(bureau)
    assert len(shared) == 5_000
    assert (a[shared] == b[shared]).all()


@pytest.mark.parametrize(("val", "test", "key"), [(0.0, 0.2, "data.split.val"),
                                                   (0.2, 1.2, "data.split.test"),
                                                   (0.5, 0.5, "data.split.val")])
def test_bad_fractions_name_the_key(val, test, key):
    with pytest.raises(ConfigError, match=key):
        assign_split(pd.Index(["a"]), 0, SplitSettings(val=val, test=test))
