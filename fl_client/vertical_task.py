"""What each party of a vertical federation does at its own node. Never imports flwr.

A node's mutable state (model weights, optimizer moments, snapshots, its privacy spend, the
alignment) lives in :class:`NodeState`, which the ClientApp keeps on the node's own disk
between messages (:mod:`fl_client.node_store`), not in the state Flower ships with each
message. Rows are addressed by their place in the intersection, in
the lender's order, which both ends know after alignment.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from credit_data.errors import AlignmentError, BudgetRefusal
from credit_data.settings import LABEL_HOLDER
from credit_data.split import SPLITS, TEST, TRAIN, VAL
from credit_data.vertical import NodeRows, assign_chunk
from federation.alignment import (
    LenderAlignment,
    PartyAlignment,
    SetupCache,
    channel_auth,
    open_key,
    seal_key,
    transcript,
)
from federation.alignment_cache import AnswerCache, FoundCache, RequestCache
from federation.blacklist import request_size
from federation.protocol import auc_of_scores
from federation.query_ledger import Purpose, QuerySpend
from federation.sealed import keep_key
from fl_client.queries import charge
from fl_client.settings import ClientSettings
from models.binned_scorecard import decay_groups
from models.factory import party_encoder
from models.metrics import ScoreSummary
from models.settings import ModelKind
from models.split_training import (
    DPPlan,
    InnerProductLoss,
    LenderModel,
    calibrate,
    chunk_sample_rate,
    embed,
    embedding_gradients,
    fit_calibration,
    fit_chunk,
    randomized_response,
)
from models.training import EarlyStopping, batch_for, predict_proba, start_at_base_rate
from privacy.accounting import (
    embedding_sensitivity,
    epsilon_of,
    flip_probability,
    noise_multiplier_after,
    party_delta,
)
from privacy.attacks import leakage_scores
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism

_ARRAYS = ("positions", "splits", "leakage")  # numpy fields, stored as tensors
_MASKS = ("masks", "listed", "resend")  # dicts of numpy arrays, stored as tensors

log = logging.getLogger("credit_fl")


@dataclass
class NodeState:
    """Everything a node keeps between messages."""

    keys: dict[str, bytes] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    listed: dict[str, np.ndarray] = field(default_factory=dict)  # lender: on each holder's list
    positions: np.ndarray | None = None
    splits: np.ndarray | None = None  # passive: the lender's split of each aligned customer
    model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    version: dict[int, int] = field(default_factory=dict)
    dp_steps: dict[int, int] = field(default_factory=dict)  # epoch: most steps of a chunk
    releases: list[int] = field(default_factory=list)
    best_epoch: int = 0
    best_auc: float = float("nan")
    watched: list[float] = field(default_factory=list)  # early stopping's criterion per epoch
    watched_best: float = float("-inf")
    history: list[dict[str, float]] = field(default_factory=list)
    leakage: np.ndarray | None = None
    last: list[int] = field(default_factory=list)  # the (epoch, chunk) last exchanged
    step_log: list[list[int]] = field(default_factory=list)  # (epoch, steps) per chunk trained
    abandoned_steps: int = 0  # DP-SGD steps of work a resumed run went back over
    abandoned_releases: int = 0  # embedding releases of such work
    resend: dict[str, np.ndarray] = field(default_factory=dict)  # lender: an epoch's last
    resend_at: list[int] = field(default_factory=list)  # gradients, and their exchange

    def carry_spend_from(self, later: NodeState) -> None:
        """Go back to this (earlier) state, keeping what ``later`` spent and released since.

        The DP-SGD steps a resumed run does again were done once already and their effect
        left the node: they stay counted, and the repeat composes on top (per record: in each
        epoch a record sits in one chunk, so an epoch's repeated chunks add at most their
        largest step count). Embedding releases are kept as they were, with the encoder each
        came from: a repeated exchange sends the same noisy values again (a release drawn
        anew from another encoder with the same noise would reveal their difference).
        """
        repeated: dict[int, int] = {}
        for epoch, steps in later.step_log[len(self.step_log):]:
            repeated[epoch] = max(repeated.get(epoch, 0), steps)
        self.abandoned_steps = later.abandoned_steps + sum(repeated.values())
        self.abandoned_releases = later.abandoned_releases
        for epoch in later.releases:
            if epoch not in self.releases:
                self.releases.append(epoch)
                self.snapshots[epoch] = later.snapshots[epoch]

    def to_bytes(self) -> bytes:
        """Serialize (the node's own state; never sent): tensors and plain values only."""
        buffer = io.BytesIO()
        raw = dict(self.__dict__)
        for name in _MASKS:
            raw[name] = {k: torch.from_numpy(np.ascontiguousarray(v))
                         for k, v in raw[name].items()}
        for name in _ARRAYS:
            if raw[name] is not None:
                raw[name] = torch.from_numpy(np.ascontiguousarray(raw[name]))
        torch.save(raw, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> NodeState:
        """Restore a state saved by :meth:`to_bytes` (a fresh one for ``None``).

        Loading runs no code (``weights_only``): a state file holds tensors and plain values.
        """
        state = cls()
        if blob:
            raw = torch.load(io.BytesIO(blob), weights_only=True)
            for name in _MASKS:
                raw[name] = {k: v.numpy() for k, v in raw.get(name, {}).items()}
            for name in _ARRAYS:
                if raw.get(name) is not None:
                    raw[name] = raw[name].numpy()
            state.__dict__.update(raw)
        return state


def flipped_labels(y_train: np.ndarray, label_epsilon: float, noise: NoiseSource) -> np.ndarray:
    """Return the lender's training labels after randomized response, from its secret key.

    The same flips every time the node needs them (paid once); nobody without the key can
    rebuild them.
    """
    return randomized_response(y_train, flip_probability(epsilon=label_epsilon),
                               noise.numpy("label flips"))


def release_epochs(epochs: int, releases: int) -> list[int]:
    """Epochs (1-based) at which a party releases fresh noisy embeddings.

    >>> release_epochs(30, 3)
    [1, 11, 21]
    >>> release_epochs(2, 5)
    [1, 2]
    """
    n = min(releases, epochs)
    return sorted({1 + (i * epochs) // n for i in range(n)})


def _chunk_key(*parts: object) -> int:
    """Return a public key for the order of plain (non-private) batches: the seed fixes it."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


class _Node:
    def __init__(self, settings: ClientSettings, rows: NodeRows, noise: NoiseSource) -> None:
        self.settings, self.rows, self.noise = settings, rows, noise
        p = settings.privacy
        self.dpsgd = p.mechanism is PrivacyMechanism.dpsgd
        self.k = settings.federation.exchanges_per_epoch
        self.passes = settings.federation.local_epochs
        self.local_steps = settings.federation.local_steps
        self.private = bool(settings.privacy.vertical_mechanisms())
        self.blinded, self.answered = 0, 0  # PSI values computed in this run (the rest cached)
        self.looked_up: dict[str, int] = {}

    def _psi_cache(self) -> Path | None:
        """Where the node keeps its PSI work between runs (None: nothing kept)."""
        return Path(self.settings.psi_cache) if self.settings.psi_cache else None

    def _dp_plan(self, n_train: int) -> DPPlan | None:
        if not self.dpsgd:
            return None
        t = self.settings.train
        q = chunk_sample_rate(n_train, self.k, batch_for(n_train, t))
        steps = t.epochs * self.passes * int(round(1 / q))  # batches: each composes its
        sigma = noise_multiplier_after(  # local steps into one Gaussian (see DPPlan)
            target_epsilon=self.settings.privacy.target_epsilon, delta=self._delta(n_train),
            sample_rate=q, steps=steps, prior=self.rows.summary_history)
        return DPPlan(sigma * math.sqrt(self.local_steps), self.settings.privacy.max_grad_norm,
                      q, self.local_steps)

    def _delta(self, n_train: int) -> float:
        p = self.settings.privacy
        return party_delta(delta=p.delta, n_rows=n_train)

    def _dp_spend(self, state: NodeState, n_train: int,
                  extra_steps: int = 0) -> dict[str, Any]:
        """Return DP-SGD's spend over the steps that ran (plus ``extra_steps`` planned).

        It composes after the party's noisy summary.
        """
        plan = self._dp_plan(n_train)
        assert plan is not None
        steps = sum(state.dp_steps.values()) + state.abandoned_steps + extra_steps
        history = [*self.rows.summary_history] + (
            [(plan.batch_multiplier, plan.sample_rate, steps)] if steps else [])
        delta = self._delta(n_train)
        return {"epsilon": epsilon_of(history, delta=delta),
                "delta": delta + self.rows.summary_selection_delta,
                "noise_multiplier": plan.batch_multiplier,
                "sample_rate": plan.sample_rate, "steps": steps,
                "history": [list(h) for h in history],
                "selection_delta": self.rows.summary_selection_delta,
                "summary_noise_multiplier": self._summary_multiplier()}

    def _summary_multiplier(self) -> float:
        return float(self.rows.summary_history[0][0]) if self.rows.summary_history else 0.0

    def _guard_dpsgd(self, state: NodeState, n_train: int, epoch: int) -> None:
        """Refuse, before it runs, a DP-SGD chunk whose epoch would spend past the node's cap."""
        if self.dpsgd and epoch not in state.dp_steps:
            plan = self._dp_plan(n_train)
            assert plan is not None
            would = self._dp_spend(state, n_train,
                                   self.passes * plan.steps_per_pass)["epsilon"]
            self._guard(would, "DP-SGD", self.settings.privacy.target_epsilon)

    def _count_steps(self, state: NodeState, epoch: int, steps: int) -> None:
        """Each record sits in one chunk per epoch: it composes over its chunk's steps."""
        state.dp_steps[epoch] = max(state.dp_steps.get(epoch, 0), steps)
        state.step_log.append([epoch, steps])

    def _generators(self, *purpose: object) -> tuple[torch.Generator, torch.Generator | None]:
        """Batching and noise generators: secret under DP-SGD, public (the seed) without."""
        if self.dpsgd:  # drawn anew at every call: a repeated step gets independent noise
            return (self.noise.fresh_torch("sampling", *purpose),
                    self.noise.fresh_torch("dpsgd", *purpose))
        return torch.Generator().manual_seed(_chunk_key(self.settings.seed, *purpose)), None

    def _guard(self, epsilon: float, what: str, target: float) -> None:
        p = self.settings.privacy
        cap = target if p.max_epsilon is None else p.max_epsilon
        if epsilon > cap + 1e-9:
            raise BudgetRefusal(f"{self.settings.party}: {what} would spend epsilon "
                                f"{epsilon:.3f}, past this node's max_epsilon {cap}")

    def _optimizer(self, module: nn.Module, state: NodeState, rows: int
                   ) -> torch.optim.Optimizer:
        """Adam, its state carried over exchanges; a scorecard's bins decay by ``l2 / rows``.

        ``rows``: the training rows the party's loss averages (:func:`decay_groups`).
        """
        t = self.settings.train
        optimizer = torch.optim.Adam(decay_groups(module, t.weight_decay, rows), lr=t.lr)
        if state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
        return optimizer


class PassiveNode(_Node):
    """A party without labels: it answers the alignment and trains its encoder."""

    def __init__(self, settings: ClientSettings, rows: NodeRows, noise: NoiseSource) -> None:
        super().__init__(settings, rows, noise)
        p = settings.privacy
        self.noisy = p.embedding_epsilon is not None
        self.schedule = (release_epochs(settings.train.epochs, p.embedding_releases)
                         if self.noisy else [])

    # alignment ---------------------------------------------------------------------------
    def setup(self, state: NodeState, lender_rows: int) -> tuple[bytes, bool]:
        """Blind and compress the own IDs for PSI (or take them from the cache); keep the key.

        Returns the setup message and whether it came from the node's cache.
        """
        cache = SetupCache(Path(self.settings.psi_cache) if self.settings.psi_cache else None,
                           self.settings.party)
        state.keys["psi"], setup, cached = cache.setup(self.rows.ids, lender_rows)
        state.keys["setup"] = transcript(setup)  # what the channel key will be signed with
        return setup, cached

    def answer(self, state: NodeState, request: bytes, lender_key: bytes
               ) -> tuple[bytes, bytes, QuerySpend]:
        """Answer the lender's PSI request; keep the agreed channel key.

        The answer tells the lender which of the IDs it asks this node knows: every ID of the
        request is charged to the node's query ledger first (the training cap), and a request
        past it is refused unanswered. Returns the response, the signed key and the charge.
        """
        if "channel" in state.keys:  # each answer tells whether a set of IDs is known here
            raise AlignmentError(f"{self.settings.party}: the lender's PSI request was already "
                                 "answered in this run; a second one is refused")
        auth = channel_auth(self.settings.party, self.settings.channel_keys)
        side = PartyAlignment(self.settings.party, self.rows.ids, psi_key=state.keys["psi"])
        lender_public = open_key(auth, lender_key, LABEL_HOLDER, transcript(request))
        spend = charge(self.settings, request_size(request), Purpose.training)  # the lender's
        response, public = side.answer(request, lender_public,
                                       answers=AnswerCache(self._psi_cache(), self.settings.party))
        self.answered = side.answered  # values blinded now (the others answered in earlier runs)
        log.info("alignment: %s answered %d of the lender's %d blinded IDs anew (the others "
                 "from its cache)", self.settings.party, self.answered, request_size(request))
        state.keys["channel"] = side.channel_key
        keep_key(state.keys, LABEL_HOLDER, side.channel_key)  # the exchanges' key
        del state.keys["psi"]  # the party's long-lived key stays in its cache alone
        return response, seal_key(auth, public, transcript(state.keys["setup"], response)), spend

    def receive(self, state: NodeState, sealed: bytes) -> int:
        """Open the intersection the lender sealed; keep its positions in the own table.

        With each shared customer comes the lender's split of it (the lender's key decides it;
        this party's own split picked only the rows its preprocessing was fitted on).
        """
        side = PartyAlignment(self.settings.party, self.rows.ids, key=state.keys["channel"])
        state.positions, state.splits = side.receive_split(sealed)
        return len(state.positions)

    # training ----------------------------------------------------------------------------
    def _split_positions(self, state: NodeState, split: int) -> np.ndarray:
        assert state.positions is not None and state.splits is not None, "alignment first"
        return state.positions[state.splits == split]

    def _chunk_positions(self, state: NodeState, epoch: int, chunk: int) -> np.ndarray:
        train = self._split_positions(state, TRAIN)
        ids = [self.rows.ids[i] for i in train]
        return train[assign_chunk(ids, self.settings.seed, epoch, self.k) == chunk]

    def _encoder(self, weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
        if weights is None:
            torch.manual_seed(_chunk_key(self.settings.seed, self.settings.party, "init"))
        encoder = party_encoder(self.settings.model, self.rows.width, self.rows.names)
        if weights is not None:
            encoder.load_state_dict(weights)
        return encoder

    def _release_multiplier(self) -> float:
        """Noise per unit of sensitivity for every scheduled release, after the summary."""
        p = self.settings.privacy
        assert p.embedding_epsilon is not None
        return noise_multiplier_after(target_epsilon=p.embedding_epsilon,
                                      delta=self._embedding_delta(), sample_rate=1.0,
                                      steps=len(self.schedule), prior=self.rows.summary_history)

    def _noise_std(self) -> float:
        # a record's value is released once per scheduled release; adding or removing the
        # record (the relation every mechanism is accounted under) moves its row by the clip
        return self._release_multiplier() * embedding_sensitivity(
            clip=self.settings.privacy.embedding_clip)

    def _embedding_delta(self) -> float:
        p = self.settings.privacy
        return party_delta(delta=p.delta, n_rows=len(self.rows.ids))

    def _release(self, state: NodeState, encoder_version: int, positions: np.ndarray,
                 split: int, encoder: nn.Module) -> np.ndarray:
        """Embeddings of ``positions``; with embedding noise, the noisy values of a release."""
        if not self.noisy:
            return embed(encoder, self.rows.x[positions])
        p = self.settings.privacy
        full = self._split_positions(state, split)
        # the same secret stream for a release every time: its noisy values are drawn once
        values = embed(encoder, self.rows.x[full], clip=p.embedding_clip,
                       noise_std=self._noise_std(),
                       rng=self.noise.numpy("release", encoder_version, split))
        where = {int(pos): i for i, pos in enumerate(full)}
        return values[[where[int(pos)] for pos in positions]]

    def exchange(self, state: NodeState, *, epoch: int, chunk: int,
                 grads: np.ndarray | None, prev: tuple[int, int] | None,
                 val_epoch: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, float]]:
        """Apply the lender's gradients for the previous chunk, then embed the next chunk.

        With ``val_epoch`` the encoder as it stands after that epoch is kept, and the
        validation rows are embedded too. ``chunk < 0`` asks for no training rows.
        """
        encoder = self._encoder(state.model)
        n_train = len(self._split_positions(state, TRAIN))
        optimizer = self._optimizer(encoder, state, n_train)
        metrics: dict[str, float] = {}
        if grads is not None and prev is not None:
            metrics.update(self._apply_gradients(state, encoder, optimizer, n_train, grads, prev))
        if self.dpsgd:
            spend = self._dp_spend(state, n_train)
            metrics.update({f"dpsgd_{k}": v for k, v in spend.items()
                            if not isinstance(v, list)})
        state.model, state.optimizer = encoder.state_dict(), optimizer.state_dict()
        train, val = self._embed_chunk(state, encoder, epoch=epoch, chunk=chunk,
                                       val_epoch=val_epoch)
        if self.noisy:
            metrics.update(self.embedding_spend(state))
        return train, val, metrics

    def _apply_gradients(self, state: NodeState, encoder: nn.Module,
                         optimizer: torch.optim.Optimizer, n_train: int, grads: np.ndarray,
                         prev: tuple[int, int]) -> dict[str, float]:
        """Fit the encoder to the lender's gradients for chunk ``prev``; return its metrics."""
        rows = self._chunk_positions(state, *prev)
        if len(rows) != len(grads):
            raise ValueError(f"{self.settings.party}: {len(grads)} gradients for a chunk of "
                             f"{len(rows)} rows")
        self._guard_dpsgd(state, n_train, prev[0])
        dp = self._dp_plan(n_train)
        sampling, noise = self._generators(self.settings.party, *prev)
        loss, steps = fit_chunk(encoder, self._chunk_optimizer(encoder, optimizer, n_train,
                                                               len(rows), dp),
                                self.rows.x[rows], grads,
                                InnerProductLoss(),
                                batch_size=batch_for(n_train, self.settings.train),
                                passes=self.passes, generator=sampling, dp=dp, noise=noise,
                                local_steps=self.local_steps)
        if self.settings.label_leakage_attack:
            self._keep_leakage(state, rows, grads)
        if dp is not None:
            self._count_steps(state, prev[0], steps)
        # a per-step statistic of the rows: not sent under DP
        return {} if self.private else {"surrogate_loss": loss}

    def _embed_chunk(self, state: NodeState, encoder: nn.Module, *, epoch: int, chunk: int,
                     val_epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Release the embeddings of chunk ``chunk`` (none when negative) and of validation.

        The validation rows only with ``val_epoch``; each from the encoder version it may use.
        """
        if self.noisy and chunk >= 0 and epoch in self.schedule and epoch not in state.releases:
            state.releases.append(epoch)
            state.snapshots[epoch] = {k: v.clone() for k, v in encoder.state_dict().items()}
        version = max(state.releases) if self.noisy else epoch
        source = self._encoder(state.snapshots[version]) if self.noisy else encoder
        val = None
        if val_epoch:
            if not self.noisy:
                state.snapshots[val_epoch] = {k: v.clone() for k, v in
                                              encoder.state_dict().items()}
                state.version[val_epoch] = val_epoch
            else:
                state.version[val_epoch] = max(r for r in state.releases if r <= val_epoch)
            src = self._encoder(state.snapshots[state.version[val_epoch]])
            val = self._release(state, state.version[val_epoch],
                                self._split_positions(state, VAL), VAL, src)
        train = np.zeros((0, self.settings.model.embedding_dim), np.float32)
        if chunk >= 0:
            train = self._release(state, version, self._chunk_positions(state, epoch, chunk),
                                  TRAIN, source)
        return train, val

    def _chunk_optimizer(self, encoder: nn.Module, optimizer: torch.optim.Optimizer,
                         n_train: int, chunk_rows: int, dp: DPPlan | None
                         ) -> torch.optim.Optimizer:
        """Return what steps the encoder against the lender's gradients of one chunk.

        Adam (``optimizer``), but a scorecard's encoder without DP-SGD takes plain gradient
        steps that add up to one step of ``model.passive_lr`` on the chunk's loss. Its loss
        (:class:`InnerProductLoss`) is linear in its bin weights while the lender's gradients
        stay fixed, so Adam, whose steps are about ``train.lr`` whatever the gradient's size,
        moved each weight by about ``train.lr`` times its steps per exchange (42 on the
        Taiwan data's 21,000 training rows) in its gradient's sign: it overshot, and the
        training loss and validation AUC swung from epoch to epoch (docs/explanations.md).
        """
        if self.settings.model.kind is not ModelKind.scorecard or dp is not None:
            return optimizer
        batches = -(-chunk_rows // batch_for(n_train, self.settings.train))
        steps = max(1, self.passes * self.local_steps * batches)
        return torch.optim.SGD(decay_groups(encoder, 0.0, n_train),
                               lr=self.settings.model.passive_lr / steps)

    def _keep_leakage(self, state: NodeState, rows: np.ndarray, grads: np.ndarray) -> None:
        """Keep the label-free attack scores of each row's first gradient (the audit)."""
        if state.leakage is None:
            state.leakage = np.full((2, len(self.rows.ids)), np.nan, dtype=np.float32)
        norm, direction = leakage_scores(grads)
        fresh = np.isnan(state.leakage[0, rows])
        state.leakage[0, rows[fresh]] = norm[fresh]
        state.leakage[1, rows[fresh]] = direction[fresh]

    def write_leakage(self, state: NodeState, out_dir: Path) -> None:
        """Write the kept attack scores to this party's own disk, keyed by its own IDs."""
        if state.leakage is None:
            return
        kept = np.flatnonzero(~np.isnan(state.leakage[0]))
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / "label_leakage.npz",
                 ids=np.array([str(self.rows.ids[i]) for i in kept]),
                 norm=state.leakage[0, kept], direction=state.leakage[1, kept])

    def write_released(self, state: NodeState, released: dict[str, np.ndarray],
                       out_dir: Path) -> None:
        """Write the final embeddings this node sends the lender, keyed by its own IDs.

        ``released`` is :meth:`final`'s answer, the very values the lender receives (the
        noisy ones under embedding noise). For the inversion audit, in simulation only.
        """
        ids = [str(self.rows.ids[i]) for split in SPLITS
               for i in self._split_positions(state, split)]
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / "released_embeddings.npz", ids=np.array(ids),
                 embeddings=np.concatenate([released[name] for name in SPLITS.values()]))

    def embedding_spend(self, state: NodeState) -> dict[str, float]:
        """Return the embedding-noise budget spent so far, with what recomputes it."""
        p = self.settings.privacy
        assert p.embedding_epsilon is not None
        z = self._release_multiplier()
        releases = len(state.releases) + state.abandoned_releases
        history = [*self.rows.summary_history] + ([(z, 1.0, releases)] if releases else [])
        spent = epsilon_of(history, delta=self._embedding_delta())
        self._guard(spent, "releasing embeddings", p.embedding_epsilon)
        return {"embedding_epsilon": spent,
                "embedding_delta": self._embedding_delta() + self.rows.summary_selection_delta,
                "embedding_noise_multiplier": z, "embedding_releases": releases,
                "embedding_sensitivity": embedding_sensitivity(clip=p.embedding_clip),
                "embedding_selection_delta": self.rows.summary_selection_delta,
                "embedding_summary_noise_multiplier": self._summary_multiplier()}

    def final_encoder(self, state: NodeState, best_epoch: int) -> tuple[int, nn.Module]:
        """Return the encoder the lender's best epoch used, and the epoch it stands after."""
        version = state.version.get(best_epoch, max(state.snapshots, default=0))
        weights = state.snapshots[version] if state.snapshots else state.model
        return version, self._encoder(weights)

    def scoring_noise_std(self) -> float:
        """Return the noise each release of embeddings gets (0 without embedding noise)."""
        return self._noise_std() if self.noisy else 0.0

    def final(self, state: NodeState, best_epoch: int) -> dict[str, np.ndarray]:
        """Embeddings of every split from the encoder the lender's best epoch used.

        Refused before the node has trained in this run, and, with embedding noise, from an
        encoder whose release was never counted (the untrained encoder's, for one).
        """
        if not state.last:
            raise BudgetRefusal(f"{self.settings.party}: no final embeddings before this node "
                                "has trained in this run")
        version, encoder = self.final_encoder(state, best_epoch)
        if self.noisy and version not in state.releases:
            raise BudgetRefusal(f"{self.settings.party}: the final embeddings would come from "
                                f"an encoder (epoch {version}) whose release was never counted")
        return {name: self._release(state, version, self._split_positions(state, split), split,
                                    encoder) for split, name in SPLITS.items()}


class LenderNode(_Node):
    """The label holder: aligns, trains its encoder and the head, and returns gradients."""

    def __init__(self, settings: ClientSettings, rows: NodeRows, passive: tuple[str, ...],
                 noise: NoiseSource) -> None:
        super().__init__(settings, rows, noise)
        assert rows.y is not None
        self.passive = passive
        p = settings.privacy
        self.flip = (flip_probability(epsilon=p.label_epsilon) if p.label_epsilon is not None
                     else 0.0)
        self.train_rows = np.flatnonzero(rows.split == TRAIN)
        self.calibration: tuple[float, float] | None = None  # set by final() under label DP
        self.y_train = rows.y[self.train_rows]
        if p.label_epsilon is not None:
            self.y_train = flipped_labels(self.y_train, p.label_epsilon, noise)

    def flip_digest(self) -> str:
        """Return a keyed digest of the flip mask, for the lender's own audit log (never sent).

        HMAC under the lender's secret key: equal across messages when the flips are, and no
        help to anyone who would brute-force candidate labels against it.
        """
        assert self.rows.y is not None
        mask = np.packbits(self.y_train != self.rows.y[self.train_rows])
        return self.noise.commitment(mask.tobytes())

    def _base_rate(self) -> float:
        """Where training starts: never from exact labels under a label-protecting mechanism.

        The noisy summary's positive rate under DP-SGD (of the flipped labels under label DP);
        the flipped labels' rate under label DP alone (covered by its epsilon), debiased; the
        exact rate without DP.
        """
        if self.rows.summary_base_rate is not None:
            rate = self.rows.summary_base_rate  # of the flipped labels under label DP
        elif self.dpsgd:
            return 0.5  # no accounted count: start uninformed
        else:
            rate = float(self.y_train.mean())
        if self.flip > 0:  # randomized response pulls the rate toward 1/2: undo it
            rate = (rate - self.flip) / (1 - 2 * self.flip)
        return min(max(rate, 1e-3), 1 - 1e-3)

    # alignment ---------------------------------------------------------------------------
    def request(self, state: NodeState, *, cached: bool = True) -> tuple[bytes, bytes]:
        """Blind the applicant IDs once for every party.

        With the node's PSI cache (and ``cached``), only applicants not blinded in an earlier
        run are blinded now (:class:`~federation.alignment_cache.RequestCache`); ``blinded``
        counts them.
        """
        if "psi" in state.keys:
            raise AlignmentError(f"{self.settings.party}: the applicants were already blinded "
                                 "for this run; a second PSI request is refused")
        psi_key, request, self.blinded = RequestCache(
            self._psi_cache() if cached else None).request(self.rows.ids)
        log.info("alignment: lender blinded %d of its %d applicants anew (the others from its "
                 "cache)", self.blinded, len(self.rows.ids))
        side = LenderAlignment(self.rows.ids, psi_key=psi_key)
        state.keys["psi"], state.keys["channel"] = side.keys()
        public = side.channel_public()
        return request, seal_key(channel_auth(self.settings.party, self.settings.channel_keys),
                                 public, transcript(request))

    def intersect(self, state: NodeState,
                  answers: dict[str, tuple[bytes, bytes, bytes]]) -> dict[str, bytes]:
        """Learn which applicants each party knows; seal each party's intersection for it.

        ``answers`` maps a party to its (setup, response, public key). The parties are
        intersected side by side, one thread each: the elliptic-curve work runs in
        ``openmined.psi``'s C++ without Python's lock, and it is most of the alignment's time.
        """
        if state.masks:  # each intersection counts the lender's applicants a party knows
            raise AlignmentError(f"{self.settings.party}: the intersections of this run were "
                                 "already computed; a second request is refused")
        auth = channel_auth(self.settings.party, self.settings.channel_keys)
        checked = {party: (setup, response, open_key(auth, key, party, transcript(
            transcript(setup), response))) for party, (setup, response, key) in answers.items()}

        def one(party: str) -> tuple[bytes, np.ndarray, bytes]:
            side = LenderAlignment(self.rows.ids, psi_key=state.keys["psi"],
                                   channel_key=state.keys["channel"])
            setup, response, _ = checked[party]
            found, self.looked_up[party] = FoundCache(self._psi_cache(), party).found(
                state.keys["psi"], self.rows.ids, setup, response)
            return (*side.intersect(party, *checked[party], splits=self.rows.split,
                                    found=found),
                    side.channel_key(party, checked[party][2]))

        with ThreadPoolExecutor(max_workers=max(len(answers), 1)) as pool:
            done = dict(zip(answers, pool.map(one, answers), strict=True))
        for party, (_, found, key) in done.items():
            log.info("alignment: lender looked up %d of its %d applicants in %s's set anew (the "
                     "others from its cache)", self.looked_up[party], len(self.rows.ids), party)
            state.masks[party] = found
            keep_key(state.keys, party, key)  # the key of the exchanges with the party
        return {party: sealed for party, (sealed, _, _) in done.items()}

    # training ----------------------------------------------------------------------------
    def _model(self, state: NodeState, weights: dict[str, torch.Tensor] | None = None
               ) -> LenderModel:
        if weights is None and state.model is None:
            torch.manual_seed(_chunk_key(self.settings.seed, "lender", "init"))
        model = LenderModel(self.rows.width, self.passive, self.settings.model, self.rows.names)
        saved = weights if weights is not None else state.model
        if saved is not None:
            model.load_state_dict(saved)
        else:
            start_at_base_rate(model, self._base_rate())
        return model

    def _inputs(self, rows: np.ndarray, embeddings: dict[str, np.ndarray],
                model: LenderModel, state: NodeState) -> np.ndarray:
        """Lay the lender's columns and each party's embeddings (where known) side by side."""
        z = np.zeros((len(rows), model.width + len(self.passive) * (model.embedding_dim + 1)),
                     dtype=np.float32)
        z[:, :model.width] = self.rows.x[rows]
        for party in self.passive:
            known = state.masks[party][rows]
            if int(known.sum()) != len(embeddings[party]):
                raise ValueError(f"{party} sent {len(embeddings[party])} embeddings for "
                                 f"{int(known.sum())} applicants it knows")
            z[known, model.embedding_columns(party)] = embeddings[party]
            z[:, model.presence_column(party)] = known
        return z

    def _chunk(self, epoch: int, chunk: int) -> np.ndarray:
        ids = [self.rows.ids[i] for i in self.train_rows]
        return np.flatnonzero(assign_chunk(ids, self.settings.seed, epoch, self.k) == chunk)

    def split_rows(self, split: int) -> np.ndarray:
        """Lender rows of one split, in table order."""
        return np.flatnonzero(self.rows.split == split)

    def exchange(self, state: NodeState, *, epoch: int, chunk: int,
                 embeddings: dict[str, np.ndarray], val: dict[str, np.ndarray] | None,
                 val_epoch: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Score the validation rows of ``val_epoch`` (early stopping), then train on a chunk.

        Returns the per-record gradients for each party's embeddings of the chunk, and
        metrics (``stop`` is 1 when early stopping ends training; no chunk is trained then).
        """
        model = self._model(state)
        metrics: dict[str, float] = {}
        if val is not None:
            rows = self.split_rows(VAL)
            y_val = self.rows.y[rows]  # type: ignore[index]
            p_val = predict_proba(model, self._inputs(rows, val, model, state))
            auc = auc_of_scores(p_val, y_val)
            watch = EarlyStopping(self.settings.train, state.watched, state.best_epoch,
                                  state.watched_best)
            improved = watch.observe(val_epoch, y_val, p_val, auc)
            if not self.settings.train.early_stopping:  # the last epoch's model is kept
                watch.best_epoch, improved = val_epoch, True
            if improved:
                state.best_auc = auc
            state.best_epoch, state.watched_best = watch.best_epoch, watch.best
            state.snapshots[val_epoch] = {k: v.clone() for k, v in model.state_dict().items()}
            for old in [e for e in state.snapshots if e not in (state.best_epoch, val_epoch)]:
                del state.snapshots[old]
            state.history[-1]["val_auc"] = auc
            metrics.update({"val_auc": auc, "best_epoch": state.best_epoch})
            if (watch.should_stop(val_epoch) or val_epoch >= self.settings.train.epochs
                    or chunk < 0):
                metrics["stop"] = 1.0
                return {}, metrics
        optimizer = self._optimizer(model, state, len(self.train_rows))
        where = self._chunk(epoch, chunk)
        rows = self.train_rows[where]
        z = self._inputs(rows, embeddings, model, state)
        n_train = len(self.train_rows)
        self._guard_dpsgd(state, n_train, epoch)
        dp = self._dp_plan(n_train)
        sampling, noise = self._generators("lender", epoch, chunk)
        loss, steps = fit_chunk(model, optimizer, z, self.y_train[where],
                                torch.nn.BCEWithLogitsLoss(),
                                batch_size=batch_for(n_train, self.settings.train),
                                passes=self.passes, local_steps=self.local_steps,
                                generator=sampling, dp=dp, noise=noise)
        if chunk == 0:
            state.history.append({"epoch": epoch, "train_loss": 0.0, "rows": 0})
        row = state.history[-1]
        row["train_loss"] = (row["train_loss"] * row["rows"] + loss * len(rows)) / max(
            row["rows"] + len(rows), 1)
        row["rows"] += len(rows)
        if dp is not None:
            self._count_steps(state, epoch, steps)
        grads = embedding_gradients(model, z, self.y_train[where])
        state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
        metrics["steps"] = steps
        if not self.private:  # the training loss of the rows: kept at home under DP
            metrics["train_loss"] = loss
        metrics.update(self.spend(state))
        return {p: g[state.masks[p][rows]] for p, g in grads.items()}, metrics

    def spend(self, state: NodeState) -> dict[str, float]:
        """Label-DP and DP-SGD spend so far, with what recomputes them."""
        out: dict[str, float] = {}
        if self.flip > 0:
            out.update({"label_epsilon": float(self.settings.privacy.label_epsilon or 0.0),
                        "label_flip_probability": self.flip})
        if self.dpsgd:
            spend = self._dp_spend(state, len(self.train_rows))
            self._guard(spend["epsilon"], "DP-SGD", self.settings.privacy.target_epsilon)
            out.update({f"dpsgd_{k}": v for k, v in spend.items() if not isinstance(v, list)})
        return out

    def best_model(self, state: NodeState) -> LenderModel:
        """Return the model of the best validation epoch (the one that scores)."""
        return self._model(state, state.snapshots.get(state.best_epoch))

    def final(self, state: NodeState, embeddings: dict[str, dict[str, np.ndarray]],
              out_dir: Path | None
              ) -> tuple[dict[str, float], dict[str, ScoreSummary], dict[str, int]]:
        """Score every split with the best epoch's model; keep the scores at this node.

        Also scores the test rows with each party masked as unknown (its lift). Returns
        aggregate metrics and the lender's report: a score summary per split (none of the
        training rows under DP: their scores are outside every guarantee). The row-level
        scores are written to ``out_dir`` (the lender's own disk) when given.
        """
        model = self.best_model(state)
        scores, metrics = {}, {}
        for split, name in SPLITS.items():
            rows = self.split_rows(split)
            scores[name] = predict_proba(model, self._inputs(
                rows, {p: embeddings[p][name] for p in self.passive}, model, state))
        self.calibration = None
        if self.flip > 0:
            val_scores, y_val = scores["val"], self.rows.y[self.split_rows(VAL)]  # type: ignore[index]
            self.calibration = fit_calibration(val_scores, y_val)
            scores = {n: calibrate(s, self.calibration) for n, s in scores.items()}
        test = self.split_rows(TEST)
        y_test = self.rows.y[test]  # type: ignore[index]
        metrics["test_auc"] = auc_of_scores(scores["test"], y_test)
        without = {}
        for party in self.passive:
            z = self._inputs(test, {p: embeddings[p]["test"] for p in self.passive}, model,
                             state)
            z[:, model.presence_column(party)] = 0.0
            without[party] = predict_proba(model, z)
            metrics[f"test_auc_without_{party}"] = auc_of_scores(without[party], y_test)
        report = {name: ScoreSummary.of(self.rows.y[self.split_rows(split)],  # type: ignore[index]
                                        scores[name])
                  for split, name in SPLITS.items() if not (self.private and split == TRAIN)}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            arrays: dict[str, Any] = {f"{n}_scores": s for n, s in scores.items()}
            arrays |= {f"{n}_rows": self.split_rows(s) for s, n in SPLITS.items()}
            arrays |= {f"test_scores_without_{p}": s for p, s in without.items()}
            arrays["history"] = np.array([[h["epoch"], h["train_loss"], h.get("val_auc", np.nan)]
                                          for h in state.history])
            np.savez(out_dir / "scores.npz", **arrays)
        metrics["best_epoch"] = state.best_epoch
        metrics["inputs"] = self.rows.width  # the width of its own columns, for the report
        return metrics, report, {name: len(self.split_rows(split))
                                 for split, name in SPLITS.items()}
