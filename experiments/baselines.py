"""The two reference points federation is measured against.

``centralized`` pools every party's preprocessed columns in one place (the upper bound);
``local`` trains on the lender's columns alone (what the lender can do without partners).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from credit_data.design import Design, build_design
from credit_data.errors import ConfigError
from credit_data.loading import load_population
from credit_data.settings import LABEL_HOLDER, PARTIES
from credit_data.split import TEST, TRAIN, VAL
from credit_data.tables import Population
from experiments.settings import Mode, RunSettings
from models.factory import build_model
from models.metrics import population_stability_index, score_metrics
from models.training import FitResult, fit, predict_proba, seed_everything

log = logging.getLogger("credit_fl")


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run hands to the writers of results.json, predictions.csv and report.md."""

    settings: RunSettings
    parties: tuple[str, ...]
    population: Population
    design: Design
    fit: FitResult
    scores: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]]
    n_parameters: int
    oracle_test_auc: float | None
    data_seconds: float


def training_parties(settings: RunSettings, population: Population) -> tuple[str, ...]:
    """Return the parties whose columns the model sees, in a fixed order."""
    named = settings.federation.parties
    for party in named:
        if party not in PARTIES:
            raise ConfigError(f"federation.parties: unknown party '{party}'; "
                              f"expected some of {PARTIES}")
    if LABEL_HOLDER not in named:
        raise ConfigError(f"federation.parties must include '{LABEL_HOLDER}', which holds labels")
    if settings.federation.mode is Mode.local:
        return (LABEL_HOLDER,)
    return tuple(p for p in PARTIES if p in named and p in population.tables)


def run_baseline(settings: RunSettings) -> RunOutcome:
    """Load data, train with early stopping, and score every split."""
    start = time.perf_counter()
    population = load_population(settings.data, settings.seed)
    parties = training_parties(settings, population)
    design = build_design(population, settings.data, settings.seed)
    for split, name in ((TRAIN, "train"), (VAL, "val"), (TEST, "test")):
        labels = design.labels(split)
        if len(labels) == 0 or labels.min() == labels.max():
            raise ConfigError(f"data.split: the {name} split holds {len(labels)} rows and needs "
                              "both classes; use more customers or larger fractions")
    data_seconds = time.perf_counter() - start
    log.info("data %s: %s applicants (train %d, val %d, test %d), parties %s, %.1f s",
             settings.data.name, f"{len(design.ids):,}", design.rows(TRAIN), design.rows(VAL),
             design.rows(TEST), ", ".join(f"{p} ({design.blocks[p].width} cols)" for p in parties),
             data_seconds)

    seed_everything(settings.seed)
    model = build_model(settings.model, design.widths(parties))
    result = fit(model, design.matrix(parties, TRAIN), design.labels(TRAIN),
                 design.matrix(parties, VAL), design.labels(VAL), settings.train, settings.seed,
                 log=log.info)
    scores = {name: predict_proba(model, design.matrix(parties, split))
              for split, name in ((TRAIN, "train"), (VAL, "val"), (TEST, "test"))}
    metrics = {name: score_metrics(design.labels(split), scores[name])
               for split, name in ((VAL, "val"), (TEST, "test"))}
    metrics["test"]["psi"] = population_stability_index(scores["train"], scores["test"])

    oracle = None
    if population.truth is not None:
        truth = population.truth[settings.data.label].to_numpy()[design.split == TEST]
        oracle = float(roc_auc_score(design.labels(TEST), truth))
    return RunOutcome(settings=settings, parties=parties, population=population, design=design,
                      fit=result, scores=scores, metrics=metrics,
                      n_parameters=sum(p.numel() for p in model.parameters()),
                      oracle_test_auc=oracle, data_seconds=data_seconds)
