"""Each party's consent records per customer: read, check, and the customers a purpose may use.

A party keeps one CSV file of consent records (docs/consent.md), one line per event, after the
Kantara consent receipt and ISO/IEC TS 27560: the customer's ID (the party's own ID column),
the ``purpose`` (a name from :data:`PURPOSES`), the ``status`` (``granted`` or ``withdrawn``),
the ``time`` (ISO 8601; UTC unless it says otherwise) and the ``receipt_id``; optionally the
``recipient``, the lender a record authorises (PIPL Art. 23; empty: every lender). The latest
record per customer and purpose that applies to the lender counts; a customer with no record for
a purpose has not consented to it.

Pure pandas: the node that enforces the records is :mod:`fl_client.consent_gate`.

>>> frame = pd.DataFrame({"customer_id": ["7", "7", "8"],
...     "purpose": ["credit_training"] * 3, "status": ["granted", "withdrawn", "granted"],
...     "time": ["2026-01-01", "2026-02-01", "2026-01-05"], "receipt_id": ["r1", "r2", "r3"]})
>>> records = check_records(frame, "consent.csv", "customer_id")
>>> sorted(consented(records, "credit_training"))
['8']
>>> consent_counts(records, "credit_training", ["7", "8", "9"])
{'consented': 1, 'withdrawn': 1, 'no_record': 1}
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from credit_data.errors import DataError
from credit_data.ids import describe, id_shape
from credit_data.tables import PartyTable

PURPOSES: dict[str, str] = {
    "credit_training": "https://w3id.org/dpv#ResearchAndDevelopment",
    "credit_scoring": "https://w3id.org/dpv#CreditChecking",
    "fraud_check": "https://w3id.org/dpv#FraudPreventionAndDetection",
    "monitoring": "https://w3id.org/dpv#ImproveExistingProductsAndServices",
}
"""The purposes a consent record may name, each mapped to its W3C DPV purpose."""

TRAINING, SCORING, FRAUD_CHECK, MONITORING = PURPOSES
STATUSES = ("granted", "withdrawn")
COLUMNS = ("purpose", "status", "time", "receipt_id")
"""Besides the ID column, the columns every consent file has."""
RECIPIENT = "recipient"
"""The optional column naming the one lender a record authorises."""


def read_records(path: Path | str, id_column: str, *,
                 now: datetime | None = None) -> pd.DataFrame:
    """Read and check a party's consent file; a bad one is named with its column.

    >>> read_records("/no/such/consent.csv", "customer_id")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.DataError: /no/such/consent.csv: consent file not found
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: consent file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a consent file (CSV): {exc}") from exc
    return check_records(frame, str(path), id_column, now=now)


