"""The one-run canary audit of a finished run (``audit.canaries=m``): ``audit.one_run``.

The audit trains a twin of the lender's training (:mod:`models.canary_twin`) on the lender's
training rows and ``m`` canaries, with the mechanism the run's ledger records for the lender:
DP-SGD's noise multiplier, sample rate, steps and clipping norm (vertical: ``lender/dpsgd``;
horizontal: ``lender-0``), randomized response's flip probability (``lender/label_dp``), or
plain training for as many epochs as the run trained. The canaries never enter the model the
run ships; the twin is dropped once scored. The coins are drawn at the audit from a fresh
:class:`~privacy.randomness.NoiseSource` (``os.urandom``), as the lender's node draws its own.

The twin's rows are the lender's columns (vertical, local) or every column the run's model
sees (centralized, horizontal), preprocessed as the centralized design does; in horizontal
runs a public-seeded sample of the training rows as large as one lender's share. The rows do
not change the mechanism's epsilon (it depends on the noise, rate, steps and delta alone).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from credit_data.design import build_design, party_block
from credit_data.loading import load_population
from credit_data.settings import LABEL_HOLDER
from credit_data.split import TRAIN, assign_split
from credit_fl.outcome import RunOutcome, training_parties
from federation.run_settings import RunSettings
from federation.settings import Mode
from fl_client.node_noise import simulated_split_keys
from models.canary_twin import TwinPlan, canary_scores, draw_canaries, train_twin
from models.factory import build_model
from models.split_training import LenderModel
from models.training import batch_for
from privacy.accounting import party_delta
from privacy.one_run_canaries import audit_guesses
from privacy.randomness import NoiseSource

THREAT_MODEL = (
    "white-box gradient canaries read from the final model: each canary is the zero row plus a "
    "logit offset of its own that no real row touches, in or out of the twin's training by a "
    "secret coin (os.urandom); the auditor reads the offsets from the trained twin's weights, "
    "never its iterates")


@dataclass(frozen=True)
class TwinData:
    """The twin's rows and untrained network."""

    x: np.ndarray
    y: np.ndarray
    base: nn.Module


