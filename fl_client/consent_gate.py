"""Where a node applies its customers' consent, before any of its rows enter a run.

Each source of a node's rows (simulated and deployed, training and scoring) calls
:func:`gate_table` once on the table it read: the customers whose latest consent record does
not grant the run's purpose (:mod:`credit_data.consent`) are dropped there, so alignment,
training, scoring and list lookups never see them, exactly as if the party did not know them.
The counts (consented, withdrawn, no record) go into the node's audit log once per run (a
``consent`` line; :mod:`federation.audit_log`). A node without a consent file uses every row.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from credit_data.consent import (
    PURPOSES,
    check_ids,
    consent_counts,
    consented,
    read_records,
)
from credit_data.tables import PartyTable
from federation.audit_log import AuditLog, parse_line
from fl_client.audit_log_mod import audit_log_path
from fl_client.settings import ClientSettings

NO_RECORDS = "no consent records: all rows used"
"""What a report says of a party without a consent file."""


def file_digest(path: str | Path) -> str:
    """SHA-256 of a consent file (the node logs it, never the path); '' when it is missing."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


@functools.lru_cache(maxsize=8)
def _records(path: str, id_column: str, digest: str) -> pd.DataFrame:
    """Read a consent file once per version of its content (``digest``)."""
    return read_records(path, id_column)


def consent_decision(table: PartyTable, consent: str | None, purpose: str, id_column: str,
                     recipient: str | None = None) -> tuple[PartyTable, dict[str, Any] | None]:
    """Return ``table`` cut to the customers consenting to ``purpose``, and the counts.

    ``recipient``: the lender the run serves (records naming another lender do not count).
    Without a consent file the table is returned whole and the counts are None. The counts
    say: the purpose and its DPV term, the file's digest, the rows the party holds and uses,
    and how many of its customers consented, withdrew or have no record for the purpose.
    """
    if consent is None:
        return table, None
    digest = file_digest(consent)
    records = _records(str(consent), id_column, digest)
    ids = table.frame.index.astype(str)
    check_ids(records, str(consent), id_column, ids, table.source)
    keep = ids.isin(list(consented(records, purpose, recipient)))
    kept = table.rows(keep)
    counts = {"purpose": purpose, "dpv": PURPOSES[purpose], "file_sha256": digest,
              "recipient": recipient, "rows_held": int(len(ids)), "rows_used": int(keep.sum()),
              **consent_counts(records, purpose, ids, recipient)}
    return kept, counts


def gate_table(table: PartyTable, consent: str | None, purpose: str, id_column: str,
               settings: ClientSettings, recipient: str | None = None) -> PartyTable:
    """Apply the node's consent records to ``table`` and log the counts in its audit log."""
    kept, counts = consent_decision(table, consent, purpose, id_column, recipient)
    if counts is not None:
        log_consent(settings, counts)
    return kept


def gate_ids(party: str, ids: list[str], consent: str | None, purpose: str, id_column: str,
             settings: ClientSettings, recipient: str | None = None) -> list[str]:
    """Apply the node's consent records to a list of IDs (a blacklist holder's)."""
    table = PartyTable(party, pd.DataFrame(index=pd.Index(ids, dtype=object)), (), (),
                       str(consent))
    return [str(i) for i in gate_table(table, consent, purpose, id_column, settings,
                                       recipient).frame.index]


def log_consent(settings: ClientSettings, counts: dict[str, Any]) -> None:
    """Append the counts to the node's audit log, once per run and version of the file."""
    path = audit_log_path(settings)
    if path is None:
        return
    if path.is_file():
        for text in path.read_text(encoding="utf-8").splitlines():
            entry = parse_line(text)
            if entry.get("event") == "consent" and all(
                    entry.get(k) == counts[k] for k in ("purpose", "file_sha256", "recipient")):
                return
    AuditLog(path).append("consent", party=settings.party, **counts)


def logged_counts(path: Path | str) -> list[dict[str, Any]]:
    """Return the consent lines of a node's audit log (for reports)."""
    out = []
    for text in Path(path).read_text(encoding="utf-8").splitlines():
        entry = json.loads(text)
        if entry.get("event") == "consent":
            out.append(entry)
    return out
