"""The one-run audit's twin: a party's training again, with canaries, never shipped.

The twin trains the party's network on the party's training rows with the run's mechanism, by
the run's own code path (:func:`models.local_training.train_round`: Opacus ``make_private``
with ghost clipping, Poisson sampling at the run's rate, the run's noise multiplier, clipping
norm, steps, Adam and learning rate), plus canary records:

- *membership canaries*: each is in the training set or not by a secret coin;
- *label canaries* (when the run flips labels by randomized response): each is always in, and
  its label is the secret coin; the labels then go through the run's randomized response.

Threat model: white-box gradient canaries (Steinke, Nasr and Jagielski 2023, "Dirac canaries"),
observed through the final model only. Every canary is the all-zero row (the mean applicant)
plus a slot of its own: the twin's network adds ``scale * u[slot]`` to the logit, one parameter
per canary that no real row touches (their slot is 0, which adds nothing and gets no gradient).
A canary's clipped gradient therefore lies almost wholly along its own parameter, with a sign
set by its label; DP-SGD's noise is the only other thing that moves that parameter. The auditor
reads ``scale * u[slot]`` from the trained twin's weights (it is the logit difference between
the canary's row and the plain zero row). DP-SGD's guarantee holds for any network and any
record, so this is within the threat model every DP-SGD epsilon covers; it is far stronger
than a black-box attack on the run's model, and weaker than one that sees every iterate (which
the accounting also covers).

The coins come from the party's :class:`~privacy.randomness.NoiseSource` (a key from
``os.urandom`` at the node); the twin's noise and sampling too. The twin's weights never leave
this module's caller: the run ships its own model, which never saw a canary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models import split_training
from models.local_training import DPRound, steps_per_epoch, train_round
from models.threads import one_thread
from models.training import start_at_base_rate
from privacy.accounting import epsilon_of
from privacy.randomness import NoiseSource


class CanaryModel(nn.Module):
    """A network plus one logit offset per canary: ``base(x) + scale * u[slot]``.

    Input columns: the party's ``width`` columns, then the canary slot (0 for a real row,
    ``1..canaries`` for a canary). ``u`` starts at 0.

    >>> m = CanaryModel(nn.Linear(3, 1), 3, canaries=2, scale=10.0)
    >>> m(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0]])).shape
    torch.Size([2])
    """

    def __init__(self, base: nn.Module, width: int, *, canaries: int, scale: float) -> None:
        super().__init__()
        self.base, self.width, self.scale = base, width, scale
        self.offsets = nn.Embedding(canaries + 1, 1)
        nn.init.zeros_(self.offsets.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        slot = z[:, self.width].round().long()
        logit = self.base(z[:, :self.width]).reshape(len(z))
        offset = self.offsets(slot).reshape(len(z)) * (slot > 0).to(z.dtype)
        return logit + self.scale * offset


@dataclass(frozen=True)
class TwinPlan:
    """The run's training, as the twin repeats it.

    ``epochs``: passes over the rows (under DP-SGD, ``round(1 / sample_rate)`` Poisson-sampled
    steps each). ``noise_multiplier=None``: no DP-SGD (plain mini-batches of ``batch_size``).
    ``label_flip``: randomized response's flip probability (0: labels as they are).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    noise_multiplier: float | None = None
    max_grad_norm: float = 1.0
    sample_rate: float = 0.0
    delta: float = 0.0
    label_flip: float = 0.0

    @property
    def steps(self) -> int:
        """DP-SGD steps the twin runs (0 without DP-SGD)."""
        if self.noise_multiplier is None:
            return 0
        return self.epochs * steps_per_epoch(self.sample_rate)

    def accounted_epsilon(self) -> float:
        """Return the epsilon the accountant gives the twin's DP-SGD (inf without it)."""
        if self.noise_multiplier is None:
            return math.inf
        return epsilon_of([(self.noise_multiplier, self.sample_rate, self.steps)], delta=self.delta)

    @property
    def canary_scale(self) -> float:
        """The canary offset's input: large enough that clipping leaves the offset most of C."""
        return max(100.0, 10.0 * self.max_grad_norm)


@dataclass(frozen=True)
class Canaries:
    """The canaries' secret bits and public labels.

    ``member_bits[i]``: membership canary ``i`` is in the training set; ``member_labels[i]``:
    its label (chosen at random, known to the auditor). ``label_bits[j]``: label canary ``j``'s
    label (empty: no label audit).
    """

    member_bits: np.ndarray
    member_labels: np.ndarray
    label_bits: np.ndarray

    @property
    def slots(self) -> int:
        """Canary slots in the twin's network."""
        return len(self.member_bits) + len(self.label_bits)


