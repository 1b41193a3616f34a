"""Where a party's rows are read from: a CSV file, a Parquet file or a SQL query on a database.

A party names its source in ``data.parties.<party>`` (a deployed node with ``--data`` and
``--query``):

* ``path: lender.csv``: a CSV file (:mod:`credit_data.files` reads it);
* ``path: lender.parquet``: a Parquet file, read with pyarrow one row group at a time and only
  the columns the party declares;
* ``path: bank.duckdb`` with ``query: SELECT ...``: the rows of a query on an embedded DuckDB
  database, opened read-only with no access to other files, fetched in batches;
* ``path: postgresql://host/db`` (any SQLAlchemy URL) with ``query``: the rows of a query on
  that database, read through SQLAlchemy in chunks (the URL's password never appears in a
  message).

Every source becomes the same pandas frame as a CSV file would (the ID column as text, numbers,
text, missing values as NaN) and goes through the same checks, so a Parquet file or a DuckDB
table holding the rows of a CSV file gives the same model. A column of a type that is neither a
number nor text (a date, a list) is refused, naming the source and the column.

>>> import tempfile
>>> from pathlib import Path
>>> directory = Path(tempfile.mkdtemp())
>>> frame = pd.DataFrame({"id": ["a", "b"], "x": [1.5, None], "city": ["Rome", "Oslo"]})
>>> path = write_parquet(frame, directory / "t.parquet")
>>> read_parquet(path, "id", "data.parties.bureau.path").to_dict("list")
{'id': ['a', 'b'], 'x': [1.5, nan], 'city': ['Rome', 'Oslo']}
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from credit_data.errors import DataError
from credit_data.settings import DUCKDB_SUFFIXES, PartySource
from credit_data.tables import PartyTable

if TYPE_CHECKING:  # pyarrow loads where a Parquet file or a database is read (not per message)
    import pyarrow as pa

__all__ = ["BATCH_ROWS", "SourceKind", "parquet_chunks", "query_chunks", "read_parquet",
           "read_query", "source_kind", "source_name", "write_parquet", "write_party_tables",
           "write_population_tables"]

BATCH_ROWS = 65_536
"""Rows read at a time from a Parquet file or a query's result."""



class SourceKind(StrEnum):
    """The kinds of source a party's table can come from."""

    csv = "csv"
    parquet = "parquet"
    duckdb = "duckdb"
    sql = "sql"  # a SQLAlchemy URL


def source_kind(source: PartySource) -> SourceKind:
    """Tell the kind of ``source`` from its path (and whether it has a query).

    >>> source_kind(PartySource("b.parquet")), source_kind(PartySource("b.duckdb", query="q"))
    (<SourceKind.parquet: 'parquet'>, <SourceKind.duckdb: 'duckdb'>)
    >>> source_kind(PartySource("sqlite:///b.db", query="q")), source_kind(PartySource("b.csv"))
    (<SourceKind.sql: 'sql'>, <SourceKind.csv: 'csv'>)
    >>> source_kind(PartySource("b.duckdb"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.DataError: b.duckdb: a database needs a query ...
    """
    named_by = source.named_by or "data.parties.<party>.path"
    is_url = "://" in source.path
    is_database = is_url or source.path.lower().endswith(DUCKDB_SUFFIXES)
    if source.query is not None and not source.query.strip():
        raise DataError(f"{source_name(source)}: the query is empty ({named_by})")
    if is_database and source.query is None:
        raise DataError(f"{source_name(source)}: a database needs a query that selects the "
                        f"party's rows (data.parties.<party>.query, or the node's --query)")
    if source.query is not None and not is_database:
        raise DataError(f"{source.path}: a query is given, but the path names no database (a "
                        f"DuckDB file ending in {' or '.join(DUCKDB_SUFFIXES)}, or a "
                        f"SQLAlchemy URL) ({named_by})")
    if is_url:
        return SourceKind.sql
    if is_database:
        return SourceKind.duckdb
    return SourceKind.parquet if source.path.lower().endswith(".parquet") else SourceKind.csv