def twin_data(settings: RunSettings) -> TwinData:
    """Rebuild the lender's training rows (its split key fixes them) and its network."""
    population = load_population(settings.data, settings.seed)
    mode = settings.federation.mode
    torch.manual_seed(settings.seed)  # the network's initialisation: public, as in the run
    if mode in (Mode.vertical, Mode.local):
        lender = population.tables[LABEL_HOLDER]
        assert lender.labels is not None
        key = simulated_split_keys(settings, (LABEL_HOLDER,))[LABEL_HOLDER]  # the lender's own
        train = assign_split(lender.frame.index, key, settings.data.split) == TRAIN
        block = party_block(lender, lender.frame.index, settings.data, settings.seed, key)
        y = lender.labels[settings.data.label].to_numpy(dtype=np.float32)[train]
        base = (LenderModel(block.width, (), settings.model) if mode is Mode.vertical
                else build_model(settings.model, {LABEL_HOLDER: block.width}))
        return TwinData(block.values[train], y, base)
    design = build_design(population, settings.data, settings.seed,
                          simulated_split_keys(settings, population.tables))
    parties = training_parties(settings, population)
    x, y = design.matrix(parties, TRAIN), design.labels(TRAIN)
    if mode is Mode.horizontal:  # one lender's share of the training rows
        keep = np.random.default_rng(settings.seed).permutation(len(y))
        keep = np.sort(keep[: max(len(y) // settings.partition.n_lenders, 1)])
        x, y = x[keep], y[keep]
    return TwinData(x, y, build_model(settings.model, design.widths(parties)))


def twin_plan(outcome: RunOutcome, rows: int) -> tuple[TwinPlan, float | None]:
    """Return the twin's plan from the run's ledger, and the label-DP epsilon (None: off)."""
    s = outcome.settings
    parties = (outcome.privacy or {}).get("parties", {})
    vertical = s.federation.mode is Mode.vertical
    dpsgd = parties.get("lender/dpsgd" if vertical else "lender-0")
    if dpsgd is not None and dpsgd.get("mechanism") != "dpsgd":
        dpsgd = None
    label = parties.get("lender/label_dp") if vertical else None
    plain = TwinPlan(epochs=epochs_trained(outcome), batch_size=batch_for(rows, s.train),
                     lr=s.train.lr, weight_decay=s.train.weight_decay,
                     delta=party_delta(delta=None, n_rows=rows),
                     label_flip=float(label["flip_probability"]) if label else 0.0)
    label_epsilon = float(label["epsilon"]) if label else None
    if dpsgd is None:
        return plain, label_epsilon
    per_epoch = int(round(1.0 / float(dpsgd["sample_rate"])))
    return dataclasses.replace(
        plain, epochs=max(1, math.ceil(int(dpsgd["steps"]) / per_epoch)),
        noise_multiplier=float(dpsgd["noise_multiplier"]), max_grad_norm=s.privacy.max_grad_norm,
        sample_rate=float(dpsgd["sample_rate"]),
        delta=float(dpsgd["delta"]) - float(dpsgd.get("selection_delta") or 0.0)), label_epsilon


def epochs_trained(outcome: RunOutcome) -> int:
    """Return the passes over its rows the run's plain training made (the twin's too)."""
    s = outcome.settings
    if s.federation.mode is Mode.horizontal:
        rounds = (outcome.federation or {}).get("completed_rounds", s.federation.rounds)
        return max(1, int(rounds) * s.federation.local_epochs)
    epochs = len(outcome.metrics.get("history") or []) or s.train.epochs
    if s.federation.mode is Mode.vertical:
        epochs *= s.federation.local_epochs
    return max(1, epochs)


def one_run_attack(outcome: RunOutcome, noise: NoiseSource | None = None) -> dict[str, Any]:
    """Train the canary twin of ``outcome``'s lender and audit it (``audit.one_run``).

    ``noise`` (the coins, the twin's sampling, noise and label flips) defaults to a fresh key
    from ``os.urandom``.
    """
    s = outcome.settings
    data = twin_data(s)
    plan, label_epsilon = twin_plan(outcome, len(data.y))
    noise = NoiseSource.fresh() if noise is None else noise
    canaries = draw_canaries(s.audit.canaries, label_audit=label_epsilon is not None,
                             noise=noise)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as each simulated node trains (two contend when busy)
    start = time.perf_counter()
    try:
        twin = train_twin(data.x, data.y, canaries, plan, base=data.base, seed=s.seed,
                          noise=noise)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    member, label = canary_scores(twin, canaries)
    accounted = plan.accounted_epsilon()
    out = audit_guesses(member, canaries.member_bits, delta=plan.delta,
                        confidence=s.audit.confidence)
    out |= {"accounted_epsilon": None if math.isinf(accounted) else accounted,
            "bound_holds": out["epsilon_lower_bound"] <= accounted,
            "party": {Mode.horizontal: "lender-0", Mode.centralized: "pooled"}.get(
                s.federation.mode, LABEL_HOLDER),
            "mechanism": "dpsgd" if plan.noise_multiplier is not None else "none",
            "threat_model": THREAT_MODEL, "ships_canaries": False,
            "twin": {"rows": len(data.y), "epochs": plan.epochs, "steps": plan.steps,
                     "noise_multiplier": plan.noise_multiplier, "sample_rate": plan.sample_rate,
                     "max_grad_norm": plan.max_grad_norm if plan.steps else None,
                     "label_flip": plan.label_flip, "seconds": seconds}}
    if label_epsilon is not None:
        labels = audit_guesses(label, canaries.label_bits, delta=0.0,
                               confidence=s.audit.confidence)
        out["label"] = labels | {"accounted_epsilon": label_epsilon,
                                 "bound_holds": labels["epsilon_lower_bound"] <= label_epsilon}
    return out
