"""One-bundle models (centralized, local, horizontal): writing the bundle, scoring with it.

A centralized or local model is trained where its rows are pooled: its bundle
(``<run dir>/model``) holds the model and each pooled party's preprocessing. A horizontal
model is the global model with the shared schema, which the server and every lender hold.
Scoring reads the bundle (hashes checked, nothing unpickled), encodes the applicants as
training did and scores them.

This is the runner's side: it writes the bundles of the runs it trains and scores a
simulation's whole population (every party's table at hand) with any one-bundle model, adding
reason codes and who knew whom. A horizontal lender scoring its own applicants at its node is
:mod:`fl_client.one_bundle_scoring`, where how a bundle's model scores rows lives once
(:func:`~fl_client.one_bundle_scoring.loaded_model`,
:func:`~fl_client.one_bundle_scoring.score_with_schema`); both sides call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from credit_data.errors import DataError
from credit_data.horizontal import joined_columns
from credit_data.saved_preprocessing import SHARED_SCHEMA, SavedPreprocessing, schema_json
from credit_data.settings import LABEL_HOLDER
from credit_data.tables import Population
from federation.run_settings import MissingParty, RunSettings
from fl_client.one_bundle_scoring import loaded_model, score_with_schema
from models.binned_scorecard import ScorecardModel, model_tables, scorecard_reasons
from models.bundle import load_bundle, settings_json, write_bundle
from models.scorecard import points, scores_table
from models.training import predict_proba

MODEL_DIR = "model"
SHARED = SHARED_SCHEMA


def write_model_bundle(run_dir: Path, settings: RunSettings, model: torch.nn.Module, *,
                       model_id: str, parties: tuple[str, ...],
                       preprocessing: dict[str, dict[str, Any]], metrics: dict[str, Any],
                       privacy: dict[str, Any] | None, party: str = "coordinator") -> Path:
    """Write a one-bundle model to ``<run dir>/model``; return the directory."""
    manifest = {
        "model_id": model_id, "party": party, "role": "model",
        "mode": settings.federation.mode.value,
        "config": {"seed": settings.seed, "model": settings_json(settings.model),
                   "privacy": {"mechanism": settings.privacy.mechanism.value}},
        "parties": list(parties),
        "columns": {p: {"numeric": list(pre["numeric"]),
                        "categorical": list(pre["categorical"]),
                        "features": list(pre["feature_names"])}
                    for p, pre in preprocessing.items()},
        "scorecard": settings_json(settings.scorecard), "metrics": metrics, "privacy": privacy}
    if isinstance(model, ScorecardModel):
        manifest["scorecard_table"] = model_tables(model, settings.scorecard, preprocessing)
    return write_bundle(run_dir / MODEL_DIR, manifest=manifest, weights=model.state_dict(),
                        preprocessing=preprocessing)


def horizontal_preprocessing(schema: Any) -> dict[str, dict[str, Any]]:
    """Return a horizontal model's preprocessing: the shared schema."""
    return {SHARED: schema_json(schema)}


def _pooled_matrix(bundle_pre: dict[str, dict[str, Any]], parties: list[str],
                   population: Population, missing: MissingParty
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, dict[str, int]]]:
    ids = population.tables[LABEL_HOLDER].frame.index
    blocks, known, unknown = [], {}, {}
    for party in parties:
        saved = SavedPreprocessing.from_json_dict(bundle_pre[party])
        table = population.tables.get(party)
        if table is None and (party == LABEL_HOLDER or missing is MissingParty.error):
            raise DataError(f"{party}'s columns are part of this model but its table is absent; "
                            "name its file in data.parties, or set scoring.missing_party="
                            "unknown to score its applicants as unknown to it")
        values = np.zeros((len(ids), len(saved.feature_names)), dtype=np.float32)
        present = np.zeros(len(ids), dtype=bool)
        if table is not None:
            saved.check_columns(table.frame, table.numeric, table.categorical, table.source)
            position = table.frame.index.get_indexer(ids)
            present = position >= 0
            if present.any():
                encoded = saved.transform(table.frame.iloc[position[present]], table.source)
                values[present] = encoded.x
                unknown[party] = encoded.unknown_categories
        blocks.append(values)
        if party != LABEL_HOLDER:
            blocks.append(present[:, None].astype(np.float32))
            known[party] = present
    return np.concatenate(blocks, axis=1), known, unknown


def score_with_bundle(directory: Path, population: Population, settings: RunSettings
                      ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score the lender's applicants with a one-bundle model; return scores.csv and counts."""
    bundle = load_bundle(directory)
    m = bundle.manifest
    lender = population.tables[LABEL_HOLDER]
    parties = list(m["parties"])
    if SHARED in bundle.preprocessing:  # a horizontal model: as its lenders score
        frame, _, _ = joined_columns(population, tuple(parties))
        scored = score_with_schema(bundle, frame, lender.source, settings.model)
        x, probability, model = scored.x, scored.probability, scored.model
        unknown = {SHARED: scored.unknown_categories}
        known = {p: frame[f"{p}.present"].to_numpy() > 0 for p in parties if p != LABEL_HOLDER}
    else:
        x, known, unknown = _pooled_matrix(bundle.preprocessing, parties, population,
                                           settings.scoring.missing_party)
        widths = {p: len(bundle.preprocessing[p]["feature_names"]) + (p != LABEL_HOLDER)
                  for p in parties}
        names = {p: tuple(bundle.preprocessing[p]["feature_names"]) + (
            ("present",) if p != LABEL_HOLDER else ()) for p in parties}
        model = loaded_model(bundle, settings.model, widths, names)
        probability = predict_proba(model, x)
    score_points = points(probability, settings.scorecard)
    table = scores_table(lender.frame.index.astype(str), probability, settings.scorecard)
    if isinstance(model, ScorecardModel) and settings.explain.enabled:
        e = settings.explain
        reasons = scorecard_reasons(model, x, score_points, settings.scorecard,
                                    reasons=e.reasons, method=e.scorecard_reference,
                                    cutoff=e.cutoff, descriptions=e.descriptions)
        table = pd.concat([table, reasons], axis=1)
    for party, mask in known.items():
        table[f"known_{party}"] = mask.astype(int)
    return table, {"engine": "local", "model_id": bundle.model_id, "parties": parties,
                   "unknown_categories": {p: u for p, u in unknown.items() if u},
                   "known": {p: int(k.sum()) for p, k in known.items()}}
