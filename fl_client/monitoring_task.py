"""What a party computes, on its own rows, to watch a trained model. Never imports flwr.

Each party loads its own bundle (checked against its manifest's hashes) and its own table of
the period, and compares each of its columns, and the norm of its embedding of each row, with
the bins frozen from its training rows in its bundle (:mod:`credit_data.stability`). What it
returns, and all that leaves it, is per column: the stability index, the rows counted and the
merged bins' counts (each at least ``min_count`` rows on both sides).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from credit_data.errors import DataError
from credit_data.stability import ColumnIndex, column_index
from credit_data.tables import PartyTable
from fl_client.scoring_task import encode_table, model_settings
from models.bundle import Bundle, load_bundle
from models.networks import PartyEncoder
from models.split_training import embed

__all__ = ["EMBEDDING_NORM", "MonitoringInput", "party_indices", "released"]

EMBEDDING_NORM = "embedding_norm"
"""The name of the index of a party's embedding norm, next to its columns'."""


@dataclass(frozen=True)
class MonitoringInput:
    """One party's bundle directory and its table of the period."""

    bundle_dir: Path
    table: PartyTable


def _reference(bundle: Bundle) -> dict[str, Any]:
    stability = bundle.manifest.get("stability")
    if not isinstance(stability, dict) or "columns" not in stability:
        raise DataError(f"{bundle.directory}: this bundle keeps no bins frozen from its "
                        "training rows (trained before monitoring existed); train it again")
    return stability


def _check_columns(bundle: Bundle, table: PartyTable) -> None:
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
    encoder = PartyEncoder(x.shape[1], m.encoder_hidden, m.embedding_dim, m.dropout)
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
    bundle = load_bundle(data.bundle_dir, party=party)
    reference = _reference(bundle)
    table = data.table
    if table.n_rows == 0:
        raise DataError(f"{table.source}: party '{party}' has no rows in this period")
    _check_columns(bundle, table)
    out = {c: column_index(table.frame[c], spec, min_count)
           for c, spec in reference["columns"].items()}
    norms = _embedding_norms(bundle, table)
    if norms is not None:
        out[EMBEDDING_NORM] = column_index(norms, reference[EMBEDDING_NORM], min_count)
    return out


def released(indices: dict[str, ColumnIndex]) -> dict[str, Any]:
    """Return what leaves the party: per column its index, rows counted and merged bins' counts."""
    out: dict[str, Any] = {}
    for column, value in indices.items():
        out[f"index.{column}"] = value.index
        out[f"rows.{column}"] = value.rows
        out[f"counts.{column}"] = list(value.current)
    return out
