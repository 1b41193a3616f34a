"""Vertical federation on a simulation engine (``engine=in_process`` or ``simulation``).

The lender, the bureau and the social platform are each a Flower node with its own table
(``federation.parties`` picks which take part); the ServerApp aligns them by private set
intersection and routes embeddings and gradients. The lender keeps its scores on its own disk
(``parties/lender/scores.npz`` in the run directory) and sends the server a score summary per
split, from which ``metrics`` come; in simulation the runner also reads the scores for
``predictions.csv`` and the audits.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from credit_data.blacklists import holder_lists
from credit_data.consent import TRAINING
from credit_data.design import build_design
from credit_data.errors import ConfigError
from credit_data.loading import load_population
from credit_data.memory import release_freed_memory
from credit_data.settings import LABEL_HOLDER, DataSettings, PartySource, Source
from credit_data.sources import write_population_tables
from credit_data.split import SPLITS, TEST, assign_split
from credit_data.tables import Population
from credit_fl.checks import check_vertical
from credit_fl.consent_results import consent_summary, lender_consented
from credit_fl.engines import open_engine
from credit_fl.logistic_reference import logistic_references
from credit_fl.outcome import (
    RunOutcome,
    oracle_auc,
    predictions_frame,
    report_positive_rates,
    training_parties,
    with_fraud_types,
)
from federation.consent_counts import run_summary
from federation.run_settings import RunSettings
from federation.settings import check_blacklists, check_federation
from fl_client.node_noise import (
    forget_keys,
    simulated_split_keys,
)
from fl_client.party_bundle import BUNDLE_DIR
from fl_client.settings import ClientSettings, client_settings
from fl_client.simulation_sources import VerticalSimulationSource
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import Recorder, VerticalOutcome
from models.metrics import report_metrics
from models.split_training import LenderModel
from privacy.accounting import check_delta

log = logging.getLogger("credit_fl")


OWN_TABLES_FROM = 200_000
"""Synthetic customers from which a Ray run writes each party's generated table for its worker
to read alone: below it, writing the tables and generating the population again after the run
cost more than the memory they save (a 20% longer sweep of small runs, measured)."""


def _own_tables(data: DataSettings, population: Population, parties: tuple[str, ...],
                directory: Path) -> dict[str, PartySource] | None:
    """Each party's own source, for a Ray worker to read its node's table alone.

    A party's file where the rows are files read whole (no ``data.max_rows`` sample); a
    Parquet file in ``directory`` of each generated table (synthetic data of at least
    :data:`OWN_TABLES_FROM` customers); else None (the workers build the population as
    before).
    """
    if data.source is Source.files and data.max_rows is None:
        return {p: data.parties[p] for p in parties if p in data.parties}
    if data.source is Source.synthetic and data.n_customers >= OWN_TABLES_FROM:
        return write_population_tables({p: population.tables[p] for p in parties}, directory,
                                       data.label, id_column=data.id_column)
    return None


def _check_settings(settings: RunSettings) -> None:
    """Refuse what the settings alone rule out, before any data is read or Ray starts.

    The holders' list files are read here too: a bad one is named at once.
    """
    check_vertical(settings)
    if settings.data.blacklists:
        _lists(settings, None)


def _check_parties(settings: RunSettings, parties: tuple[str, ...]) -> None:
    """Refuse what depends on which parties have data."""
    if len(parties) < 2:
        raise ConfigError(f"federation.parties: vertical federation needs the lender and at "
                          f"least one other party with data, got {list(parties)}")
    check_blacklists(settings.blacklists, tuple(settings.federation.parties))
    check_federation(settings.federation, len(parties))
    unknown = sorted(set(settings.privacy.party_max_epsilon) - set(parties))
    if unknown:
        raise ConfigError(f"privacy.party_max_epsilon names unknown parties {unknown}; the "
                          f"parties are {list(parties)}")


def _check_delta(settings: RunSettings, population: Population,
                 parties: tuple[str, ...]) -> None:
    """Refuse a delta of 1/n or more for the largest table a mechanism protects."""
    if settings.privacy.vertical_mechanisms():
        largest = max(parties, key=lambda p: population.tables[p].n_rows)
        check_delta(delta=settings.privacy.delta, rows=population.tables[largest].n_rows,
                    where=f"{largest}'s table")


def _label_leakage(party_dirs: dict[str, Path], labels: pd.Series
                   ) -> dict[str, dict[str, np.ndarray]] | None:
    """Join the attack scores each passive party kept with the true labels (simulation only)."""
    by_id = pd.Series(labels.to_numpy(dtype=np.float32), index=labels.index.astype(str))
    out = {}
    for party, directory in party_dirs.items():
        path = directory / "label_leakage.npz"
        if party == LABEL_HOLDER or not path.exists():
            continue
        kept = np.load(path)
        out[party] = {"labels": by_id.reindex(kept["ids"]).to_numpy(),
                      "norm": kept["norm"], "direction": kept["direction"]}
    return out or None


def _released(party_dirs: dict[str, Path], population: Population
              ) -> dict[str, dict[str, Any]] | None:
    """Join the final embeddings each passive party sent with its own columns (simulation only).

    The party's numeric source columns, on the rows it released, NaN where missing.
    """
    out: dict[str, dict[str, Any]] = {}
    for party, directory in party_dirs.items():
        path = directory / "released_embeddings.npz"
        if party == LABEL_HOLDER or not path.exists():
            continue
        kept = np.load(path)
        table = population.tables[party]
        frame = table.frame.loc[:, list(table.numeric)].reindex(kept["ids"].astype(str))
        out[party] = {"embeddings": kept["embeddings"],
                      "columns": {c: frame[c].to_numpy(dtype=np.float64) for c in frame}}
    return out or None


def party_settings(settings: RunSettings, parties: tuple[str, ...], state_dir: Path
                   ) -> dict[str, ClientSettings]:
    """Each node's settings: the parties', then the blacklist holders'.

    Simulated parties may run the label-leakage research attack and keep the embeddings they
    send for the inversion audit.
    """
    audit = settings.audit
    return {p: client_settings(settings, p, str(state_dir),
                               label_leakage_attack=audit.enabled and audit.label_leakage,
                               inversion_attack=audit.enabled and audit.inversion)
            for p in parties} | {h: client_settings(settings, h, str(state_dir))
                                 for h in settings.blacklists.holders}


def _lists(settings: RunSettings, population: Population | None) -> None:
    """Read (or draw) the holders' lists once before training: a bad file is named.

    Without the population (before any data is read) only the list files are read.
    """
    b = settings.blacklists
    files = settings.data.blacklists
    extra = sorted(set(files) - set(b.holders))
    if extra:
        raise ConfigError(f"data.blacklists names {extra}, which blacklists.holders does not "
                          f"list (holders: {list(b.holders)})")
    if b.holders:
        holder_lists(b.holders if population is not None else tuple(
            h for h in b.holders if h in files), files, settings.data.id_column, population,
            settings.seed)


def _population(settings: RunSettings, population: Population | None
                ) -> tuple[Population, tuple[str, ...]]:
    if population is None:
        population = load_population(settings.data, settings.seed)
    parties = training_parties(settings, population)
    _check_parties(settings, parties)
    _check_delta(settings, population, parties)
    _lists(settings, population)
    consent_summary(settings.data, population, parties, TRAINING)  # a bad file, named first
    return population, parties


def run_vertical(settings: RunSettings, run_dir: Path, recorder: Recorder | None = None,
                 population: Population | None = None) -> RunOutcome:
    """Run the vertical federation on ``settings.engine``; return what the writers need.

    ``population``: rows already loaded (else the nodes load the settings' data config).
    """
    _check_settings(settings)
    given = population
    with open_engine(settings.engine, settings.verbose) as engine:
        start = time.perf_counter()
        population, parties = engine.start_while(lambda: _population(settings, given))
        data_seconds = time.perf_counter() - start

        state_dir = run_dir / "parties"
        if settings.resume is not None:  # the nodes continue from their own kept state
            old = Path(settings.resume)
            if not (old / "parties").is_dir():
                raise ConfigError(f"resume={old}: no vertical run's node state there")
            if old.resolve() != run_dir.resolve():
                shutil.copytree(old / "parties", state_dir, dirs_exist_ok=True)
        clients = party_settings(settings, parties, state_dir)
        server = vertical_server_settings(settings, parties, run_dir)
        outcome = VerticalOutcome()
        with tempfile.TemporaryDirectory(prefix="tables-") as written:
            # each Ray worker reads its node's own table (else the engine shares the rows)
            sharing = given is not None or engine.same_process
            tables = (None if sharing
                      else _own_tables(settings.data, population, parties, Path(written)))
            held: Population | None = population
            if tables is not None:  # the runner reads the rows again after the run
                held = population = None  # type: ignore[assignment]
                release_freed_memory()  # not holding them through it
            train_start = time.perf_counter()
            shared = engine.share(held) if sharing else None
            engine.run(make_vertical_server_app(server, outcome, recorder),
                       make_vertical_client_app(VerticalSimulationSource(
                           clients, settings.data, settings.seed, shared, tables)),
                       len(clients))
            train_seconds = time.perf_counter() - train_start
    if outcome.error is not None:
        raise outcome.error  # the nodes' keys stay: the run may be resumed
    if outcome.stopped_after is None:
        forget_keys(state_dir)
    if population is None:
        population = load_population(settings.data, settings.seed)

    result = vertical_outcome(settings, parties, outcome, data_seconds, train_seconds)
    result = dataclasses.replace(result, dataset=result.dataset | {"consent": consent_summary(
        settings.data, population, parties, TRAINING)})
    return with_party_files(result, lender_consented(settings.data, population, TRAINING),
                            {p: state_dir / p for p in parties})


def vertical_outcome(settings: RunSettings, parties: tuple[str, ...], outcome: VerticalOutcome,
                     data_seconds: float, train_seconds: float) -> RunOutcome:
    """Build the run's outcome from what the server received, and nothing else.

    The lender's report (a score summary per split), its final metrics, the ledger, the
    alignment and the history: a deployed coordinator builds results.json from these alone.
    A simulation adds the row-level files it can also read (:func:`with_party_files`).
    """
    report, final = outcome.report, outcome.final
    private = outcome.ledger is not None
    try:
        metrics: dict[str, Any] = report_metrics(report, private)
    except ValueError as exc:  # a split of one class: no AUC to report
        raise ConfigError(f"data ({settings.data.name}): {exc}") from exc
    metrics["best_epoch"] = int(final["best_epoch"])
    metrics["history"] = [r for r in outcome.history if "epoch" in r]
    metrics["party_lift"] = {p: final["test_auc"] - final[f"test_auc_without_{p}"]
                             for p in parties if p != LABEL_HOLDER}
    rows = outcome.split_rows
    m = settings.model
    lender_width = int(final["inputs"])
    head = LenderModel(lender_width, tuple(p for p in parties if p != LABEL_HOLDER), m)
    f = settings.federation
    return RunOutcome(
        settings=settings, dataset=_parties_dataset(settings, parties, outcome),
        model={"kind": "split_mlp (vertical)", "embedding_dim": m.embedding_dim,
               "parameters": sum(p.numel() for p in head.parameters()),
               "inputs": {"lender": lender_width}, "model_id": outcome.model_id,
               "bundles": {p: f"parties/{p}/{BUNDLE_DIR}" for p in parties}},
        metrics=metrics, report=report,
        data_seconds=data_seconds, train_seconds=train_seconds,
        train_rows_per_s=rows["train"] * max(outcome.epochs, 1) * f.local_epochs
        / max(train_seconds, 1e-9),
        privacy=outcome.ledger.summary() if outcome.ledger is not None else None,
        federation=_federation(settings, parties, outcome))


def _parties_dataset(settings: RunSettings, parties: tuple[str, ...], outcome: VerticalOutcome
                     ) -> dict[str, Any]:
    """Return results.json's ``dataset`` from the lender's report and the nodes' counts."""
    return {
        "name": settings.data.name, "source": settings.data.source.value,
        "label": settings.data.label, "rows": outcome.split_rows,
        "positive_rate": report_positive_rates(outcome.report, outcome.ledger is not None),
        "parties": {p: {"rows": outcome.parties[p],
                        "applicants_known": (outcome.alignment[p]["intersection"]
                                             if p in outcome.alignment else outcome.parties[p]),
                        "source_columns": outcome.columns[p], "used": True}
                    for p in parties},
        "oracle_test_auc": None,  # the generator's truth is the simulation's alone
        "consent": run_summary(outcome.consent, parties, TRAINING),  # as the nodes sent them
    }


def _federation(settings: RunSettings, parties: tuple[str, ...], outcome: VerticalOutcome
                ) -> dict[str, Any]:
    """Return results.json's ``federation``: epochs, messages, alignment, blacklists."""
    f = settings.federation
    return {
        "engine": settings.engine.value,  # experiments.deploy sets "deployment"
        "parties": list(parties), "epochs": outcome.epochs,
        "stopped_after": outcome.stopped_after, "resumed_from": settings.resume,
        "exchanges_per_epoch": f.exchanges_per_epoch, "local_epochs": f.local_epochs,
        "local_steps": f.local_steps,
        "message_rounds": outcome.message_rounds,
        "seconds_by_message": outcome.seconds_by_kind,
        "compute_seconds": outcome.compute_seconds,
        "alignment": outcome.alignment, "communication": outcome.communication,
        "warnings": outcome.warnings,
        "blacklists": blacklists_summary(settings, outcome.blacklists),
        "alignment_seconds": next((r["seconds"] for r in outcome.history
                                   if r.get("step") == "alignment"), None),
    }


def blacklists_summary(settings: RunSettings, counts: dict[str, dict[str, Any]]
                       ) -> dict[str, Any] | None:
    """Return the holders' lookups as the server counted them (None without holders)."""
    b = settings.blacklists
    if not b.holders:
        return None
    return {"mode": b.mode.value, "max_queries": b.max_queries, "on_hit": b.on_hit.value,
            "holders": counts}


def with_party_files(outcome: RunOutcome, population: Population,
                     party_dirs: dict[str, Path]) -> RunOutcome:
    """Add what only a simulation can read: every party's own files and the generator's truth.

    The lender's row-level scores (for predictions.csv and the membership audit), the passive
    parties' label-leakage scores (joined with the true labels) and released embeddings (joined
    with their columns, for the inversion audit), the oracle AUC and the logistic-regression
    references on the same rows (every party's columns pooled).
    """
    settings = outcome.settings
    lender = population.tables[LABEL_HOLDER]
    assert lender.labels is not None
    ids = lender.frame.index.to_numpy(dtype=object)
    y_all = lender.labels[settings.data.label].to_numpy(dtype=np.float32)
    keys = simulated_split_keys(settings, population.tables)  # each party's own
    split = assign_split(lender.frame.index, keys[LABEL_HOLDER], settings.data.split)
    saved = np.load(party_dirs[LABEL_HOLDER] / "scores.npz")
    labels, scores = {}, {}
    for code, name in SPLITS.items():
        rows = saved[f"{name}_rows"]
        if not np.array_equal(rows, np.flatnonzero(split == code)):
            raise RuntimeError(f"the lender's {name} rows differ from the runner's")
        labels[name], scores[name] = y_all[rows], saved[f"{name}_scores"]
    test_ids = ids[split == TEST]
    dataset = outcome.dataset | {"oracle_test_auc": oracle_auc(
        population, settings.data.label, test_ids, labels["test"])}
    parties = tuple(outcome.federation["parties"]) if outcome.federation else (LABEL_HOLDER,)
    design = build_design(population, settings.data, settings.seed, keys)
    without = {p: saved[f"test_scores_without_{p}"] for p in parties
               if f"test_scores_without_{p}" in saved}
    metrics = with_fraud_types(outcome.metrics, population, test_ids, labels["test"],
                               scores["test"], without)
    return dataclasses.replace(
        outcome, dataset=dataset, labels=labels, scores=scores, metrics=metrics,
        predictions=predictions_frame(test_ids, labels["test"], scores["test"]),
        label_leakage=_label_leakage(party_dirs, lender.labels[settings.data.label]),
        inversion=_released(party_dirs, population),
        references=logistic_references(design, parties))