def source_name(source: PartySource) -> str:
    """Name ``source`` in messages: its path, or its URL without the password.

    >>> source_name(PartySource("postgresql://ann:secret@db/bank", query="SELECT 1"))
    'postgresql://ann:***@db/bank'
    """
    if "://" not in source.path:
        return source.path
    scheme, _, rest = source.path.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return source.path
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def read_parquet(path: Path, id_column: str, named_by: str,
                 columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file (only ``columns`` and the ID, where given) one row group at a time.

    Raises
    ------
    DataError
        The file is missing, not Parquet, lacks the ID column or holds a column that is
        neither a number nor text; the message names the file (and the column).
    """
    return _whole(parquet_chunks(path, id_column, named_by, columns), str(path))


def parquet_chunks(path: Path, id_column: str, named_by: str,
                   columns: Sequence[str] | None = None,
                   batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """Yield a Parquet file's rows (only ``columns`` and the ID, where given) in chunks.

    Each chunk is the frame a CSV file's rows would give (:func:`read_parquet`'s); the file is
    opened and its columns checked before the first chunk, so a bad file is named at once.

    Raises
    ------
    DataError
        As :func:`read_parquet`; also when the file has columns but no rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DataError(f"{path}: file not found ({named_by})")
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = list(handle.schema_arrow.names)
    wanted = _wanted(names, id_column, columns, str(path))
    for column in wanted:
        _check_type(handle.schema_arrow.field(column), id_column, str(path))

    def chunks() -> Iterator[pd.DataFrame]:
        try:
            batches = handle.iter_batches(batch_size=batch_rows, columns=wanted)
            yield from _chunks(batches, id_column, str(path))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc

    return chunks()


def read_query(source: PartySource, id_column: str) -> pd.DataFrame:
    """Return the rows of ``source.query`` on the database ``source.path`` names.

    DuckDB files are opened read-only and without access to other files (a query cannot read
    the node's other files); a SQLAlchemy URL is read in chunks of :data:`BATCH_ROWS`.

    Raises
    ------
    DataError
        The database cannot be reached or opened, the query fails, or its result lacks the ID
        column or holds a column that is neither a number nor text; the message names the
        database (and the column).
    """
    name = source_name(source)
    if source_kind(source) is SourceKind.sql:
        return _read_sqlalchemy(source.path, str(source.query), id_column, name)
    return _whole(query_chunks(source, id_column), name)


