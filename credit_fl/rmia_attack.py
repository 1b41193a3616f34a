"""RMIA against a finished run's final model (``audit.reference_models=k``): ``audit.rmia``.

Research only: the runner holds every row and the final model's scores (simulation); nothing
here runs at a node. The attack (:mod:`privacy.rmia`) is offline RMIA with ``k`` reference
models trained by the attacker.

Threat model: the attacker knows the synthetic generator and draws its own sample from it (a
fresh population under a seed of its own, disjoint from the run's customers); it knows the
run's architecture and training settings, and queries the final model for its probability of
the true label of any record. Its reference models are the run's network (every party's
columns pooled: a split network computes the same function as the pooled one) trained without
privacy for ``audit.reference_epochs`` epochs (0: as many passes as the run made), each on its
own disjoint chunk of the sample as large as the run's training split, its columns
preprocessed by the attacker's own fit. The
candidates are the run's training rows (members, a public-seeded sample as many as the test
rows) and test rows (non-members). With one set of population records ``z`` and a fixed
``gamma`` the RMIA score is a non-decreasing function of ``Pr(x | theta) / Pr(x)``
(:mod:`privacy.rmia`), so the ROC is computed on that ratio and needs no ``z``. The
offline coefficient ``a`` is tuned by attacking reference model 0 with the others, on its own
chunk against a chunk none trained on.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from credit_data.design import Design, build_design
from credit_data.loading import load_population
from credit_data.settings import LABEL_HOLDER
from credit_data.split import SPLITS, TEST, TRAIN
from credit_fl.canary_attack import epochs_trained
from credit_fl.outcome import RunOutcome, training_parties
from fl_client.node_noise import simulated_split_keys
from models.factory import build_model
from models.local_training import train_round
from models.training import batch_for, predict_proba, start_at_base_rate
from privacy.rmia import label_probability, relative_ratio, rmia_figures, tune_offline_a

ATTACKER_STREAM = 35
"""Mixed with the run's seed into the attacker's own population seed (not the run's)."""

TUNING_ROWS = 5_000
"""Rows of reference model 0's chunk (and of the held-out chunk) used to tune ``a``."""

PILOT = 2_000
"""Customers of the attacker's first draw, which tells it how many to draw for its chunks."""

BOOTSTRAP = 200
"""Bootstrap resamples of the AUC's interval."""

THREAT_MODEL = (
    "offline RMIA on the final model's probability of the true label; reference models "
    "(the run's network, pooled columns, no DP) trained on disjoint chunks of a fresh sample "
    "from the same synthetic generator (an attacker who knows the generator)")


def attacker_seed(seed: int) -> int:
    """Return the attacker's own population seed (never the run's).

    >>> attacker_seed(0) != 0
    True
    """
    return int(np.random.SeedSequence([seed, ATTACKER_STREAM]).generate_state(1)[0])


def rmia_attack(outcome: RunOutcome) -> dict[str, Any]:
    """Train ``audit.reference_models`` reference models and run RMIA on ``outcome``'s model."""
    s = outcome.settings
    k = s.audit.reference_models
    epochs = s.audit.reference_epochs or epochs_trained(outcome)
    if outcome.labels is None or outcome.scores is None:
        raise ValueError("audit.reference_models: RMIA needs the final model's row scores, "
                         "which only a simulation holds")
    start = time.perf_counter()
    design, parties = _run_design(outcome)
    rng = np.random.default_rng(s.seed)  # the attacker's tool: public seed
    train_rows = design.rows(TRAIN)
    pick = np.sort(rng.permutation(train_rows)[: min(train_rows, design.rows(TEST))])
    candidates = {"member": (design.matrix(parties, TRAIN)[pick], outcome.labels["train"][pick]),
                  "test": (design.matrix(parties, TEST), outcome.labels["test"])}
    own_seed = attacker_seed(s.seed)
    x_own, y_own = _attacker_sample(outcome, design, parties, own_seed, (k + 1) * train_rows)
    chunk = min(train_rows, len(y_own) // (k + 1))
    order = rng.permutation(len(y_own))
    chunks = [order[j * chunk:(j + 1) * chunk] for j in range(k + 1)]  # the last: held out
    tune_in, tune_out = chunks[0][:TUNING_ROWS], chunks[k][:TUNING_ROWS]
    candidates |= {"tune_in": (x_own[tune_in], y_own[tune_in]),
                   "tune_out": (x_own[tune_out], y_own[tune_out])}
    reference = _reference_probabilities(outcome, design.widths(parties), x_own, y_own,
                                         chunks[:k], candidates, own_seed, epochs)
    offline_a = tune_offline_a(reference["tune_in"][:, 0], reference["tune_out"][:, 0],
                               reference["tune_in"][:, 1:], reference["tune_out"][:, 1:])
    target = {"member": label_probability(outcome.labels["train"][pick],
                                          outcome.scores["train"][pick]),
              "test": label_probability(outcome.labels["test"], outcome.scores["test"])}
    figures = rmia_figures(relative_ratio(target["member"], reference["member"], offline_a),
                           relative_ratio(target["test"], reference["test"], offline_a),
                           confidence=s.audit.confidence, resamples=BOOTSTRAP, seed=s.seed)
    return {"attack": "RMIA (offline)", "target": "final model", **figures,
            "reference_models": k, "reference_rows": chunk,
            "reference_epochs": epochs, "offline_a": offline_a, "gamma": 1.0,
            "population": "a disjoint sample from the same synthetic generator, drawn under "
                          "the attacker's own seed (an attacker who knows the generator)",
            "threat_model": THREAT_MODEL, "seconds": time.perf_counter() - start}


def _run_design(outcome: RunOutcome) -> tuple[Design, tuple[str, ...]]:
    """Rebuild the run's design and parties; refuse rows that differ from the run's."""
    s = outcome.settings
    assert outcome.labels is not None
    population = load_population(s.data, s.seed)
    parties = training_parties(s, population)
    design = build_design(population, s.data, s.seed,
                          simulated_split_keys(s, population.tables))
    for code, name in SPLITS.items():
        if not np.array_equal(design.labels(code), outcome.labels[name]):
            raise RuntimeError(f"audit.reference_models: the run's {name} rows differ from "
                               "the rows rebuilt for the attack")
    return design, parties


def _attacker_sample(outcome: RunOutcome, design: Design, parties: tuple[str, ...],
                     own_seed: int, needed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw the attacker's sample: the same generator, a seed of its own, its own preprocessing.

    A pilot draw tells it how many applicants a customer gives; it then draws a tenth more
    than the ``needed`` rows.
    """
    data = outcome.settings.data
    pilot = dataclasses.replace(data, max_rows=None, n_customers=PILOT)  # applicants per customer
    per_customer = load_population(pilot, own_seed).tables[LABEL_HOLDER].n_rows / PILOT
    own_data = dataclasses.replace(data, max_rows=None,
                                   n_customers=math.ceil(1.1 * needed / per_customer))
    own = build_design(load_population(own_data, own_seed), own_data, own_seed)
    if own.widths(parties) != design.widths(parties):
        raise RuntimeError(f"audit.reference_models: the attacker's sample has columns "
                           f"{own.widths(parties)}, the run's {design.widths(parties)}")
    return own.matrix(parties), own.y


def _reference_probabilities(outcome: RunOutcome, widths: dict[str, int], x_own: np.ndarray,
                             y_own: np.ndarray, chunks: list[np.ndarray],
                             candidates: dict[str, tuple[np.ndarray, np.ndarray]],
                             own_seed: int, epochs: int) -> dict[str, np.ndarray]:
    """Train one reference model per chunk; return each candidate set's label probabilities.

    One column per reference model, on one core as each simulated node trains.
    """
    s = outcome.settings
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as each simulated node trains
    try:
        probs: dict[str, list[np.ndarray]] = {key: [] for key in candidates}
        for j, rows in enumerate(chunks):
            torch.manual_seed(own_seed + j)
            model = build_model(s.model, widths)
            start_at_base_rate(model, float(y_own[rows].mean()))
            train_round(model, x_own[rows], y_own[rows], epochs=epochs,
                        batch_size=batch_for(len(rows), s.train), lr=s.train.lr,
                        weight_decay=s.train.weight_decay, seed=own_seed + j)
            model.eval()
            for key, (x, y) in candidates.items():
                probs[key].append(label_probability(y, predict_proba(model, x)))
    finally:
        torch.set_num_threads(threads)
    return {key: np.stack(v, axis=1) for key, v in probs.items()}
