"""Party tables read from CSV or Parquet files or a database, validated before anything is trained.

Each party names its file, its ID column and its feature columns; several parties may read
columns from the same file (the Taiwan data is one file split by column groups). Features are
namespaced by party downstream, so two parties may each have a column ``x0`` in different files;
the same column of the same file declared by two parties is an error. A Parquet file or a SQL
query on a database (:mod:`credit_data.sources`) is checked exactly as a CSV file is.

A party reads its table in chunks of :data:`CHUNK_ROWS` rows (pandas chunks of a CSV file,
pyarrow batches of a Parquet file, DuckDB fetch batches) and keeps of each chunk only its own
columns, each number column as float64 from the chunk on: the raw table is never whole in
memory. The checks run on the columns so joined, so their messages are those of a whole read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError, DataError
from credit_data.memory import release_freed_memory
from credit_data.settings import LABEL_HOLDER, PARTIES, DataSettings, PartySource
from credit_data.sources import (
    BATCH_ROWS,
    SourceKind,
    parquet_chunks,
    query_chunks,
    source_kind,
    source_name,
)
from credit_data.tables import PartyTable, Population

log = logging.getLogger("credit_fl")

CHUNK_ROWS = BATCH_ROWS
"""Rows a party reads at a time from its CSV or Parquet file or its query's result."""


def load_files(settings: DataSettings, *, labels: bool = True) -> Population:
    """Read and validate every party's table from its CSV or Parquet file or its database query.

    Raises
    ------
    ConfigError
        A party is unknown, the label holder is missing, or a path is empty.
    DataError
        A file or column is missing or malformed; the message names the file and column.
    """
    parties = dict(settings.parties)
    if not parties:
        raise ConfigError("data.parties is empty: name at least the lender's file")
    for party in parties:
        if party not in PARTIES:
            raise ConfigError(f"data.parties.{party}: unknown party; expected one of {PARTIES}")
    if LABEL_HOLDER not in parties:
        raise ConfigError(f"data.parties.{LABEL_HOLDER} is required: the lender holds the labels")
    _check_no_shared_columns(parties, settings)

    tables = {party: _load_party(party, source, settings, labels)
              for party, source in parties.items()}
    return Population(name=settings.name, tables=tables)


def load_party(party: str, source: PartySource, settings: DataSettings, *,
               labels: bool = True, chunk_rows: int = CHUNK_ROWS) -> PartyTable:
    """Read one party's table from its own file (a deployed node reads only its own).

    ``labels=False`` (scoring) reads a lender's file without its label column. The table is
    read ``chunk_rows`` rows at a time (any chunk size gives the same table).
    """
    return _load_party(party, source, settings, labels, chunk_rows)


def load_frames(frames: Mapping[str, pd.DataFrame], settings: DataSettings, *,
                labels: bool = True) -> Population:
    """Validate every party's DataFrame exactly as its CSV file would be; return the tables.

    A frame holds what the party's file would: the ID column (``data.id_column``, or the
    party's ``data.parties.<party>.id_column``; an index of that name counts), the feature
    columns and, at the lender, the label. ``data.parties.<party>`` declares features and
    categorical columns as for a file (its path is not read); a column of pandas' ``category``
    type is categorical as if it were declared. Messages name a frame ``frames['<party>']``.

    Raises
    ------
    ConfigError
        A party is unknown, the lender's frame is missing, or a value is not a DataFrame.
    DataError
        A column is missing or malformed; the message names the frame and the column.
    """
    if not frames:
        raise ConfigError(f"frames is empty: give at least the {LABEL_HOLDER}'s DataFrame")
    for party, frame in frames.items():
        if party not in PARTIES:
            raise ConfigError(f"frames['{party}']: unknown party; expected one of {PARTIES}")
        if not isinstance(frame, pd.DataFrame):
            raise ConfigError(f"frames['{party}']: expected a pandas DataFrame, got "
                              f"{type(frame).__name__}")
    if LABEL_HOLDER not in frames:
        raise ConfigError(f"frames['{LABEL_HOLDER}'] is required: the lender holds the labels")
    tables = {party: _frame_table(party, frame, settings, labels)
              for party, frame in frames.items()}
    return Population(name=settings.name, tables=tables)


def _frame_table(party: str, frame: pd.DataFrame, settings: DataSettings,
                 labels: bool) -> PartyTable:
    name = f"frames['{party}']"
    source = settings.parties.get(party) or PartySource(path=name)
    id_column = _id_column(source, settings)
    if id_column not in frame.columns and frame.index.name == id_column:
        frame = frame.reset_index()
    _check_id_column(frame, id_column, name, "frame")
    if frame.empty:
        raise DataError(f"{name}: frame has columns but no rows")
    keyed = _keyed(frame, id_column, name, first_row=0)
    declared = tuple(c for c in keyed.columns if isinstance(keyed[c].dtype, pd.CategoricalDtype))
    return _party_table(party, keyed, source, settings, name, labels, declared)