def check_records(frame: pd.DataFrame, source: str, id_column: str, *,
                  now: datetime | None = None) -> pd.DataFrame:
    """Return the records as ``id, purpose, status, time (UTC), receipt_id``; refuse bad ones.

    An unknown purpose or status, an empty ID or receipt, a time that does not parse or lies
    in the future (after ``now``, by default the clock) is refused, naming ``source``, the
    column and the first line at fault (its line in the file, the header being line 1).
    """
    missing = [c for c in (id_column, *COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: consent file has no column '{missing[0]}' (it needs "
                        f"{[id_column, *COLUMNS]})")
    out = pd.DataFrame({"id": frame[id_column].astype(str).str.strip(),
                        "purpose": frame["purpose"].astype(str).str.strip(),
                        "status": frame["status"].astype(str).str.strip().str.lower(),
                        "receipt_id": frame["receipt_id"].astype(str).str.strip(),
                        RECIPIENT: (frame[RECIPIENT].astype(str).str.strip()
                                    if RECIPIENT in frame.columns else "")})

    def refuse(column: str, bad: pd.Series, what: str) -> None:
        if bad.any():
            first = int(bad.to_numpy().argmax())
            what, _, hint = what.partition("; ")
            raise DataError(f"{source}: column '{column}', line {first + 2}: {what} "
                            f"({frame[column].iloc[first]!r}); {int(bad.sum())} such line(s)"
                            + (f"; {hint}" if hint else ""))

    refuse(id_column, out["id"] == "", "empty customer ID")
    refuse("purpose", ~out["purpose"].isin(list(PURPOSES)),
           f"unknown purpose; the purposes are {list(PURPOSES)}")
    refuse("status", ~out["status"].isin(STATUSES), f"status must be one of {list(STATUSES)}")
    refuse("receipt_id", out["receipt_id"] == "", "empty receipt ID")
    times = pd.to_datetime(frame["time"].astype(str), utc=True, errors="coerce",
                           format="ISO8601")
    refuse("time", times.isna(), "not an ISO 8601 time")
    now_ts = pd.Timestamp(now if now is not None else datetime.now(UTC))
    if now_ts.tzinfo is None:
        now_ts = now_ts.tz_localize("UTC")
    refuse("time", times > now_ts, f"dated in the future (now is {now_ts.isoformat()})")
    out["time"] = times
    return out


def check_ids(records: pd.DataFrame, source: str, id_column: str, table_ids: Iterable[str],
              table_source: str) -> None:
    """Refuse consent records whose IDs are in another format than the party's table.

    Records about customers the table does not hold are legal (a customer who left), but
    when none of the file's IDs is in the table and their shapes differ (``00007`` against
    ``7``), the file was keyed differently and would silently withdraw everyone.
    """
    ids = pd.Index(list(table_ids), dtype=object)
    if records.empty or len(ids) == 0 or records["id"].isin(ids).any():
        return
    theirs, ours = id_shape(records["id"]), id_shape(ids)
    raise DataError(f"{source}: column '{id_column}': none of its IDs is in {table_source}, and "
                    f"they look different ({describe(theirs)}, against the table's "
                    f"{describe(ours)}); the consent file must use the party's own IDs")


def latest(records: pd.DataFrame, recipient: str | None = None) -> pd.DataFrame:
    """Return the latest record per customer and purpose (a later line wins a tie in time).

    With ``recipient`` (a lender's name) only the records for every lender or for that one
    count; without it, every record.
    """
    if recipient is not None and RECIPIENT in records:
        records = records[records[RECIPIENT].isin(["", recipient])]
    ordered = records.reset_index(drop=True).rename_axis("line").reset_index()
    ordered = ordered.sort_values(["time", "line"], kind="stable")
    return ordered.drop_duplicates(["id", "purpose"], keep="last").drop(columns="line")


def consented(records: pd.DataFrame, purpose: str, recipient: str | None = None) -> set[str]:
    """Return the customers whose latest record for ``purpose`` (and ``recipient``) grants it."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r} is not one of {list(PURPOSES)}")
    last = latest(records[records["purpose"] == purpose], recipient)
    return set(last.loc[last["status"] == "granted", "id"])


def consent_counts(records: pd.DataFrame, purpose: str, ids: Iterable[str],
                   recipient: str | None = None) -> dict[str, int]:
    """Count a table's customers for ``purpose``: consented, withdrawn, with no record."""
    last = latest(records[records["purpose"] == purpose], recipient).set_index("id")["status"]
    status = pd.Series(list(ids), dtype=object).map(last)
    return {"consented": int((status == "granted").sum()),
            "withdrawn": int((status == "withdrawn").sum()),
            "no_record": int(status.isna().sum())}


def consented_rows(table: PartyTable, records: pd.DataFrame, purpose: str,
                   recipient: str | None = None) -> PartyTable:
    """Return ``table`` cut to the customers who consented to ``purpose`` (labels too)."""
    return table.rows(table.frame.index.astype(str).isin(
        list(consented(records, purpose, recipient))))


def withdrawn_since(records: pd.DataFrame, purpose: str, ids: Iterable[str],
                    since: datetime) -> list[str]:
    """Return which of ``ids`` withdrew ``purpose`` after ``since`` (their latest record).

    A model trained at ``since`` on these customers' rows is one the owner may retrain.
    """
    last = latest(records[records["purpose"] == purpose])
    stamp = pd.Timestamp(since)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
    gone = last[(last["status"] == "withdrawn") & (last["time"] > stamp)]
    return sorted(set(gone["id"]) & {str(i) for i in ids})
