"""One-bundle scoring at a node: a horizontal lender scores its own applicants. No flwr here.

Every lender of a horizontal federation keeps the final global model and the shared schema
as its own bundle (``<state dir>/<lender>/model``,
:meth:`fl_client.horizontal_task.LenderTask.keep_bundle`). Scoring needs no other party: each
lender encodes its applicants with the shared schema and scores them; the scores stay at the
lender and the coordinator gets counts (:func:`score_own_applicants`).

How a one-bundle model scores rows lives here once, for the node and the runner alike:
:func:`loaded_model` (the bundle's network, its weights loaded) and
:func:`score_with_schema` (rows encoded with a shared schema, then scored). The runner's
module, :mod:`credit_fl.one_bundle_scoring`, does another job with them: it writes the
bundles of the runs it trains, and scores a simulation's whole population with any one-bundle
model (centralized and local ones pool several parties' preprocessing), adding reason codes
and who knew whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from credit_data.errors import DataError
from credit_data.saved_preprocessing import SHARED_SCHEMA, SavedPreprocessing
from credit_data.tables import PartyTable
from fl_client.scoring_task import model_settings
from fl_client.settings import ClientSettings
from models.bundle import Bundle, load_bundle
from models.factory import build_model
from models.scorecard import scores_table
from models.settings import ModelSettings
from models.training import predict_proba


@dataclass(frozen=True)
class SchemaScores:
    """Rows scored with a shared schema's bundle: the encoded rows, the model, what it said."""

    x: np.ndarray
    probability: np.ndarray
    model: nn.Module
    unknown_categories: Any


def loaded_model(bundle: Bundle, settings: ModelSettings, widths: dict[str, int],
                 names: dict[str, tuple[str, ...]]) -> nn.Module:
    """Return the bundle's network for inputs of ``widths`` (named ``names``), weights loaded.

    The names matter to a scorecard, which bins each column as training named it.
    """
    model = build_model(settings, widths, names)
    model.load_state_dict(bundle.weights)
    return model


def score_with_schema(bundle: Bundle, frame: pd.DataFrame, source: str,
                      settings: ModelSettings) -> SchemaScores:
    """Encode ``frame`` with the bundle's shared schema and score it with the bundle's model.

    ``source`` names the rows in an error; ``settings``: the architecture trained.
    """
    saved = SavedPreprocessing.from_json_dict(bundle.preprocessing[SHARED_SCHEMA])
    encoded = saved.transform(frame, source)
    model = loaded_model(bundle, settings, {"lender": encoded.x.shape[1]},
                         {"lender": tuple(saved.feature_names)})
    return SchemaScores(encoded.x, predict_proba(model, encoded.x), model,
                        encoded.unknown_categories)


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
    scored = score_with_schema(bundle, table.frame, table.source, model_settings(bundle.manifest))
    scores = scores_table(table.frame.index.astype(str), scored.probability, settings.scorecard)
    return scores, {"model_id": bundle.model_id, "rows": len(scores),
                    "unknown_categories": scored.unknown_categories,
                    "grades": {str(g): int(n) for g, n in
                               scores["grade"].value_counts().sort_index().items()}}
