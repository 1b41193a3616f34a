"""One lender's work for each message: statistics, a training round, an evaluation.

Plain torch and numpy: never imports flwr. The party's privacy state (noise multiplier and
accountant history) lives with the party, in its state file, across rounds and resumes.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from credit_data.errors import BudgetRefusal
from credit_data.federated_scaling import Schema, encode, local_moments
from credit_data.horizontal import LenderRows
from credit_data.saved_preprocessing import SHARED_SCHEMA, schema_json
from credit_data.split import SPLITS, TEST, TRAIN, VAL
from credit_data.summary import column_counts
from federation.model import shared_model
from federation.protocol import evaluation
from federation.settings import Fault, StrategyName
from federation.storage import write_atomic
from fl_client.settings import ClientSettings
from models.bundle import settings_json, write_bundle
from models.local_training import (
    DPRound,
    epsilon_after_round,
    gradient_steps,
    poisson_sample_rate,
    steps_per_epoch,
    train_round,
)
from models.metrics import ScoreSummary
from models.settings import ModelKind
from models.training import batch_for, predict_proba
from privacy.accounting import noise_multiplier_after, party_delta
from privacy.ledger import PrivacyLedgerError
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism
from privacy.summary import SummaryPlan, noisy_summary, summary_plan

SIGNFLIP_SCALE = 50.0
"""How much a ``signflip`` client scales its reversed update (a model-poisoning attack)."""



@dataclass
class PartyPrivacy:
    """A party's DP-SGD state: fixed once, then extended every round."""

    noise_multiplier: float
    sample_rate: float
    delta: float
    history: list[tuple[float, float, int]] = field(default_factory=list)
    selection_delta: float = 0.0
    prior: list[tuple[float, float, int]] = field(default_factory=list)
    """The releases before DP-SGD (the noisy summary); the history starts with them."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PartyPrivacy:
        raw = json.loads(text)
        raw["history"] = [tuple(h) for h in raw["history"]]
        raw["prior"] = [tuple(h) for h in raw.get("prior", [])]
        return cls(**raw)


@dataclass(frozen=True)
class Shard:
    """The party's rows encoded with the shared schema."""

    x: dict[int, np.ndarray]
    y: dict[int, np.ndarray]


def round_seed(seed: int, party: str, server_round: int) -> int:
    """Derive a seed for one party's round, the same in a resumed run.

    >>> round_seed(0, "lender-1", 3) == round_seed(0, "lender-1", 3)
    True
    """
    return zlib.crc32(f"{seed}/{party}/{server_round}".encode())


