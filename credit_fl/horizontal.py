"""Horizontal federation on a simulation engine (``engine=in_process`` or ``simulation``).

K lenders each hold their own applicants (lender and bureau columns); Flower's simulation
engine runs the same ServerApp and ClientApp that a deployment runs. The lenders only ever send
AUCs, test score summaries and, on the final model, score summaries per split (``metrics`` come
from these). In simulation alone the final model is also scored on the union of the lenders'
rows, for ``predictions.csv`` and the membership audit.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from credit_data.design import build_design
from credit_data.errors import ConfigError, FederationError
from credit_data.federated_scaling import Schema, encode
from credit_data.horizontal import LenderRows
from credit_data.partition import lender_names
from credit_data.settings import LABEL_HOLDER, PARTIES
from credit_data.split import SPLITS, TRAIN
from credit_data.tables import Population
from credit_fl.checks import check_horizontal
from credit_fl.engines import open_engine
from credit_fl.logistic_reference import logistic_references
from credit_fl.one_bundle_scoring import MODEL_DIR, horizontal_preprocessing, write_model_bundle
from credit_fl.outcome import (
    RunOutcome,
    oracle_auc,
    predictions_frame,
    report_positive_rates,
)
from federation.model import shared_model
from federation.run_settings import RunSettings
from fl_client.horizontal_app import make_client_app
from fl_client.node_noise import forget_keys, simulated_split_keys
from fl_client.settings import ClientSettings, client_settings
from fl_client.simulation_sources import SimulationSource
from fl_client.simulation_sources import lender_rows as lender_rows
from fl_server.app_factory import make_server_app
from fl_server.horizontal_rounds import FederationOutcome
from fl_server.settings import horizontal_server_settings
from models.metrics import ScoreSummary, report_metrics
from models.training import predict_proba
from privacy.accounting import check_delta
from privacy.settings import PrivacyMechanism

log = logging.getLogger("credit_fl")


class UnionOfLenders:
    """The union of the lenders' rows, encoded once per schema (simulation only)."""

    def __init__(self, rows: dict[str, LenderRows], settings: RunSettings) -> None:
        self.rows = rows
        self.settings = settings
        self._encoded: tuple[str, dict[str, np.ndarray]] | None = None
        self.labels = {name: np.concatenate([r.y[r.split == split] for r in rows.values()])
                       for split, name in SPLITS.items()}
        self.ids = {name: np.concatenate([r.ids[r.split == split] for r in rows.values()])
                    for split, name in SPLITS.items()}

    def _x(self, schema: Schema) -> dict[str, np.ndarray]:
        key = schema.to_json()
        if self._encoded is None or self._encoded[0] != key:
            self._encoded = (key, {
                name: np.concatenate([encode(r.rows(split), schema) for r in self.rows.values()])
                for split, name in SPLITS.items()})
        return self._encoded[1]

    def scores(self, state: dict[str, torch.Tensor], schema: Schema,
               splits: tuple[str, ...] = tuple(SPLITS.values())) -> dict[str, np.ndarray]:
        """Scores of the global model on the named splits."""
        model = shared_model(self.settings.model, schema, state)
        x = self._x(schema)
        return {name: predict_proba(model, x[name]) for name in splits}


def lender_settings(settings: RunSettings, names: tuple[str, ...], state_dir: Path
                    ) -> dict[str, ClientSettings]:
    """Each lender's node settings (simulated faults included, for tests)."""
    f = settings.federation
    return {name: client_settings(settings, name, str(state_dir), fault=f.faults.get(name))
            for name in names}


def run_horizontal(settings: RunSettings, run_dir: Path,
                   population: Population | None = None) -> RunOutcome:
    """Run the federation on ``settings.engine``; return what the writers need.

    ``population``: rows already loaded (else the settings' data config is loaded).
    """
    names = lender_names(settings.partition.n_lenders)
    check_horizontal(settings)
    with open_engine(settings.engine, settings.verbose) as engine:
        return _run_horizontal(settings, run_dir, names, engine, population)