def draw_canaries(count: int, *, label_audit: bool, noise: NoiseSource) -> Canaries:
    """Draw ``count`` membership canaries (and as many label canaries) from ``noise``.

    >>> c = draw_canaries(8, label_audit=False, noise=NoiseSource.fresh())
    >>> len(c.member_bits), len(c.label_bits), set(c.member_bits.tolist()) <= {0, 1}
    (8, 0, True)
    """
    if count < 2:
        raise ValueError(f"audit.canaries must be at least 2 for a one-run audit, got {count}")
    bits = noise.numpy("canary membership").integers(0, 2, count)
    labels = noise.numpy("canary labels").integers(0, 2, count)
    label_bits = (noise.numpy("canary label bits").integers(0, 2, count) if label_audit
                  else np.zeros(0, dtype=np.int64))
    return Canaries(bits, labels, label_bits)


def twin_rows(x: np.ndarray, y: np.ndarray, canaries: Canaries
              ) -> tuple[np.ndarray, np.ndarray]:
    """Lay out the twin's training rows: the real rows (slot 0), then the canaries that are in.

    >>> c = Canaries(np.array([1, 0]), np.array([1, 1]), np.array([0]))
    >>> z, t = twin_rows(np.ones((2, 2), np.float32), np.zeros(2, np.float32), c)
    >>> z[:, -1].tolist(), t.tolist()
    ([0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 1.0, 0.0])
    """
    m = len(canaries.member_bits)
    slots = np.r_[1 + np.flatnonzero(canaries.member_bits == 1),
                  1 + m + np.arange(len(canaries.label_bits))]
    labels = np.r_[canaries.member_labels[canaries.member_bits == 1], canaries.label_bits]
    z = np.zeros((len(x) + len(slots), x.shape[1] + 1), dtype=np.float32)
    z[:len(x), :x.shape[1]] = x
    z[len(x):, -1] = slots
    return z, np.r_[y, labels].astype(np.float32)


@one_thread()
def train_twin(x: np.ndarray, y: np.ndarray, canaries: Canaries, plan: TwinPlan, *,
               base: nn.Module, seed: int, noise: NoiseSource) -> CanaryModel:
    """Train the twin on ``(x, y)`` and the canaries that are in, as the run trains.

    Under label DP every label (the real rows' and the canaries') is flipped by the run's
    randomized response, from ``noise``; under DP-SGD the sampling and the noise come from
    ``noise`` too. ``seed`` (public) fixes plain training's batches, as in the run.
    """
    z, target = twin_rows(x, y, canaries)
    if plan.label_flip > 0:
        target = split_training.randomized_response(target, plan.label_flip,
                                                    noise.numpy("twin label flips"))
    model = CanaryModel(base, x.shape[1], canaries=canaries.slots, scale=plan.canary_scale)
    start_at_base_rate(base, float(target.mean()))
    dp, secret = None, None
    if plan.noise_multiplier is not None:
        dp = DPRound(plan.noise_multiplier, plan.max_grad_norm, plan.sample_rate, plan.delta)
        secret = (noise.fresh_torch("twin sampling"), noise.fresh_torch("twin dpsgd"))
    train_round(model, z, target, epochs=plan.epochs, batch_size=plan.batch_size, lr=plan.lr,
                weight_decay=plan.weight_decay, seed=seed, dp=dp, secret=secret)
    return model


@torch.no_grad()
def canary_scores(model: CanaryModel, canaries: Canaries) -> tuple[np.ndarray, np.ndarray]:
    """Return the auditor's scores: (membership, label), higher meaning bit 1.

    Each canary's logit offset ``scale * u[slot]`` (the twin's logit on the canary's row minus
    its logit on the zero row, read from the weights: exactly 0 for a canary no gradient and no
    noise ever reached); a membership canary's signed toward its label.

    >>> m = CanaryModel(nn.Linear(2, 1), 2, canaries=3, scale=10.0)
    >>> c = Canaries(np.array([1, 0]), np.array([0, 1]), np.array([1]))
    >>> [s.tolist() for s in canary_scores(m, c)]
    [[-0.0, 0.0], [0.0]]
    """
    offsets = model.scale * model.offsets.weight[1:, 0].double().numpy()
    m = len(canaries.member_bits)
    signs = 2.0 * canaries.member_labels - 1.0
    return offsets[:m] * signs, offsets[m:]
