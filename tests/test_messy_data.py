"""Messy partner files through ``data=csv`` (issue 19, item 13): each fails with the file and
column named, before training, or is read as the partner wrote it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_data.errors import DataError
from credit_data.files import load_files
from credit_data.settings import DataSettings, PartySource, Scaler
from credit_data.vertical import node_rows
from tests.conftest import run_experiment

pytestmark = pytest.mark.unit


def _lender(path: Path, n: int = 600, **extra) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"C{i}" for i in range(n)], "income": rng.normal(size=n),
                          "default": (rng.random(n) < 0.3).astype(int), **extra})
    frame.to_csv(path, index=False)
    return path


def _settings(lender: Path, **kw) -> DataSettings:
    return DataSettings(name="csv", source="files", id_column="id", label="default",  # type: ignore[arg-type]
                        parties={"lender": PartySource(path=str(lender))}, **kw)


def test_a_three_row_file_fails_naming_the_file_before_training(tmp_path):
    lender = tmp_path / "lender.csv"
    lender.write_text("id,income,default\na,1.0,0\nb,2.0,1\nc,3.0,0\n")
    run_dir = tmp_path / "run"
    with pytest.raises(DataError, match=r"lender\.csv: the .* split has .* rows .*needs rows "
                                        r"of both classes \(3 rows in all"):
        run_experiment(["data=csv", f"data.parties.lender.path={lender}",
                        "~data.parties.bureau", "~data.parties.social",
                        "federation=centralized"], run_dir)
    assert not (run_dir / "results.json").exists()
    # the vertical node's own rows are refused the same way
    population = load_files(_settings(lender))
    with pytest.raises(DataError, match="lender.csv"):
        node_rows(population.tables["lender"], _settings(lender), 0)


def test_a_huge_value_with_the_standard_scaler_names_its_column(tmp_path):
    n = 600
    huge = np.ones(n)
    huge[5] = 1e308
    lender = _lender(tmp_path / "lender.csv", n, balance=huge)
    settings = _settings(lender, scaler=Scaler.standard)
    population = load_files(settings)
    with pytest.raises(DataError, match=r"lender\.csv: column\(s\) \['balance'\] cannot be "
                                        r"scaled with data.scaler=standard \('balance' up to "
                                        r"1e\+308\)"):
        node_rows(population.tables["lender"], settings, 0)
    # the quantile scaler takes it
    assert np.isfinite(node_rows(population.tables["lender"], _settings(lender), 0).x).all()


def test_ids_written_na_or_null_are_ids_not_missing_values(tmp_path):
    lender = _lender(tmp_path / "lender.csv")
    frame = pd.read_csv(lender, dtype={"id": str}, keep_default_na=False)
    frame.loc[:2, "id"] = ["NA", "null", "None"]
    frame.loc[3, "income"] = np.nan  # a missing feature value stays missing
    frame.to_csv(lender, index=False)
    table = load_files(_settings(lender)).tables["lender"]
    assert {"NA", "null", "None"} <= set(table.frame.index)
    assert table.frame["income"].isna().sum() == 1


def test_an_empty_or_blank_id_is_still_refused(tmp_path):
    lender = tmp_path / "lender.csv"
    lender.write_text("id,income,default\na,1.0,0\n  ,2.0,1\n")
    with pytest.raises(DataError, match="column 'id' has 1 empty IDs"):
        load_files(_settings(lender))


def test_a_constant_column_is_named_in_a_warning(tmp_path, caplog):
    lender = _lender(tmp_path / "lender.csv", constant=np.full(600, 3.0))
    with caplog.at_level(logging.WARNING, logger="credit_fl"):
        load_files(_settings(lender))
    assert "['constant'] hold a single value in every row" in caplog.text


def test_horizontal_standardization_that_overflows_names_its_column():
    from credit_data.federated_scaling import merge_moments

    part = {"rows": 2, "numeric": {"balance": [2, 1e308, float("inf")]}, "categorical": {}}
    with pytest.raises(DataError, match="column 'balance' cannot be standardized"):
        merge_moments([part, part], ("balance",), ())