def _run_horizontal(settings: RunSettings, run_dir: Path, names: tuple[str, ...],
                    engine: Any, given: Population | None) -> RunOutcome:
    start = time.perf_counter()
    population, parties, rows = engine.start_while(lambda: lender_rows(settings, given))
    data_seconds = time.perf_counter() - start
    if settings.privacy.mechanism is not PrivacyMechanism.off:
        train = {name: int((r.split == TRAIN).sum()) for name, r in rows.items()}
        if settings.privacy.mechanism is PrivacyMechanism.central:
            check_delta(delta=settings.privacy.delta, rows=sum(train.values()),
                        where="all lenders' training rows")
        else:
            largest = max(train, key=lambda name: train[name])
            check_delta(delta=settings.privacy.delta, rows=train[largest],
                        where=f"{largest}'s training rows")

    state_dir = run_dir / "parties"
    if settings.resume is not None:
        old = Path(settings.resume)
        if (old / "parties").is_dir() and old.resolve() != run_dir.resolve():
            shutil.copytree(old / "parties", state_dir, dirs_exist_ok=True)
    clients = lender_settings(settings, names, state_dir)
    any_rows = next(iter(rows.values()))
    server = horizontal_server_settings(settings, len(names), any_rows.numeric,
                                        any_rows.categorical, run_dir)
    union = UnionOfLenders(rows, settings)

    def evaluate_global(state: dict[str, torch.Tensor], schema: Schema) -> dict[str, float]:
        scores = union.scores(state, schema, ("val",))
        return {"val_auc": float(roc_auc_score(union.labels["val"], scores["val"]))}

    outcome = FederationOutcome()
    train_start = time.perf_counter()
    engine.run(make_server_app(server, outcome, evaluate_global),
               make_client_app(SimulationSource(clients, engine.share(rows))), len(names))
    train_seconds = time.perf_counter() - train_start
    if outcome.error is not None:
        raise outcome.error  # the nodes' keys stay: the run may be resumed
    if outcome.stopped_after is None:
        forget_keys(state_dir)
    run = keep_bundle(horizontal_outcome(settings, outcome, data_seconds, train_seconds),
                      outcome, run_dir, parties)
    return with_union(run, population, parties, union, outcome)


def keep_bundle(run: RunOutcome, outcome: FederationOutcome, run_dir: Path,
                parties: tuple[str, ...]) -> RunOutcome:
    """Write the global model and the shared schema as the run's bundle (``<run dir>/model``).

    Each lender that reported on the final model keeps the same bundle on its own disk
    (``parties/<lender>/model``; in a deployment, under its node's state directory).
    """
    assert outcome.state is not None and outcome.schema is not None
    model_id = outcome.model_id or uuid.uuid4().hex
    settings = run.settings
    write_model_bundle(run_dir, settings, shared_model(settings.model, outcome.schema,
                                                       outcome.state),
                       model_id=model_id, parties=parties,
                       preprocessing=horizontal_preprocessing(outcome.schema),
                       metrics={"test_auc": run.metrics["test"]["auc"]}, privacy=run.privacy)
    lenders = {name: f"parties/{name}/{MODEL_DIR}" for name in sorted(outcome.reports)}
    return dataclasses.replace(run, model=run.model | {"model_id": model_id,
                                                       "bundles": {"model": MODEL_DIR, **lenders}})


def horizontal_outcome(settings: RunSettings, outcome: FederationOutcome,
                       data_seconds: float, train_seconds: float) -> RunOutcome:
    """Build the run's outcome from what the server received, and nothing else.

    The lenders' reports on the final model (score summaries per split, pooled here), the
    ledger, the exclusions and the history: a deployed coordinator has only these. A
    simulation adds the row-level scores of the union of the lenders' rows
    (:func:`with_union`).
    """
    assert outcome.state is not None and outcome.schema is not None
    if not outcome.reports:
        raise FederationError("no lender sent its report on the final model")
    f = settings.federation
    private = outcome.ledger is not None
    names = sorted(outcome.reports)
    report = _pooled_report(outcome, names)
    rows = {name: sum(outcome.reports[n][1][name] for n in names) for name in SPLITS.values()}
    try:
        metrics: dict[str, Any] = report_metrics(report, private)
    except ValueError as exc:  # a split of one class: no AUC to report
        raise ConfigError(f"data ({settings.data.name}): {exc}") from exc
    metrics["history"] = outcome.history
    metrics["pooled_lender_auc"] = outcome.history[-1]["pooled_auc"]
    model = shared_model(settings.model, outcome.schema)
    rounds_done = outcome.completed_rounds
    return RunOutcome(
        settings=settings, dataset=_lenders_dataset(settings, outcome, names, rows, report),
        model={"kind": settings.model.kind.value,
               "parameters": sum(p.numel() for p in model.parameters()),
               "inputs": {"lender": len(outcome.schema.feature_names)}},
        metrics=metrics, report=report,
        data_seconds=data_seconds, train_seconds=train_seconds,
        train_rows_per_s=rows["train"] * rounds_done * f.local_epochs / max(train_seconds, 1e-9),
        privacy=outcome.ledger.summary() if outcome.ledger is not None else None,
        federation=_federation(settings, outcome, names))