def _id_column(source: PartySource, settings: DataSettings) -> str:
    return source.id_column or settings.id_column


def _check_no_shared_columns(parties: Mapping[str, PartySource], settings: DataSettings) -> None:
    owner: dict[tuple[tuple[str, str | None], str], str] = {}
    for party, source in parties.items():
        if not source.path:
            raise ConfigError(f"data.parties.{party}.path is empty")
        path = (source.path if "://" in source.path else str(Path(source.path).resolve()),
                source.query)
        for column in source.features or ():
            key = (path, column)
            if key in owner:
                raise DataError(
                    f"feature '{column}' of {source.path} is declared by two parties, "
                    f"'{owner[key]}' and '{party}' (data.parties.*.features): "
                    "a column belongs to one party only")
            owner[key] = party


MISSING_MARKERS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                   "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan",
                   "null")
"""What marks a missing value in a feature or label column (pandas' defaults, spelled out so
that the ID column can be read without them)."""


def _csv_chunks(path: Path, party: str, id_column: str, chunk_rows: int,
                named_by: str = "") -> Iterator[pd.DataFrame]:
    """Yield a CSV file's rows in chunks; the file and its header are checked before the first."""
    named_by = named_by or f"data.parties.{party}.path"
    if not path.is_file():
        raise DataError(f"{path}: file not found ({named_by})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty ({named_by})")
    unreadable = (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError)
    try:
        header = pd.read_csv(path, nrows=0)
    except unreadable as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from exc
    _check_id_column(header, id_column, str(path), "file")

    def chunks() -> Iterator[pd.DataFrame]:
        rows = 0
        try:
            # an ID is text as written: "NA", "null" or "None" are IDs, not missing values; in
            # the other columns pandas' usual markers of a missing value hold
            with pd.read_csv(path, dtype={id_column: str}, keep_default_na=False,
                             na_values={c: list(MISSING_MARKERS) for c in header.columns
                                        if c != id_column}, chunksize=chunk_rows) as reader:
                for chunk in reader:
                    rows += len(chunk)
                    yield chunk
        except unreadable as exc:
            raise DataError(f"{path}: not a readable CSV file: {exc}") from exc
        if not rows:
            raise DataError(f"{path}: file has a header but no rows")

    return chunks()


def _joined(chunks: Iterator[pd.DataFrame], id_column: str, wanted: set[str] | None,
            as_read: set[str]) -> pd.DataFrame:
    """Join a table's chunks, keeping the ID and the ``wanted`` columns (all when None).

    A number column outside ``as_read`` (the label and the categorical columns, which are
    checked or turned into text as read) is held as float64 from its chunk on, as its checks
    (:func:`_numeric_column`) would turn it; a column that holds text somewhere stays as read,
    so the checks name its values. Only the chunk being read is ever held raw.
    """
    ids: list[pd.Series] = []
    pieces: dict[str, list[pd.Series]] = {}
    for chunk in chunks:
        ids.append(chunk[id_column].reset_index(drop=True))
        for column in chunk.columns:
            if column == id_column or (wanted is not None and column not in wanted):
                continue
            values = chunk[column].reset_index(drop=True)
            if column not in as_read and pd.api.types.is_numeric_dtype(values):
                values = pd.Series(values.to_numpy(dtype=np.float64, na_value=np.nan),
                                   name=column)
            pieces.setdefault(column, []).append(values)
        del chunk
    columns = {id_column: _concat(ids)}
    del ids
    for column in list(pieces):
        columns[column] = _concat(pieces.pop(column))
    return pd.DataFrame(columns, copy=False)


def _concat(parts: list[pd.Series]) -> pd.Series:
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _check_id_column(frame: pd.DataFrame, id_column: str, name: str, what: str) -> None:
    if id_column not in frame.columns:
        raise DataError(f"{name}: ID column '{id_column}' is missing; the {what} has columns "
                        f"{list(frame.columns)[:12]}")


def _keyed(frame: pd.DataFrame, id_column: str, name: str, first_row: int) -> pd.DataFrame:
    """Check the ID column (no empty, no duplicate ID) and make it the index, as text.

    ``first_row`` is the number the first row goes by in messages (2 in a file: after its header).
    """
    ids = frame[id_column]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise DataError(f"{name}: column '{id_column}' has {int(empty.sum())} empty IDs "
                        f"(first at row {int(np.flatnonzero(empty)[0]) + first_row})")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise DataError(f"{name}: column '{id_column}' has {len(duplicated)} duplicate IDs, "
                        f"e.g. {list(duplicated.unique()[:3])}")
    frame = frame.set_index(id_column)
    frame.index = frame.index.astype(str)
    return frame


