"""What a party computes, on its own rows, to watch a trained model. Never imports flwr.

Each party loads its own bundle (checked against its manifest's hashes) and its own table of
the period, and compares each of its columns, and the norm of its embedding of each row, with
the bins frozen from its training rows in its bundle (:mod:`credit_data.stability`). What it
returns, and all that leaves it, is per column: the stability index, the rows counted and the
merged bins' counts (each at least ``min_count`` rows on both sides).

Under the party's DP budget (``MonitoringInput.epsilon``) every histogram is noised before it
is merged (:func:`privacy.count_noise.laplace_counts`, fresh from the OS): half the epsilon on
the period's counts, half on the training counts the index compares them with; the spend is
recorded in the party's lifetime ledger (``ledger_dir``) as ``monitoring_epsilon``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from credit_data.errors import BudgetRefusal, DataError
from credit_data.stability import ColumnIndex, bin_counts, column_index, merge_small, psi
from credit_data.tables import PartyTable
from fl_client.scoring_task import encode_table, model_settings
from models.bundle import Bundle, load_bundle
from models.factory import party_encoder
from models.split_training import embed
from privacy.count_noise import laplace_counts

__all__ = ["EMBEDDING_NORM", "MonitoringInput", "check_columns", "party_indices", "released"]

EMBEDDING_NORM = "embedding_norm"
"""The name of the index of a party's embedding norm, next to its columns'."""


@dataclass(frozen=True)
class MonitoringInput:
    """One party's bundle directory, its table of the period and its DP budget for it.

    ``epsilon``: None releases exact counts (outside any epsilon); a number noises them.
    ``ledger_dir``: the party's state directory, whose lifetime ledger is charged.
    ``max_epsilon``: the node's lifetime cap (a charge past it is refused, nothing released);
    ``request``: the name the ledger records the spend under (default: a fresh one);
    ``min_count``: the node's own floor of rows per bin (a deployed node's
    ``--monitor-min-count``): a request's smaller ``min_count`` is raised to it.
    """

    bundle_dir: Path
    table: PartyTable
    epsilon: float | None = None
    ledger_dir: Path | None = None
    max_epsilon: float | None = None
    request: str | None = None
    min_count: int = 1


def _reference(bundle: Bundle) -> dict[str, Any]:
    stability = bundle.manifest.get("stability")
    if not isinstance(stability, dict) or "columns" not in stability:
        raise DataError(f"{bundle.directory}: this bundle keeps no bins frozen from its "
                        "training rows (trained before monitoring existed); train it again")
    return stability


def check_columns(bundle: Bundle, table: PartyTable) -> None:
    """Refuse a table missing a column of the bundle's, or holding one more (named)."""
    columns = bundle.manifest["columns"]
    trained = (*columns["numeric"], *columns["categorical"])
    missing = [c for c in trained if c not in table.frame.columns]
    extra = [c for c in table.features if c not in trained]
    if missing or extra:
        what = (f"column '{missing[0]}' of the model is missing" if missing
                else f"column '{extra[0]}' is not one the model was trained with")
        raise DataError(f"{table.source}: {what} (party '{table.party}' trained with "
                        f"{list(trained)})")


def _embedding_norms(bundle: Bundle, table: PartyTable) -> np.ndarray | None:
    """Return the exact norm of the party's embedding of each row, or None.

    None: the bundle has no norm bins, or its encoder needs more than the party's columns.
    """
    if EMBEDDING_NORM not in _reference(bundle) or bundle.manifest.get("blacklists"):
        return None
    x, _ = encode_table(bundle, table)
    m = model_settings(bundle.manifest)
    encoder = party_encoder(m, x.shape[1], tuple(bundle.manifest["columns"]["features"]))
    weights = {k.removeprefix("encoder."): v for k, v in bundle.weights.items()
               if k.startswith("encoder.")}
    try:
        encoder.load_state_dict(weights)
    except RuntimeError:
        return None
    return np.asarray(np.linalg.norm(embed(encoder, x), axis=1))


def party_indices(data: MonitoringInput, party: str, *, min_count: int
                  ) -> dict[str, ColumnIndex]:
    """Return each column's (and the embedding norm's) index on the party's own rows."""
    if min_count < 1:
        raise DataError(f"monitor.min_count must be at least 1, got {min_count}")
    min_count = max(min_count, data.min_count)  # the node's floor, never lowered by a request
    bundle = load_bundle(data.bundle_dir, party=party)
    reference = _reference(bundle)
    table = data.table
    if table.n_rows == 0:
        raise DataError(f"{table.source}: party '{party}' has no rows in this period")
    check_columns(bundle, table)
    values = {c: table.frame[c] for c in reference["columns"]}
    specs = dict(reference["columns"])
    norms = _embedding_norms(bundle, table)
    if norms is not None:
        values[EMBEDDING_NORM], specs[EMBEDDING_NORM] = norms, reference[EMBEDDING_NORM]
    if data.epsilon is None:
        return {c: column_index(values[c], specs[c], min_count) for c in specs}
    out = {c: _noisy_index(values[c], specs[c], min_count, data.epsilon, len(specs))
           for c in specs}
    if data.ledger_dir is not None:
        _charge(data.ledger_dir, data.epsilon, party, data.max_epsilon, data.request)
    return out


def _noisy_index(values: Any, spec: dict[str, Any], min_count: int, epsilon: float,
                 histograms: int) -> ColumnIndex:
    """Return the index of noised counts: half of ``epsilon`` on each side, then merged."""
    reference = laplace_counts(np.asarray(spec["counts"], dtype=np.int64), epsilon=epsilon / 2,
                               histograms=histograms)
    current = laplace_counts(bin_counts(values, spec), epsilon=epsilon / 2,
                             histograms=histograms)
    r, c = merge_small(reference, current, min_count)
    return ColumnIndex(psi(r, c), tuple(int(x) for x in r), tuple(int(x) for x in c))


def _charge(ledger_dir: Path, epsilon: float, party: str, cap: float | None = None,
            request: str | None = None) -> None:
    """Record the release in the party's lifetime ledger (one spend line per request).

    Past ``cap`` nothing is recorded and the request is refused (:class:`BudgetRefusal`),
    before any value leaves.
    """
    import os
    from datetime import UTC, datetime

    from federation.lifetime_budget import LifetimeBudget

    request = request or f"monitoring {datetime.now(UTC).isoformat()} {os.urandom(4).hex()}"
    recorded, total = LifetimeBudget.of(ledger_dir, cap).check_and_record(
        request, {"monitoring_epsilon": epsilon})
    if not recorded:
        raise BudgetRefusal(f"{party}: this monitoring request would take the node's lifetime "
                            f"epsilon to {total:.3f}, past its max-epsilon {cap:g}; refused, "
                            "nothing released")


def released(indices: dict[str, ColumnIndex]) -> dict[str, Any]:
    """Return what leaves the party: per column its index, rows counted and merged bins' counts."""
    out: dict[str, Any] = {}
    for column, value in indices.items():
        out[f"index.{column}"] = value.index
        out[f"rows.{column}"] = value.rows
        out[f"counts.{column}"] = list(value.current)
    return out
