"""The node's one query ledger, charged by every path that answers the lender's IDs.

The training alignment (:mod:`fl_client.vertical_task`), batch scoring
(:mod:`fl_client.scoring_task`), a scoring service (:mod:`fl_client.scoring_service`) and a
blacklist lookup (:mod:`fl_client.list_lookup`) each charge the IDs they answer here before
answering (:mod:`federation.query_ledger`). A deployed node keeps the ledger in its state
directory, across runs; a simulated one beside its run's state (a fresh node per run).
"""

from __future__ import annotations

from pathlib import Path

from credit_data.settings import LABEL_HOLDER
from federation.query_ledger import Purpose, QueryLedger, QuerySpend
from fl_client.settings import ClientSettings


def query_ledger(settings: ClientSettings) -> QueryLedger:
    """Return the node's query ledger (in memory when the node has no directory)."""
    directory = (Path(settings.query_ledger) if settings.query_ledger
                 else Path(settings.state_dir) / settings.party if settings.state_dir else None)
    return QueryLedger(directory, settings.party, settings.queries)


def charge(settings: ClientSettings, n: int, purpose: Purpose) -> QuerySpend:
    """Charge ``n`` of the lender's IDs to the node's ledger; refused past a cap."""
    return query_ledger(settings).charge(LABEL_HOLDER, n, purpose)