def query_chunks(source: PartySource, id_column: str,
                 batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the rows of ``source.query`` in chunks, as :func:`read_query` returns them whole.

    A DuckDB database's result is fetched ``batch_rows`` at a time (the connection is opened,
    and the query run and its columns checked, before the first chunk); a SQLAlchemy URL's
    result is read whole (:func:`read_query`) and yielded as one chunk.
    """
    name = source_name(source)
    query = str(source.query)
    if source_kind(source) is SourceKind.sql:
        return iter([_read_sqlalchemy(source.path, query, id_column, name)])
    import duckdb  # only a node that reads a DuckDB database loads it

    path = Path(source.path)
    if not path.is_file():
        raise DataError(f"{name}: database not found "
                        f"({source.named_by or 'data.parties.<party>.path'})")
    try:
        connection = duckdb.connect(str(path), read_only=True,
                                    config={"enable_external_access": False})
    except duckdb.Error as exc:
        raise DataError(f"{name}: cannot open the DuckDB database: {exc}") from exc
    try:
        try:
            reader = connection.execute(query).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise DataError(f"{name}: the query failed: {exc}") from exc
        names = list(reader.schema.names)
        _wanted(names, id_column, None, name)
        for column in names:
            _check_type(reader.schema.field(column), id_column, name)
    except BaseException:
        connection.close()
        raise

    def chunks() -> Iterator[pd.DataFrame]:
        try:
            yield from _chunks(iter(reader), id_column, name)
        except duckdb.Error as exc:
            raise DataError(f"{name}: the query failed: {exc}") from exc
        finally:
            connection.close()

    return chunks()


def _whole(chunks: Iterator[pd.DataFrame], name: str) -> pd.DataFrame:
    parts = list(chunks)
    if not parts:
        raise DataError(f"{name}: the table has columns but no rows")
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _read_sqlalchemy(url: str, query: str, id_column: str, name: str) -> pd.DataFrame:
    try:
        import sqlalchemy
    except ImportError as exc:  # pragma: no cover - sqlalchemy comes with flwr
        raise DataError(f"{name}: reading a SQLAlchemy URL needs the sqlalchemy package") from exc
    try:
        engine = sqlalchemy.create_engine(url)
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        raise DataError(f"{name}: not a usable SQLAlchemy URL: {exc}") from exc
    try:
        with engine.connect() as connection:
            chunks = list(pd.read_sql_query(sqlalchemy.text(query), connection,
                                            chunksize=BATCH_ROWS, dtype={id_column: str}))
    except sqlalchemy.exc.OperationalError as exc:
        raise DataError(f"{name}: cannot reach the database or run the query: "
                        f"{exc.orig}") from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise DataError(f"{name}: the query failed: {exc}") from exc
    except KeyError as exc:  # the dtype of an ID column the result does not have
        raise DataError(f"{name}: ID column '{id_column}' is missing from the query's "
                        "result") from exc
    finally:
        engine.dispose()
    if not chunks:
        raise DataError(f"{name}: the query returned no rows")
    frame = pd.concat(chunks, ignore_index=True)
    _wanted(list(frame.columns), id_column, None, name)
    for column in frame.columns:
        values = frame[column]
        if column != id_column and not (pd.api.types.is_numeric_dtype(values)
                                        or pd.api.types.is_string_dtype(values)):
            raise DataError(f"{name}: column '{column}' is of type {values.dtype}, "
                            "neither a number nor text")
    frame[id_column] = frame[id_column].where(frame[id_column].notna(), None)
    return frame


def _wanted(names: list[str], id_column: str, columns: Sequence[str] | None,
            name: str) -> list[str]:
    if id_column not in names:
        raise DataError(f"{name}: ID column '{id_column}' is missing; the table has columns "
                        f"{names[:12]}")
    if columns is None:
        return names
    # a declared column that is absent is named later, by the same check as a CSV file's
    return [c for c in names if c == id_column or c in set(columns)]


def _check_type(field: pa.Field, id_column: str, name: str) -> None:
    import pyarrow as pa

    kind = field.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    plain = (pa.types.is_integer(kind) or pa.types.is_floating(kind)
             or pa.types.is_boolean(kind) or pa.types.is_decimal(kind)
             or pa.types.is_string(kind) or pa.types.is_large_string(kind)
             or pa.types.is_null(kind))
    if not plain:
        what = "the ID column" if field.name == id_column else "column"
        raise DataError(f"{name}: {what} '{field.name}' is of type {field.type}, neither a "
                        "number nor text; cast it in the source (or leave it out of the "
                        "party's features)")


def _chunks(batches: Iterator[pa.RecordBatch], id_column: str,
            name: str) -> Iterator[pd.DataFrame]:
    """Turn record batches into the frames a CSV file gives: IDs as text, numbers, text, NaN."""
    rows = 0
    for batch in batches:
        if batch.num_rows:
            rows += batch.num_rows
            yield _pandas(batch, id_column)
    if not rows:
        raise DataError(f"{name}: the table has columns but no rows")


def _pandas(batch: pa.RecordBatch, id_column: str) -> pd.DataFrame:
    import pyarrow as pa

    kind = batch.schema.field(id_column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # IDs as text, as a CSV file writes them (missing stays missing), cast in C
        position = batch.schema.get_field_index(id_column)
        batch = batch.set_column(position, id_column, batch.column(position).cast(pa.string()))
    frame = batch.to_pandas()
    ids = frame[id_column]
    if pd.api.types.is_float_dtype(ids):  # integer IDs with a gap come back as floats
        text = ids.map(lambda v: None if np.isnan(v) else
                       str(int(v)) if float(v).is_integer() else repr(v))
    else:
        text = ids.astype(object).where(ids.notna(), None)
        if not pd.api.types.is_string_dtype(ids):
            text = text.map(lambda v: None if v is None else str(v))
    frame[id_column] = text
    for column in frame.columns:
        values = frame[column]
        if column == id_column:
            continue
        if pd.api.types.is_bool_dtype(values):
            frame[column] = values.astype(np.float64)
        elif isinstance(values.dtype, pd.CategoricalDtype):  # a dictionary-encoded text column
            frame[column] = values.astype(object).where(values.notna(), np.nan)
    return frame


def write_parquet(frame: pd.DataFrame, path: Path, *, row_group_rows: int = BATCH_ROWS) -> Path:
    """Write ``frame`` (with its ID as a column) to ``path`` as Parquet, atomically.

    Row groups of ``row_group_rows`` let a reader hold one group at a time.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), temporary,
                       row_group_size=row_group_rows)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_party_tables(frames: Mapping[str, pd.DataFrame], directory: Path,
                       kind: SourceKind | str = SourceKind.parquet, *,
                       id_column: str = "customer_id") -> dict[str, PartySource]:
    """Write each party's frame (its ID as a column) where its partner would keep it.

    ``parquet``: ``<party>.parquet``; ``duckdb``: one table per party in ``parties.duckdb``
    (read back with ``SELECT * FROM <party>``); ``csv``: ``<party>.csv``. Returns each party's
    source, its text columns (pandas' ``category`` or text) declared categorical, for
    :func:`credit_data.files.load_files`. The synthetic generator's frames
    (:func:`credit_data.synthetic.synthetic_frames`) are written so.

    >>> import tempfile
    >>> from credit_data.synthetic import synthetic_frames
    >>> sources = write_party_tables(synthetic_frames(200, seed=0), Path(tempfile.mkdtemp()))
    >>> Path(sources["bureau"].path).name, sources["lender"].categorical[:1]
    ('bureau.parquet', ('purpose',))
    """
    kind = SourceKind(kind)
    directory.mkdir(parents=True, exist_ok=True)
    sources = {}
    for party, frame in frames.items():
        text = tuple(c for c in frame.columns if c != id_column and not (
            pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])))
        if kind is SourceKind.parquet:
            path = write_parquet(frame, directory / f"{party}.parquet")
            sources[party] = PartySource(str(path), categorical=text, id_column=id_column)
        elif kind is SourceKind.csv:
            path = directory / f"{party}.csv"
            temporary = path.with_name(f".{path.name}.tmp")
            frame.to_csv(temporary, index=False)
            os.replace(temporary, path)
            sources[party] = PartySource(str(path), categorical=text, id_column=id_column)
        elif kind is SourceKind.duckdb:
            path = directory / "parties.duckdb"
            _write_duckdb(frame, path, party)
            sources[party] = PartySource(str(path), categorical=text, id_column=id_column,
                                         query=f"SELECT * FROM {party}")
        else:
            raise DataError(f"write_party_tables: cannot write to a {kind} source")
    return sources