class LenderTask:
    """What a lender does with its own rows; built once per process and party."""

    def __init__(self, settings: ClientSettings, rows: LenderRows) -> None:
        self.settings = settings
        self.rows = rows
        self._shards: dict[str, Shard] = {}

    # statistics ---------------------------------------------------------------------------
    def moments(self, noise: NoiseSource) -> dict[str, Any]:
        """Aggregate statistics of the training rows, for the shared schema.

        Without DP: exact counts, sums and sums of squares, the categories seen and the count
        of defaults (so the model starts at the pooled default rate). Under DP (DP-SGD or
        central): the noisy summary of :mod:`privacy.summary` instead, its epsilon composed
        with the lender's DP-SGD (``"summary": true`` marks it).
        """
        train_labels = self.rows.y[self.rows.split == TRAIN]
        plan = self.summary_plan()
        if plan is None:
            out = local_moments(self.rows.rows(TRAIN), self.rows.numeric, self.rows.categorical)
            out["labels"] = [int(train_labels.sum()), int(len(train_labels))]
            return out
        # released once: kept on the lender's disk and sent again as it is (a resumed run, a
        # repeated request), never drawn a second time
        path = self._state_file()
        kept = path.with_suffix(".summary.json") if path is not None else None
        if kept is not None and kept.is_file():
            return dict(json.loads(kept.read_text()))
        counts = column_counts(self.rows.rows(TRAIN), self.rows.numeric, self.rows.categorical,
                               train_labels)
        out = noisy_summary(counts, plan=plan, noise=noise)
        out.update({"summary": True, "summary_noise_multiplier": plan.noise_multiplier,
                    "selection_delta": plan.selection_delta})
        if kept is not None:
            write_atomic(kept, json.dumps(out))
        return out

    def summary_plan(self) -> SummaryPlan | None:
        """Return the noisy summary's plan under DP (None without DP).

        It depends on the settings and the number of training rows alone.
        """
        p = self.settings.privacy
        if p.mechanism is PrivacyMechanism.off:
            return None
        n_train = int((self.rows.split == TRAIN).sum())
        delta = party_delta(delta=p.delta, n_rows=n_train)
        return summary_plan(target_epsilon=p.target_epsilon, share=p.summary_share, delta=delta)

    def shard(self, schema: Schema) -> Shard:
        """Encode the party's rows with the shared schema (cached per schema)."""
        key = schema.to_json()
        if key not in self._shards:
            x = encode(self.rows.frame, schema)
            self._shards[key] = Shard(
                x={s: x[self.rows.split == s] for s in (TRAIN, VAL, TEST)},
                y={s: self.rows.y[self.rows.split == s] for s in (TRAIN, VAL, TEST)})
        return self._shards[key]

    def model(self, schema: Schema, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """Build the shared model and load the global weights by name."""
        return shared_model(self.settings.model, schema, state)

    # privacy ------------------------------------------------------------------------------
    def _state_file(self) -> Path | None:
        if self.settings.state_dir is None:
            return None
        return Path(self.settings.state_dir) / f"{self.settings.party}.json"

    def load_privacy(self, saved: str | None, n_train: int) -> PartyPrivacy:
        """Return the party's privacy state: from memory, from its state file, or set up now.

        The noise multiplier is computed once, for every step of every planned round.
        """
        if saved is None and (path := self._state_file()) is not None and path.is_file():
            saved = path.read_text()
        if saved is not None:
            return PartyPrivacy.from_json(saved)
        p, f = self.settings.privacy, self.settings.federation
        sample_rate = poisson_sample_rate(n_train, batch_for(n_train, self.settings.train))
        delta = party_delta(delta=p.delta, n_rows=n_train)
        steps = f.rounds * f.local_epochs * steps_per_epoch(sample_rate)
        plan = self.summary_plan()
        prior = plan.history if plan is not None else ()
        sigma = noise_multiplier_after(target_epsilon=p.target_epsilon, delta=delta,
                                       sample_rate=sample_rate, steps=steps, prior=prior)
        return PartyPrivacy(sigma, sample_rate, delta, history=list(prior),
                            selection_delta=plan.selection_delta if plan is not None else 0.0,
                            prior=list(prior))

    def save_privacy(self, state: PartyPrivacy) -> None:
        """Persist the accountant state where the party keeps it."""
        if (path := self._state_file()) is not None:
            write_atomic(path, state.to_json())

    # training -----------------------------------------------------------------------------
    def train(self, schema: Schema, state: dict[str, torch.Tensor], server_round: int,
              privacy_state: PartyPrivacy | None, noise: NoiseSource | None = None,
              pooled_rows: int | None = None
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One round of local training from the global weights; returns weights and metrics.

        ``pooled_rows``: the union's training rows, as the server pooled them from the
        lenders' statistics (a scorecard spreads its penalty over them; default: its own).

        Raises
        ------
        BudgetRefusal
            The round would take the party's epsilon past ``privacy.max_epsilon``.
        """
        s, shard = self.settings, self.shard(schema)
        if s.fault is Fault.crash:
            raise RuntimeError(f"{s.party}: injected crash (federation.faults)")
        if s.fault is Fault.slow:
            time.sleep(s.federation.round_timeout + 5)
        model = self.model(schema, state)
        dp = self._round_dp(privacy_state, server_round)
        mu = s.federation.proximal_mu if s.federation.strategy is StrategyName.fedprox else 0.0
        secret = None
        if dp is not None:
            if noise is None:
                raise PrivacyLedgerError(f"{s.party}: DP-SGD needs the node's noise source")
            secret = (noise.fresh_torch("sampling", server_round),
                      noise.fresh_torch("dpsgd", server_round))
        rows = pooled_rows or len(shard.y[TRAIN])
        if s.model.kind is ModelKind.scorecard and dp is None:
            result = gradient_steps(model, shard.x[TRAIN], shard.y[TRAIN],
                                    steps=s.federation.local_epochs, lr=s.model.gradient_lr,
                                    penalty_rows=rows, proximal_mu=mu)
        else:
            result = train_round(model, shard.x[TRAIN], shard.y[TRAIN],
                                 epochs=s.federation.local_epochs,
                                 batch_size=batch_for(len(shard.y[TRAIN]), s.train),
                                 lr=s.train.lr, weight_decay=s.train.weight_decay,
                                 seed=round_seed(s.seed, s.party, server_round),
                                 proximal_mu=mu, dp=dp, secret=secret, penalty_rows=rows)
        new_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        new_state = self._apply_fault(state, new_state)
        n_train = len(shard.y[TRAIN])
        central = s.privacy.mechanism is PrivacyMechanism.central
        metrics: dict[str, Any] = {"num-examples": n_train, "weight": 1 if central else n_train,
                                   "steps": result.steps}
        if s.privacy.mechanism is PrivacyMechanism.off:  # under DP the loss stays at home
            metrics["train_loss"] = result.train_loss
        if privacy_state is not None:
            metrics.update(self._record_dp(privacy_state, result.history,
                                           float(result.epsilon or 0.0)))
        return new_state, metrics

    def _round_dp(self, privacy_state: PartyPrivacy | None, server_round: int) -> DPRound | None:
        """Plan the round's DP-SGD; refuse it when it would take the party past its cap."""
        if privacy_state is None:
            return None
        s = self.settings
        dp = DPRound(privacy_state.noise_multiplier, s.privacy.max_grad_norm,
                     privacy_state.sample_rate, privacy_state.delta, list(privacy_state.history))
        would_spend = epsilon_after_round(dp, s.federation.local_epochs)
        if would_spend > s.privacy.cap() * (1 + 1e-9):
            raise BudgetRefusal(
                f"{s.party} refuses round {server_round}: it would spend epsilon "
                f"{would_spend:.3f}, past its privacy.max_epsilon {s.privacy.cap():.3f}")
        return dp

    def _record_dp(self, privacy_state: PartyPrivacy, history: list[Any],
                   epsilon: float) -> dict[str, Any]:
        """Check the round trained as planned, keep its history; return its privacy metrics."""
        party, prior = self.settings.party, [tuple(h) for h in privacy_state.prior]
        if len(history) != len(prior) + 1 or history[:len(prior)] != prior:
            raise PrivacyLedgerError(f"{party}: accountant history {history} is "
                                     f"not the summary {prior} and one DP-SGD stretch")
        sigma, rate, steps = history[-1]
        if (sigma, rate) != (privacy_state.noise_multiplier, privacy_state.sample_rate):
            raise PrivacyLedgerError(f"{party}: trained at noise {sigma} and rate {rate}, "
                                     f"planned {privacy_state.noise_multiplier} and "
                                     f"{privacy_state.sample_rate}")
        privacy_state.history = history
        return {"epsilon": epsilon, "noise_multiplier": sigma, "sample_rate": rate,
                "delta": privacy_state.delta + privacy_state.selection_delta,
                "total_steps": steps, "summary_noise_multiplier": prior[0][0] if prior else 0.0,
                "selection_delta": privacy_state.selection_delta}

    def _apply_fault(self, start: dict[str, torch.Tensor],
                     trained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fault = self.settings.fault
        if fault is Fault.nonfinite:
            first = next(iter(trained))
            trained[first] = torch.full_like(trained[first], float("nan"))
        elif fault is Fault.shape:
            first = next(iter(trained))
            trained[first] = torch.cat([trained[first], trained[first][:1]])
        elif fault is Fault.signflip:
            trained = {k: start[k] - SIGNFLIP_SCALE * (trained[k] - start[k]) for k in trained}
        return trained

    # evaluation ---------------------------------------------------------------------------
    def report(self, schema: Schema, state: dict[str, torch.Tensor]
               ) -> tuple[dict[str, ScoreSummary], dict[str, int]]:
        """Return the lender's part of the run's report: a score summary and the rows per split.

        No training summary under DP: the training rows' scores are outside every guarantee.
        """
        shard = self.shard(schema)
        model = self.model(schema, state)
        private = self.settings.privacy.mechanism is not PrivacyMechanism.off
        summaries = {name: ScoreSummary.of(shard.y[split], predict_proba(model, shard.x[split]))
                     for split, name in SPLITS.items() if not (private and split == TRAIN)}
        return summaries, {name: int(len(shard.y[split])) for split, name in SPLITS.items()}

    def keep_bundle(self, schema: Schema, state: dict[str, torch.Tensor], model_id: str) -> None:
        """Keep the final global model and the shared schema as this lender's own bundle.

        ``<state dir>/<party>/model``: the weights every lender received, and the schema they
        encode with (aggregates of every lender: no row of any).
        """
        if not self.settings.state_dir:
            return
        write_bundle(Path(self.settings.state_dir) / self.settings.party / "model", manifest={
            "model_id": model_id, "party": self.settings.party, "role": "model",
            "mode": "horizontal",
            "config": {"seed": self.settings.seed, "model": settings_json(self.settings.model),
                       "privacy": {"mechanism": self.settings.privacy.mechanism.value}},
            "columns": {SHARED_SCHEMA: {"numeric": list(schema.numeric),
                                        "categorical": list(schema.categorical),
                                        "features": list(schema.feature_names)}}},
            weights=state, preprocessing={SHARED_SCHEMA: schema_json(schema)})

    def evaluate(self, schema: Schema, state: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Score the party's own test rows; only the AUC and their score summary leave.

        Returns the metrics and the summary's record (:func:`federation.protocol.evaluation`).
        """
        shard = self.shard(schema)
        scores = predict_proba(self.model(schema, state), shard.x[TEST])
        return evaluation(scores, shard.y[TEST])

