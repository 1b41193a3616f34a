"""A party's table from a Parquet file or a database query is checked as its CSV file is (issue 36).

Each source holds the rows of a CSV file; the tables read back are compared value for value with
the CSV's, and each bad input gets the CSV's message with the source's name in place of the
file's.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from credit_data.errors import DataError
from credit_data.files import load_files, load_party
from credit_data.settings import DataSettings, PartySource, Source
from credit_data.sources import SourceKind, write_parquet, write_party_tables
from credit_data.synthetic import synthetic_frames
from tests.test_front_door import BAD_FRAMES
from tests.test_front_door import _lender as good_lender

pytestmark = pytest.mark.unit

KINDS = (SourceKind.parquet, SourceKind.duckdb)


def _settings(parties: dict[str, PartySource], id_column: str = "id",
              label: str = "default") -> DataSettings:
    return DataSettings(name="tables", source=Source.files, id_column=id_column, label=label,
                        parties=parties)


def _as(kind: SourceKind, csv: Path, **kw) -> PartySource:
    """The rows of ``csv`` (as pandas reads them) in a source of ``kind``."""
    frame = pd.read_csv(csv)
    if kind is SourceKind.parquet:
        return PartySource(str(write_parquet(frame, csv.with_suffix(".parquet"))), **kw)
    database = csv.with_suffix(".duckdb")
    database.unlink(missing_ok=True)
    with duckdb.connect(str(database)) as connection:
        connection.register("incoming", frame)
        connection.execute("CREATE TABLE lender AS SELECT * FROM incoming")
    return PartySource(str(database), query="SELECT * FROM lender", **kw)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, DataSettings]:
    """1,000 synthetic customers as CSV files, Parquet files and tables of one DuckDB file."""
    frames = synthetic_frames(1_000, seed=3)
    root = tmp_path_factory.mktemp("tables")
    return {kind: _settings(write_party_tables(frames, root / kind, kind), "customer_id",
                            "default_12m")
            for kind in (SourceKind.csv, *KINDS)}


@pytest.mark.parametrize("kind", KINDS)
def test_a_parquet_file_and_a_duckdb_table_give_the_tables_of_their_csv_file(synthetic, kind):
    # Execute
    expected, found = load_files(synthetic[SourceKind.csv]), load_files(synthetic[kind])
    # Assert: the same IDs in the same order, columns, kinds, values and labels
    for party, table in expected.tables.items():
        other = found.tables[party]
        assert (other.numeric, other.categorical) == (table.numeric, table.categorical)
        pd.testing.assert_frame_equal(other.frame, table.frame)
        assert other.fingerprint() == table.fingerprint()
    pd.testing.assert_frame_equal(found.tables["lender"].labels, expected.tables["lender"].labels)


def test_a_parquet_file_is_read_for_the_declared_columns_only(synthetic):
    # Prepare: the bureau declares one of its columns
    source = synthetic[SourceKind.parquet].parties["bureau"]
    column = pd.read_parquet(source.path).columns[1]
    # Execute
    table = load_party("bureau", PartySource(source.path, features=(column,),
                                             id_column="customer_id"), synthetic[SourceKind.csv])
    # Assert
    assert table.features == (column,) and table.n_rows == len(pd.read_parquet(source.path))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(set(BAD_FRAMES) - {"no-id-column"}))
def test_bad_rows_get_the_message_their_csv_file_gets(tmp_path, kind, case):
    # Prepare: the same rows as a CSV file and in the other source
    csv = tmp_path / "lender.csv"
    BAD_FRAMES[case].to_csv(csv, index=False)
    other = _as(kind, csv, categorical=("purpose",))
    # Execute
    with pytest.raises(DataError) as from_csv:
        load_files(_settings({"lender": PartySource(str(csv), categorical=("purpose",))}))
    with pytest.raises(DataError) as from_other:
        load_files(_settings({"lender": other}))
    # Assert: one message, naming the Parquet file or the database
    assert str(from_csv.value).startswith(f"{csv}: ")
    assert str(from_other.value) == str(from_csv.value).replace(str(csv), other.path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_column_is_named_with_the_source(tmp_path, kind):
    csv = tmp_path / "lender.csv"
    BAD_FRAMES["no-id-column"].to_csv(csv, index=False)
    other = _as(kind, csv, categorical=("purpose",))
    with pytest.raises(DataError, match=rf"^{other.path}: ID column 'id' is missing; the table "
                                        r"has columns \['income', 'purpose', 'default'\]"):
        load_files(_settings({"lender": other}))
    good_lender().to_csv(csv, index=False)
    other = _as(kind, tmp_path / "lender.csv")
    declared = PartySource(other.path, features=("income", "debt"), query=other.query)
    with pytest.raises(DataError, match=rf"^{other.path}: declared feature column\(s\) "
                                        r"\['debt'\] are missing"):
        load_files(_settings({"lender": declared}))


def test_a_column_neither_number_nor_text_is_a_wrong_type_named_with_the_source(tmp_path):
    # Prepare: a date column, in a Parquet file and in a DuckDB table
    frame = pd.DataFrame({"id": ["a", "b", "c"], "opened": [dt.date(2020, 1, d) for d in (1, 2, 3)],
                          "default": [0, 1, 0]})
    parquet = write_parquet(frame, tmp_path / "lender.parquet")
    database = tmp_path / "bank.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute("CREATE TABLE t AS SELECT * FROM read_parquet(?)", [str(parquet)])
    # Execute / Assert
    for source in (PartySource(str(parquet)),
                   PartySource(str(database), query="SELECT * FROM t")):
        with pytest.raises(DataError, match=rf"^{source.path}: column 'opened' is of type "
                                            r"date32\[day\], neither a number nor text"):
            load_files(_settings({"lender": source}))


def test_an_unreachable_database_or_a_failing_query_is_named(tmp_path):
    not_a_database = tmp_path / "bank.duckdb"
    not_a_database.write_text("id,x\n")
    cases = {
        str(tmp_path / "none.duckdb"): r"none\.duckdb: database not found",
        str(not_a_database): r"bank\.duckdb: cannot open the DuckDB database",
        f"sqlite:///{tmp_path}/no/such/dir/bank.db": r"sqlite:///.*bank\.db: cannot reach the "
                                                     r"database or run the query",
        "postgresql://ann:secret@127.0.0.1:1/bank": r"postgresql://ann:\*\*\*@127\.0\.0\.1:1/"
                                                    r"bank: ",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as raised:
            load_files(_settings({"lender": PartySource(path, query="SELECT * FROM lender")}))
        assert "secret" not in str(raised.value)
    # a reachable database, a query that fails
    with duckdb.connect(str(tmp_path / "empty.duckdb")):
        pass
    with pytest.raises(DataError, match=r"empty\.duckdb: the query failed: .*lender"):
        load_files(_settings({"lender": PartySource(str(tmp_path / "empty.duckdb"),
                                                    query="SELECT * FROM lender")}))


def test_a_duckdb_query_cannot_read_the_nodes_other_files(tmp_path):
    # Prepare: a database, and a file of the node's next to it
    (tmp_path / "secret.csv").write_text("id,default\na,0\nb,1\n")
    with duckdb.connect(str(tmp_path / "bank.duckdb")):
        pass
    query = f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')"
    # Execute / Assert
    with pytest.raises(DataError, match=r"bank\.duckdb: the query failed: .*disabled"):
        load_files(_settings({"lender": PartySource(str(tmp_path / "bank.duckdb"),
                                                    query=query)}))


def test_a_sqlalchemy_url_gives_the_rows_of_its_query(tmp_path):
    # Prepare: the lender's rows in SQLite (SQLAlchemy's URL), and as a CSV file
    import sqlite3

    frame = good_lender()
    frame.to_csv(tmp_path / "lender.csv", index=False)
    with sqlite3.connect(tmp_path / "bank.db") as connection:
        frame.to_sql("lender", connection, index=False)
    csv = PartySource(str(tmp_path / "lender.csv"), categorical=("purpose",))
    url = PartySource(f"sqlite:///{tmp_path}/bank.db", query="SELECT * FROM lender",
                      categorical=("purpose",))
    # Execute
    expected, found = load_files(_settings({"lender": csv})), load_files(_settings({"lender": url}))
    # Assert
    pd.testing.assert_frame_equal(found.tables["lender"].frame, expected.tables["lender"].frame)
    assert np.array_equal(found.tables["lender"].labels, expected.tables["lender"].labels)


def test_a_database_without_a_query_or_a_query_without_a_database_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"bank\.duckdb: a database needs a query"):
        load_files(_settings({"lender": PartySource(str(tmp_path / "bank.duckdb"))}))
    with pytest.raises(DataError, match=r"lender\.csv: a query is given, but the path names no "
                                        r"database"):
        load_files(_settings({"lender": PartySource(str(tmp_path / "lender.csv"),
                                                    query="SELECT 1")}))


def test_a_deployed_node_reads_its_duckdb_table_with_its_own_query(tmp_path):
    # Prepare: the bureau's rows in a DuckDB database, named by the node's own flags
    import json

    from deployment.client_app import NodeConfig, _read_rows
    from deployment.node import _check, _parser, node_config
    from experiments.deploy import federation as deploy
    from federation.run_settings import ScoringRows

    csv = tmp_path / "lender.csv"
    good_lender().to_csv(csv, index=False)
    database = Path(_as(SourceKind.duckdb, csv).path)
    base = ["--party", "bureau", "--data", str(database), "--superlink", "127.0.0.1:1",
            "--state-dir", str(tmp_path / "s"),
            "--insecure", "--max-epsilon", "3", "--id-column", "id", "--categorical", "purpose"]
    with pytest.raises(SystemExit, match=r"is a DuckDB database: --query is required"):
        _check(_parser().parse_args(base))
    with pytest.raises(SystemExit, match=r"--query needs --data to name a DuckDB database"):
        _check(_parser().parse_args([*base[:3], str(csv), *base[4:], "--query", "SELECT 1"]))
    args = _parser().parse_args([*base, "--query", "SELECT id, income, purpose FROM lender"])
    _check(args)
    # Execute: the node's config as its ClientApp reads it, and its rows
    node = NodeConfig.from_context(node_config(args))
    _, plain = deploy.compose_settings([])
    table = _read_rows(json.dumps(plain), node, "{}", str(node.data_path), False,
                       ScoringRows.all, (0, 0))
    # Assert: the query's rows and columns, and no label column (the bureau's table)
    assert node.query == "SELECT id, income, purpose FROM lender"
    assert list(table.frame.index) == list(good_lender()["id"])
    assert table.features == ("income", "purpose")


@pytest.mark.parametrize("kind", KINDS)
def test_integer_ids_are_the_text_a_csv_file_holds(tmp_path, kind):
    # Prepare: numeric IDs (a CSV file keeps them as written; Parquet and DuckDB as integers)
    frame = good_lender().assign(id=[7, 8, 9, 10, 11, 1200000000000])
    csv = tmp_path / "lender.csv"
    frame.to_csv(csv, index=False)
    other = _as(kind, csv, categorical=("purpose",))
    # Execute
    expected = load_files(_settings({"lender": PartySource(str(csv), categorical=("purpose",))}))
    found = load_files(_settings({"lender": other}))
    # Assert
    assert list(found.tables["lender"].frame.index) == ["7", "8", "9", "10", "11", "1200000000000"]
    pd.testing.assert_frame_equal(found.tables["lender"].frame, expected.tables["lender"].frame)