def write_population_tables(tables: Mapping[str, PartyTable], directory: Path, label: str,
                            *, id_column: str = "customer_id") -> dict[str, PartySource]:
    """Write each party's table (its features and, at the lender, ``label``) as Parquet.

    Returns each party's source, its features and categorical columns declared as the table
    has them, so that :func:`credit_data.files.load_party` reads back the same table (the
    simulation's nodes read their own so, chunk by chunk, instead of holding every party's).

    >>> import tempfile
    >>> from credit_data.files import load_party
    >>> from credit_data.settings import DataSettings
    >>> from credit_data.synthetic import generate
    >>> tables = generate(300, seed=0).tables
    >>> sources = write_population_tables(tables, Path(tempfile.mkdtemp()), "default_12m")
    >>> back = load_party("lender", sources["lender"], DataSettings(id_column="customer_id"))
    >>> lender = tables["lender"]
    >>> back.fingerprint() == lender.fingerprint(), back.features == lender.features
    (True, True)
    """
    directory.mkdir(parents=True, exist_ok=True)
    sources = {}
    for party, table in tables.items():
        frame = table.frame.rename_axis(id_column).reset_index()
        if table.labels is not None and label in table.labels.columns:
            frame[label] = table.labels[label].to_numpy()
        path = write_parquet(frame, directory / f"{party}.parquet")
        del frame
        sources[party] = PartySource(str(path), features=table.features,
                                     categorical=table.categorical, id_column=id_column)
    return sources


def _write_duckdb(frame: pd.DataFrame, path: Path, table: str) -> None:
    import duckdb
    import pyarrow as pa

    if not table.isidentifier():
        raise DataError(f"{table!r} is not a table name")
    rows = pa.Table.from_pandas(frame, preserve_index=False)
    with duckdb.connect(str(path)) as connection:
        connection.register("incoming", rows)
        connection.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")
        connection.unregister("incoming")