def _load_party(party: str, source: PartySource, settings: DataSettings, labels: bool = True,
                chunk_rows: int = CHUNK_ROWS) -> PartyTable:
    """Read a party's table chunk by chunk (only its columns), check it, build its table."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    kind = source_kind(source)
    id_column = _id_column(source, settings)
    wanted = None if source.features is None else {*source.features, settings.label}
    as_read = {*source.categorical, settings.label}
    if kind is SourceKind.csv:
        path = Path(source.path)
        chunks = _csv_chunks(path, party, id_column, chunk_rows, source.named_by)
        name, first_row = str(path), 2  # a file's first row is its line 2, after its header
    elif kind is SourceKind.parquet:
        chunks = parquet_chunks(Path(source.path), id_column,
                                source.named_by or f"data.parties.{party}.path",
                                None if wanted is None else sorted(wanted), chunk_rows)
        name, first_row = source_name(source), 1
    else:
        chunks = query_chunks(source, id_column, chunk_rows)
        name, first_row = source_name(source), 1
    frame = _keyed(_joined(chunks, id_column, wanted, as_read), id_column, name, first_row)
    table = _party_table(party, frame, source, settings, source_name(source), labels)
    del frame
    release_freed_memory(table.n_rows)  # the chunks' memory, before the next large step
    return table


def _party_table(party: str, frame: pd.DataFrame, source: PartySource, settings: DataSettings,
                 path: str, labels: bool, declared: tuple[str, ...] = ()) -> PartyTable:
    """Check a party's keyed rows as read (``path`` names them) and build its table.

    ``declared``: columns categorical by their type (a DataFrame's ``category`` columns).
    """
    label = settings.label if party == LABEL_HOLDER else None
    if label is not None and not labels and label not in frame.columns:
        label = None  # new applicants: no outcome yet
    if label is not None and label not in frame.columns:
        raise DataError(f"{path}: label column '{label}' (data.label) is missing at the lender")

    if source.features is None:
        features = [c for c in frame.columns if c != label]
    else:
        features = list(source.features)
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: declared feature column(s) {missing} are missing "
                            f"(data.parties.{party}.features)")
        if label is not None and label in features:
            raise DataError(f"{path}: the label '{label}' cannot also be a feature "
                            f"(data.parties.{party}.features)")
    if not features:
        raise DataError(f"{path}: party '{party}' has no feature columns")
    categorical = list(source.categorical) + [c for c in declared if c in features
                                              and c not in source.categorical]
    unknown = [c for c in categorical if c not in features]
    if unknown:
        raise DataError(f"{path}: categorical column(s) {unknown} are not among the features "
                        f"of party '{party}' (data.parties.{party}.categorical)")

    numeric = [c for c in features if c not in categorical]
    constant = [c for c in features if frame[c].nunique(dropna=False) <= 1]
    if constant:
        log.warning("%s: column(s) %s hold a single value in every row: they carry no "
                    "information for the model", path, constant)
    out = pd.DataFrame(index=frame.index)
    for column in numeric:
        out[column] = _numeric_column(frame[column], path, party, column)
    for column in categorical:
        values = frame[column]
        if values.isna().all():
            raise DataError(f"{path}: column '{column}' is entirely missing")
        out[column] = values.astype("string").astype(object).where(values.notna(), np.nan)

    outcomes = None
    if label is not None and labels:
        outcomes = pd.DataFrame({label: _label_column(frame[label], path, label)},
                                index=frame.index)
    return PartyTable(party, out, tuple(numeric), tuple(categorical), path, labels=outcomes)


def _numeric_column(values: pd.Series, path: str, party: str, column: str) -> pd.Series:
    if values.isna().all():
        raise DataError(f"{path}: column '{column}' is entirely missing")
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        examples = list(values[bad].astype(str).unique()[:3])
        raise DataError(
            f"{path}: column '{column}' holds non-numeric values {examples} but is not declared "
            f"categorical (add it to data.parties.{party}.categorical or leave it out of "
            f"data.parties.{party}.features)")
    numbers = numbers.astype(np.float64)
    if np.isinf(numbers.to_numpy()).any():
        raise DataError(f"{path}: column '{column}' holds infinite values")
    return numbers


def _label_column(values: pd.Series, path: str, label: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    valid = numbers.isin([0, 1]) & values.notna()
    if not valid.all():
        examples = list(values[~valid].astype(str).unique()[:3])
        raise DataError(f"{path}: label column '{label}' must hold only 0 and 1; found "
                        f"{examples} in {int((~valid).sum())} rows")
    if numbers.nunique() < 2:
        raise DataError(f"{path}: label column '{label}' holds a single class")
    return numbers.astype(np.int8)
