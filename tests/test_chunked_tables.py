"""A party reads its table in chunks and builds its design in chunks: any chunk size gives the
same table, the same design and the same messages as one chunk (issue 36, bounded memory)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import credit_data.vertical as vertical
from credit_data.errors import DataError
from credit_data.files import load_party
from credit_data.settings import DataSettings, PartySource, Source
from credit_data.sources import SourceKind, write_party_tables, write_population_tables
from credit_data.synthetic import generate, synthetic_frames
from credit_data.vertical import node_rows
from tests.test_front_door import BAD_FRAMES, _bad
from tests.test_table_sources import _as

pytestmark = pytest.mark.unit

KINDS = (SourceKind.csv, SourceKind.parquet, SourceKind.duckdb)
WHOLE = 10**9  # one chunk: the whole table, as before issue 36


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[SourceKind, dict[str, PartySource]]:
    """300 synthetic customers in each kind of source."""
    frames = synthetic_frames(300, seed=5)
    root = tmp_path_factory.mktemp("chunked")
    return {kind: write_party_tables(frames, root / kind, kind) for kind in KINDS}


SETTINGS = DataSettings(id_column="customer_id", label="default_12m")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("party", ["lender", "bureau"])
def test_any_chunk_size_gives_the_table_and_design_of_one_chunk(sources, kind, party):
    # Execute: chunks of 7 rows, and the whole table at once
    chunked = load_party(party, sources[kind][party], SETTINGS, chunk_rows=7)
    whole = load_party(party, sources[kind][party], SETTINGS, chunk_rows=WHOLE)
    # Assert: the same table, labels and design, bit for bit
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    assert (chunked.numeric, chunked.categorical) == (whole.numeric, whole.categorical)
    if party == "lender":
        pd.testing.assert_frame_equal(chunked.labels, whole.labels)
    a, b = node_rows(chunked, SETTINGS, seed=0), node_rows(whole, SETTINGS, seed=0)
    assert a.ids == b.ids and a.names == b.names and np.array_equal(a.x, b.x)
    assert a.fingerprint == b.fingerprint


def test_a_design_built_in_chunks_is_the_design_built_whole(sources, monkeypatch):
    table = load_party("lender", sources[SourceKind.parquet]["lender"], SETTINGS)
    whole = node_rows(table, SETTINGS, seed=0)
    monkeypatch.setattr(vertical, "TRANSFORM_ROWS", 13)
    chunked = node_rows(table, SETTINGS, seed=0)
    assert chunked.x.dtype == np.float32 and chunked.x.shape == (table.n_rows, len(whole.names))
    assert np.array_equal(chunked.x, whole.x)
    assert chunked.preprocessing == whole.preprocessing


def test_a_text_column_of_numbers_missing_in_a_later_chunk_reads_as_in_one_chunk(tmp_path):
    # Prepare: a categorical column of integers, with a gap only in the last rows (pandas makes
    # the whole column floats, "1.0"), in a CSV file
    frame = pd.DataFrame({"id": [f"c{i}" for i in range(30)], "x": np.arange(30.0),
                          "region": [1, 2, 3] * 9 + [None, 2, 1],
                          "default": [0, 1] * 15})
    path = tmp_path / "lender.csv"
    frame.to_csv(path, index=False)
    source = PartySource(str(path), categorical=("region",))
    settings = DataSettings(name="t", source=Source.files, id_column="id", label="default")
    # Execute
    chunked = load_party("lender", source, settings, chunk_rows=4)
    whole = load_party("lender", source, settings, chunk_rows=WHOLE)
    # Assert
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    assert chunked.frame["region"].iloc[0] == "1.0"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(set(BAD_FRAMES) - {"no-id-column"}))
def test_bad_rows_in_any_chunk_get_the_message_of_one_chunk(tmp_path, kind, case):
    # Prepare: the bad rows in a CSV file, and in the other kind of source
    csv = tmp_path / "lender.csv"
    BAD_FRAMES[case].to_csv(csv, index=False)
    source = (PartySource(str(csv), categorical=("purpose",)) if kind is SourceKind.csv
              else _as(kind, csv, categorical=("purpose",)))
    settings = DataSettings(name="t", source=Source.files, id_column="id", label="default")
    # Execute: chunks of 2 rows (3 chunks), and one chunk
    with pytest.raises(DataError) as chunked:
        load_party("lender", source, settings, chunk_rows=2)
    with pytest.raises(DataError) as whole:
        load_party("lender", source, settings, chunk_rows=WHOLE)
    # Assert
    assert str(chunked.value) == str(whole.value)
    assert str(chunked.value).startswith(f"{source.path}: ")


def test_an_empty_id_in_a_later_chunk_is_named_by_its_line(tmp_path):
    frame = _bad(lambda f: f.__setitem__("id", ["A1", "A2", "A3", "A4", " ", "A6"]))
    path = tmp_path / "lender.csv"
    frame.to_csv(path, index=False)
    settings = DataSettings(name="t", source=Source.files, id_column="id", label="default")
    with pytest.raises(DataError, match=r"lender\.csv: column 'id' has 1 empty IDs \(first at "
                                        r"row 6\)"):
        load_party("lender", PartySource(str(path), categorical=("purpose",)), settings,
                   chunk_rows=2)


def test_a_simulated_node_reads_from_parquet_the_design_of_its_generated_table(tmp_path):
    # Prepare: the tables a simulation generates, written as the runner writes them for its
    # Ray workers (each reads its own)
    tables = generate(600, seed=2).tables
    written = write_population_tables(tables, tmp_path, "default_12m")
    # Execute / Assert: each node's design, IDs, split and labels are the generated table's
    for party, table in tables.items():
        read = load_party(party, written[party], SETTINGS, chunk_rows=50)
        a, b = node_rows(table, SETTINGS, seed=1), node_rows(read, SETTINGS, seed=1)
        assert a.ids == b.ids and a.names == b.names and np.array_equal(a.x, b.x)
        assert np.array_equal(a.split, b.split) and a.fingerprint == b.fingerprint
        assert (a.y is None and b.y is None) or np.array_equal(a.y, b.y)


def test_a_chunk_size_below_one_is_refused(sources):
    with pytest.raises(ValueError, match="chunk_rows must be at least 1"):
        load_party("bureau", sources[SourceKind.csv]["bureau"], SETTINGS, chunk_rows=0)

