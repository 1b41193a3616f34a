import numpy as np
import pandas as pd
import pytest

from credit_data.design import party_block
from credit_data.settings import DataSettings, Scaler, SplitSettings
from credit_data.split import TRAIN, assign_split, reproducible_split_key
from credit_data.tables import PartyTable

pytestmark = pytest.mark.unit


def _table(n: int = 5_000) -> PartyTable:
    rng = np.random.default_rng(1)
    ids = pd.Index([f"C{i}" for i in range(n)])
    frame = pd.DataFrame({"x": rng.normal(10, 3, n), "g": rng.choice(["a", "b"], n).astype(object)},
                         index=ids)
    frame.loc[frame.index[::10], "x"] = np.nan
    return PartyTable("bureau", frame, ("x",), ("g",), "test")


def test_scaling_is_fitted_on_the_partys_training_rows_only():
    table = _table()
    settings = DataSettings(scaler=Scaler.standard, split=SplitSettings())
    key = reproducible_split_key(0, "bureau")
    train = assign_split(table.frame.index, key, settings.split) == TRAIN
    poisoned = table.frame.copy()
    poisoned.loc[~train, "x"] = 1e6  # validation and test rows must not move the fit
    block = party_block(PartyTable("bureau", poisoned, ("x",), ("g",), "test"),
                        table.frame.index, settings, seed=0, split_key=key)
    x = block.values[:, block.names.index("x")]
    # by hand: median imputation, then standard scaling, both from the training rows alone
    raw = table.frame["x"].to_numpy()
    median = np.nanmedian(raw[train])
    imputed = np.where(np.isnan(raw), median, raw)
    expected = (imputed - imputed[train].mean()) / imputed[train].std()
    assert np.allclose(x[train], expected[train], atol=1e-4)


def test_missing_indicator_one_hot_and_presence_column():
    table = _table()
    known = table.frame.index[:4_000]
    applicants = known.append(pd.Index(["NEW1", "NEW2"]))
    block = party_block(PartyTable("bureau", table.frame.loc[known], ("x",), ("g",), "test"),
                        applicants, DataSettings(), seed=0)
    assert block.names == ("x", "x.missing", "g=a", "g=b", "present")
    missing = block.values[:, 1]
    assert np.array_equal(missing[:4_000] == 1, table.frame["x"].isna().to_numpy()[:4_000])
    assert np.allclose(block.values[:4_000, 2] + block.values[:4_000, 3], 1.0)
    assert block.values[-1].tolist() == [0, 0, 0, 0, 0]  # unknown applicant: zeros, not present
    assert block.present.tolist()[-3:] == [True, False, False]


def test_category_unseen_in_training_is_all_zero_not_an_error():
    table = _table(1_000)
    settings = DataSettings()
    key = reproducible_split_key(0, "lender")
    held_out = table.frame.index[assign_split(table.frame.index, key, settings.split) != TRAIN][0]
    later = table.frame.copy()
    later.loc[held_out, "g"] = "zzz"
    block = party_block(PartyTable("lender", later, ("x",), ("g",), "t"), pd.Index([held_out]),
                        settings, seed=0, split_key=key)
    assert "g=zzz" not in block.names
    assert block.values[0, block.names.index("g=a")] == 0
    assert block.values[0, block.names.index("g=b")] == 0


def test_node_rows_equal_fitting_on_training_rows_then_transforming_every_row():
    """node_rows transforms each row once (training rows while fitting); the result must be
    exactly what fit-then-transform-all gives."""
    from credit_data.preprocessing import PartyPreprocessor
    from credit_data.synthetic import generate
    from credit_data.vertical import node_rows

    settings = DataSettings(n_customers=3000)
    for table in generate(3000, seed=2).tables.values():
        rows = node_rows(table, settings, seed=2)
        pre = PartyPreprocessor(table.numeric, table.categorical, settings.scaler, seed=2)
        pre.fit(table.frame.loc[rows.split == TRAIN])
        assert np.array_equal(rows.x, pre.transform(table.frame)), table.party
        assert rows.names == pre.feature_names