def _pooled_report(outcome: FederationOutcome, names: list[str]) -> dict[str, ScoreSummary]:
    """Pool the lenders' score summaries per split, in the lenders' order (not the replies')."""
    report: dict[str, ScoreSummary] = {}
    for name in names:
        summaries, _ = outcome.reports[name]
        for split, summary in summaries.items():
            report[split] = report[split] + summary if split in report else summary
    return report


def _lenders_dataset(settings: RunSettings, outcome: FederationOutcome, names: list[str],
                     rows: dict[str, int], report: dict[str, ScoreSummary]) -> dict[str, Any]:
    """Return results.json's ``dataset`` from the lenders' reports (counts, rates)."""
    private = outcome.ledger is not None
    return {
        "name": settings.data.name, "source": settings.data.source.value,
        "label": settings.data.label, "rows": rows,
        "positive_rate": report_positive_rates(report, private),
        # a lender's default rate covers its training rows: left out (null) under DP
        "parties": {n: {"rows": sum(outcome.reports[n][1].values()),
                        "train_rows": outcome.reports[n][1]["train"],
                        "default_rate": None if private else (
                            outcome.reports[n][0]["train"].defaults
                            / max(outcome.reports[n][0]["train"].rows, 1)),
                        "used": True}
                    for n in names},
        "columns": [p for p in PARTIES if p in settings.federation.parties],
        "source_rows": sum(rows.values()),
        "oracle_test_auc": None,  # the generator's truth is the simulation's alone
    }


def _federation(settings: RunSettings, outcome: FederationOutcome, names: list[str]
                ) -> dict[str, Any]:
    """Return results.json's ``federation``: strategy, rounds, exclusions, partition."""
    f = settings.federation
    return {
        "engine": settings.engine.value,  # experiments.deploy sets "deployment"
        "strategy": f.strategy.value, "clients": len(names), "rounds": f.rounds,
        "completed_rounds": outcome.completed_rounds, "stopped_after": outcome.stopped_after,
        "local_epochs": f.local_epochs,
        "partition": {"scheme": settings.partition.scheme.value,
                      "alpha": settings.partition.alpha},
        "excluded": [e.__dict__ for e in outcome.exclusions],
        "lender_evaluation": outcome.lender_evaluation,
        "resumed_from": settings.resume,
    }


def with_union(run: RunOutcome, population: Population, parties: tuple[str, ...],
               union: UnionOfLenders, outcome: FederationOutcome) -> RunOutcome:
    """Add what only a simulation holds: the union's row-level scores and the generator's truth.

    The final model's scores of every lender's rows feed predictions.csv and the membership
    audit; the metrics stay those of the lenders' reports. The logistic-regression references
    pool the lenders' rows (the same rows and columns).
    """
    assert outcome.state is not None and outcome.schema is not None
    scores = union.scores(outcome.state, outcome.schema)
    labels, ids = union.labels, union.ids
    dataset = run.dataset | {
        "columns": list(parties),
        "oracle_test_auc": oracle_auc(population, run.settings.data.label, ids["test"],
                                      labels["test"])}
    held = list(union.rows.values())  # the applicants' split: each lender's own
    split = pd.Series(np.concatenate([r.split for r in held]),
                      index=np.concatenate([r.ids for r in held])).reindex(
        population.tables[LABEL_HOLDER].frame.index).to_numpy()
    design = build_design(population, run.settings.data, run.settings.seed,
                          simulated_split_keys(run.settings, population.tables), split=split)
    return dataclasses.replace(
        run, dataset=dataset, labels=labels, scores=scores,
        predictions=predictions_frame(ids["test"], labels["test"], scores["test"]),
        references=logistic_references(design, parties))

