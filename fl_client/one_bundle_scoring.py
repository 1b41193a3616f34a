"""One-bundle scoring at a node: a horizontal lender scores its own applicants. No flwr here.

Every lender of a horizontal federation keeps the final global model and the shared schema
as its own bundle (``<state dir>/<lender>/model``,
:meth:`fl_client.horizontal_task.LenderTask.keep_bundle`). The runner's side of one-bundle
scoring (centralized, local, horizontal in simulation) is :mod:`credit_fl.one_bundle_scoring`.
Scoring needs no other party: each lender encodes its applicants with the shared schema and
scores them; the scores stay at the lender and the coordinator gets counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from credit_data.errors import DataError
from credit_data.saved_preprocessing import SHARED_SCHEMA, SavedPreprocessing
from credit_data.tables import PartyTable
from fl_client.scoring_task import model_settings
from fl_client.settings import ClientSettings
from models.bundle import load_bundle
from models.factory import build_model
from models.scorecard import scores_table
from models.training import predict_proba


def score_own_applicants(bundle_dir: Path | None, table: PartyTable, settings: ClientSettings
                         ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score a lender's applicants with its bundle; return ``scores.csv`` and its counts."""
    if bundle_dir is None:
        raise DataError(f"{settings.party}: no model bundle at this node")
    bundle = load_bundle(bundle_dir, party=settings.party)
    if SHARED_SCHEMA not in bundle.preprocessing:
        raise DataError(f"{bundle_dir}: not a horizontal model's bundle (no shared schema)")
    if table.n_rows == 0:
        raise DataError(f"{table.source}: no applicants to score")
    saved = SavedPreprocessing.from_json_dict(bundle.preprocessing[SHARED_SCHEMA])
    saved.check_columns(table.frame, table.numeric, table.categorical, table.source)
    encoded = saved.transform(table.frame, table.source)
    model = build_model(model_settings(bundle.manifest), {"lender": encoded.x.shape[1]})
    model.load_state_dict(bundle.weights)
    probability = predict_proba(model, encoded.x)
    scores = scores_table(table.frame.index.astype(str), probability, settings.scorecard)
    return scores, {"model_id": bundle.model_id, "rows": len(scores),
                    "unknown_categories": encoded.unknown_categories,
                    "grades": {str(g): int(n) for g, n in
                               scores["grade"].value_counts().sort_index().items()}}
