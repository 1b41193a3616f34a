"""A Parquet file and a DuckDB table give the model their CSV file gives (issue 36).

The same 1,000 synthetic customers, written as CSV files, Parquet files and the tables of one
DuckDB database, train a vertical model on the in-process engine without privacy (its noise
comes from the operating system): the same seed gives identical predictions.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import credit_fl
from credit_data.settings import Source
from credit_data.sources import SourceKind, write_party_tables
from credit_data.synthetic import synthetic_frames

pytestmark = pytest.mark.engine

KINDS = (SourceKind.csv, SourceKind.parquet, SourceKind.duckdb)


@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> dict[SourceKind, pd.DataFrame]:
    """Each source's test predictions, one small vertical run per source."""
    settings = credit_fl.settings("federation=vertical", "privacy=off", "train.epochs=1",
                                  "verbose=false", "engine=in_process")
    frames = synthetic_frames(1_000, seed=settings.seed)
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for kind in KINDS:
        data = dataclasses.replace(
            settings.data, name="tables", source=Source.files, id_column="customer_id",
            label="default_12m", parties=write_party_tables(frames, root / kind, kind))
        model = credit_fl.train(dataclasses.replace(settings, data=data))
        assert model.predictions is not None
        out[kind] = model.predictions
    return out


@pytest.mark.parametrize("kind", (SourceKind.parquet, SourceKind.duckdb))
def test_a_parquet_file_and_a_duckdb_table_train_the_model_of_their_csv_file(predictions, kind):
    expected = predictions[SourceKind.csv]
    assert len(expected) > 100  # the test split of 1,000 customers (15%)
    pd.testing.assert_frame_equal(predictions[kind], expected, check_exact=True)
