"""The two reference points federation is measured against.

``centralized`` pools every party's preprocessed columns in one place (the upper bound);
``local`` trains on the lender's columns alone (what the lender can do without partners).
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from credit_data.design import Design, build_design
from credit_data.errors import ConfigError
from credit_data.loading import load_population
from credit_data.split import TEST, TRAIN, VAL
from credit_data.tables import Population
from credit_fl.logistic_reference import logistic_references
from credit_fl.one_bundle_scoring import MODEL_DIR, write_model_bundle
from credit_fl.outcome import (
    RunOutcome,
    oracle_auc,
    predictions_frame,
    report_positive_rates,
    split_report,
    training_parties,
    with_fraud_types,
)
from federation.run_settings import RunSettings
from fl_client.node_noise import simulated_split_keys
from models.factory import build_model
from models.metrics import ScoreSummary, report_metrics
from models.training import fit, predict_proba, seed_everything

log = logging.getLogger("credit_fl")


SPLIT_NAMES = {TRAIN: "train", VAL: "val", TEST: "test"}


def run_baseline(settings: RunSettings, run_dir: Path | None = None,
                 population: Population | None = None) -> RunOutcome:
    """Load data, train with early stopping, and score every split.

    With ``run_dir`` the model is kept there as a bundle (references and benchmarks keep none);
    ``population``: rows already loaded (else the settings' data config is loaded).
    """
    start = time.perf_counter()
    if population is None:
        population = load_population(settings.data, settings.seed)
    parties = training_parties(settings, population)
    design = _checked_design(settings, population)
    data_seconds = time.perf_counter() - start
    log.info("data %s: %s applicants (train %d, val %d, test %d), parties %s, %.1f s",
             settings.data.name, f"{len(design.ids):,}", design.rows(TRAIN), design.rows(VAL),
             design.rows(TEST), ", ".join(f"{p} ({design.blocks[p].width} cols)" for p in parties),
             data_seconds)

    seed_everything(settings.seed)
    model = build_model(settings.model, design.widths(parties),
                        {p: design.blocks[p].names for p in parties})
    result = fit(model, design.matrix(parties, TRAIN), design.labels(TRAIN),
                 design.matrix(parties, VAL), design.labels(VAL), settings.train, settings.seed,
                 log=log.info)
    scores = {name: predict_proba(model, design.matrix(parties, split))
              for split, name in SPLIT_NAMES.items()}
    y = {name: design.labels(split) for split, name in SPLIT_NAMES.items()}
    report = split_report(y, scores)
    metrics: dict[str, Any] = report_metrics(report)
    metrics.update({"best_epoch": result.best_epoch, "history": result.history})
    test = design.split == TEST
    model_id = uuid.uuid4().hex
    bundles = {} if run_dir is None else _keep_bundle(run_dir, settings, model, model_id,
                                                       design, parties, metrics)
    return RunOutcome(
        settings=settings, dataset=_dataset(settings, population, design, parties, report, y),
        model={"kind": settings.model.kind.value,
               "parameters": sum(p.numel() for p in model.parameters()),
               "inputs": design.widths(parties), "model_id": model_id,
               "bundles": bundles},
        metrics=with_fraud_types(metrics, population, design.ids[test], y["test"],
                                 scores["test"]),
        report=report,
        references=logistic_references(design, parties),
        predictions=predictions_frame(design.ids[test], y["test"], scores["test"]),
        data_seconds=data_seconds, train_seconds=result.seconds,
        train_rows_per_s=result.rows_per_second, labels=y, scores=scores)


def _checked_design(settings: RunSettings, population: Population) -> Design:
    """Build the design matrix; refuse a split without both classes, naming it."""
    design = build_design(population, settings.data, settings.seed,
                          simulated_split_keys(settings, population.tables))
    for split, name in SPLIT_NAMES.items():
        labels = design.labels(split)
        if len(labels) == 0 or labels.min() == labels.max():
            raise ConfigError(f"data.split: the {name} split holds {len(labels)} rows and needs "
                              "both classes; use more customers or larger fractions")
    return design


def _dataset(settings: RunSettings, population: Population, design: Design,
             parties: tuple[str, ...], report: dict[str, ScoreSummary],
             y: dict[str, np.ndarray]
             ) -> dict[str, Any]:
    """Return results.json's ``dataset``: rows per split, rates, what each party held."""
    tables = population.tables
    test = design.split == TEST
    return {
        "name": settings.data.name, "source": settings.data.source.value,
        "label": settings.data.label,
        "rows": {name: design.rows(split) for split, name in SPLIT_NAMES.items()},
        "positive_rate": report_positive_rates(report),
        "parties": {p: {"rows": tables[p].n_rows,
                        "applicants_known": int(design.blocks[p].present.sum()),
                        "source_columns": len(tables[p].features),
                        "model_columns": design.blocks[p].width, "used": p in parties}
                    for p in tables},
        "oracle_test_auc": oracle_auc(population, settings.data.label, design.ids[test],
                                      y["test"]),
    }


def _keep_bundle(run_dir: Path, settings: RunSettings, model: Any, model_id: str,
                 design: Design, parties: tuple[str, ...], metrics: dict[str, Any]
                 ) -> dict[str, str]:
    """Write the model as the run's one bundle; return results.json's ``bundles``."""
    write_model_bundle(run_dir, settings, model, model_id=model_id, parties=parties,
                       preprocessing={p: design.blocks[p].preprocessing or {}
                                      for p in parties},
                       metrics={"test_auc": metrics["test"]["auc"]}, privacy=None)
    return {"model": MODEL_DIR}
