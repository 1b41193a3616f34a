"""Split-model training, one party at a time, for vertical federation. Never imports flwr.

The lender runs :class:`LenderModel` (its own encoder, an embedding that stands for "this party
does not know the applicant", and the head) on its columns and the passive parties' embeddings;
each passive party runs a :class:`~models.networks.PartyEncoder` on its own columns.

One exchange covers a chunk of many batches (in the spirit of FedBCD): the lender trains on the
chunk with the parties' embeddings held fixed, then returns to each party the gradient of each
record's loss with respect to that record's embedding; the party trains its encoder on the
chunk against those gradients (:class:`InnerProductLoss`). With DP-SGD both sides sample Poisson
batches, clip per record (Opacus ghost clipping) and add noise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from torch import nn

from models.binned_scorecard import sum_head
from models.factory import party_encoder
from models.local_training import BatchedRows, make_private, private_passes
from models.networks import SplitHead
from models.settings import ModelKind, ModelSettings
from privacy.ledger import PrivacyLedgerError
from privacy.randomness import gaussian, seed_torch_global


class LenderModel(nn.Module):
    """The lender's part of the split model.

    Input columns: the lender's own, then for each passive party its embedding and a presence
    flag. Where the flag is 0 the party's embedding is replaced by a learned "absent" vector, so
    applicants a party does not know stay in training.

    >>> m = LenderModel(3, ("bureau",), ModelSettings(hidden=(4,), encoder_hidden=(4,),
    ...                 embedding_dim=2))
    >>> m(torch.zeros(5, 3 + 2 + 1)).shape
    torch.Size([5])
    """

    def __init__(self, width: int, passive: tuple[str, ...], settings: ModelSettings,
                 names: tuple[str, ...] = ()) -> None:
        super().__init__()
        d = settings.embedding_dim
        self.width, self.passive, self.embedding_dim = width, passive, d
        self.encoder = party_encoder(settings, width, names)
        self.absent = nn.ModuleDict({p: nn.Linear(1, d, bias=False) for p in passive})
        self.head: nn.Module = SplitHead(d * (1 + len(passive)), settings.hidden,
                                         settings.dropout)
        if settings.kind is ModelKind.scorecard:  # the partial scores added, plus an intercept
            self.head = _Squeezed(sum_head(1 + len(passive)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        parts = torch.split(z, [self.width] + [self.embedding_dim, 1] * len(self.passive), dim=1)
        embeddings = [self.encoder(parts[0])]
        for i, party in enumerate(self.passive):
            emb, present = parts[1 + 2 * i], parts[2 + 2 * i]
            embeddings.append(emb * present + self.absent[party](1.0 - present))
        return self.head(torch.cat(embeddings, dim=1))

    def embedding_columns(self, party: str) -> slice:
        """Columns of ``party``'s embedding in the input."""
        start = self.width + self.passive.index(party) * (self.embedding_dim + 1)
        return slice(start, start + self.embedding_dim)

    def presence_column(self, party: str) -> int:
        """Column of ``party``'s presence flag in the input."""
        return self.embedding_columns(party).stop


class _Squeezed(nn.Module):
    """A one-output layer whose output loses its last axis (a logit per row)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).squeeze(-1)


class InnerProductLoss(nn.Module):
    """A passive party's loss: ``<embedding, gradient the lender returned>`` per record.

    Its gradient with respect to the encoder is exactly the lender's loss gradient, chained
    through the embedding. ``reduction`` follows torch (Opacus sets it to ``none``).

    >>> InnerProductLoss()(torch.ones(2, 3), torch.full((2, 3), 2.0))
    tensor(6.)
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, embedding: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        per_record = (embedding * gradient).sum(dim=1)
        if self.reduction == "none":
            return per_record
        return per_record.sum() if self.reduction == "sum" else per_record.mean()


@dataclass(frozen=True)
class DPPlan:
    """DP-SGD parameters fixed for the whole training: one Poisson rate for every chunk.

    ``noise_multiplier`` is the noise of each optimizer step. With ``local_steps`` steps on
    every sampled batch (FedBCD's Q), the batch's steps are ``local_steps`` adaptive Gaussian
    mechanisms on the same sample: together one Gaussian of multiplier
    ``noise_multiplier / sqrt(local_steps)`` (Gaussian composition is exact), amplified once
    by the batch's Poisson sampling. The accountant composes that per batch
    (:attr:`batch_multiplier`); counting the Q steps as Q independently sampled batches would
    understate epsilon, since the later steps get no fresh sampling.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    local_steps: int = 1

    @property
    def steps_per_pass(self) -> int:
        """Batches drawn per pass over a chunk."""
        return int(round(1.0 / self.sample_rate))

    @property
    def batch_multiplier(self) -> float:
        """Noise multiplier of one batch's ``local_steps`` steps taken together.

        >>> DPPlan(2.0, 1.0, 0.01, local_steps=4).batch_multiplier
        1.0
        """
        return self.noise_multiplier / math.sqrt(self.local_steps)


def chunk_sample_rate(n_rows: int, chunks: int, batch_size: int) -> float:
    """Return the Poisson rate giving batches of ``batch_size`` from chunks of ``n_rows / chunks``.

    >>> chunk_sample_rate(70_000, 2, 512)  # chunks of 35,000 rows: 69 batches
    0.014492753623188406
    """
    return 1.0 / max(1, math.ceil(n_rows / chunks / batch_size))


def fit_chunk(model: nn.Module, optimizer: torch.optim.Optimizer, x: np.ndarray,
              target: np.ndarray, criterion: nn.Module, *, batch_size: int, passes: int,
              generator: torch.Generator, dp: DPPlan | None = None,
              noise: torch.Generator | None = None, local_steps: int = 1) -> tuple[float, int]:
    """Train ``model`` in place on one chunk; return the mean loss and the batches drawn.

    Each batch takes ``local_steps`` optimizer steps (without DP; with DP-SGD,
    ``dp.local_steps``) against the same ``target``: the other side's values of this exchange,
    stale after the first step (FedBCD). The loss is that of each batch's first step.
    ``generator`` fixes the batches (with DP-SGD: the Poisson sampling) and seeds dropout;
    ``noise`` draws DP-SGD's noise. Under DP both must come from the node's secret
    :class:`~privacy.randomness.NoiseSource`, never from the public seed.
    """
    if dp is None:  # dropout: the public seed's stream
        torch.manual_seed(generator.initial_seed())
    else:  # under DP its own stream, from the secret generator's whole state
        seed_torch_global(generator)
    xt = torch.as_tensor(x, dtype=torch.float32)
    tt = torch.as_tensor(target, dtype=torch.float32)
    model.train()
    if dp is None:
        total, seen, steps = 0.0, 0, 0
        for _ in range(passes):
            order = torch.randperm(len(xt), generator=generator)
            for i in range(0, len(order), batch_size):
                batch = order[i:i + batch_size]
                for step in range(local_steps):
                    optimizer.zero_grad(set_to_none=True)
                    loss = criterion(model(xt[batch]), tt[batch])
                    loss.backward()
                    optimizer.step()
                    if step == 0:
                        total, seen = total + loss.item() * len(batch), seen + len(batch)
                steps += 1
        return total / max(seen, 1), steps
    if noise is None:
        raise PrivacyLedgerError("DP-SGD needs a noise generator from the node's secret source")
    if len(xt) == 0:
        return 0.0, 0
    with warnings.catch_warnings():  # secure_mode off; ghost clipping's hooks on inputs
        warnings.simplefilter("ignore", UserWarning)
        return _fit_chunk_private(model, optimizer, xt, tt, criterion, passes, generator, noise,
                                  dp)


def _fit_chunk_private(model, optimizer, xt, tt, criterion, passes, generator, noise,
                       dp: DPPlan) -> tuple[float, int]:
    private, dp_optimizer, dp_criterion, dp_loader, _ = make_private(
        model, optimizer, criterion, BatchedRows(xt, tt), sample_rate=dp.sample_rate,
        steps=dp.steps_per_pass, noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm, sampling=generator, noise=noise)
    return private_passes(private, dp_optimizer, dp_criterion, dp_loader, passes,
                          local_steps=dp.local_steps)


def embedding_gradients(model: LenderModel, z: np.ndarray, y: np.ndarray,
                        ) -> dict[str, np.ndarray]:
    """Per record, the gradient of its loss with respect to each party's embedding.

    Rows where a party does not know the applicant get zeros (they are never sent).
    """
    model.eval()
    zt = torch.as_tensor(z, dtype=torch.float32).clone().requires_grad_(True)
    loss = nn.functional.binary_cross_entropy_with_logits(
        model(zt), torch.as_tensor(y, dtype=torch.float32), reduction="sum")
    (grad,) = torch.autograd.grad(loss, zt)
    return {p: grad[:, model.embedding_columns(p)].numpy().copy() for p in model.passive}


@torch.no_grad()
def embed(encoder: nn.Module, x: np.ndarray, *, clip: float | None = None,
          noise_std: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Embed ``x``, optionally with embedding noise.

    With ``clip`` each row is scaled to norm at most ``clip``, then Gaussian noise of
    ``noise_std`` is added, drawn from ``rng`` (the party's secret source).
    """
    encoder.eval()
    out = encoder(torch.as_tensor(x, dtype=torch.float32))
    if clip is not None:
        norms = out.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out = out * torch.clamp(clip / norms, max=1.0)
    values = out.numpy().astype(np.float64)
    if noise_std > 0:
        if rng is None:
            raise ValueError("embedding noise needs a generator from the party's secret source")
        values = values + gaussian(values.shape, noise_std, rng)
    return values.astype(np.float32)


def randomized_response(y: np.ndarray, flip: float, rng: np.random.Generator) -> np.ndarray:
    """Flip each 0/1 label with probability ``flip`` (label DP by randomized response).

    ``rng`` must come from the lender's secret :class:`~privacy.randomness.NoiseSource`: whoever
    can regenerate the flips can undo them.

    >>> randomized_response(np.zeros(4, np.float32), 0.0, np.random.default_rng()).tolist()
    [0.0, 0.0, 0.0, 0.0]
    """
    flips = rng.random(len(y)) < flip
    return np.where(flips, 1.0 - y, y).astype(np.float32)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_calibration(reference: np.ndarray, labels: np.ndarray) -> tuple[float, float] | None:
    """Return Platt scaling's (slope, intercept) on the logit, or None without usable signal.

    Under label DP the model learns the flipped labels' rate, pulled toward 0.5; the lender
    recalibrates on its validation rows, whose true labels never leave it. The map is strictly
    increasing, so AUC stays.

    >>> ref = np.array([0.2, 0.3, 0.6, 0.7]); y = np.array([0, 0, 1, 1])
    >>> out = calibrate(np.array([0.1, 0.9]), fit_calibration(ref, y))
    >>> bool(out[0] < out[1])
    True
    """
    fitted = LogisticRegression(C=1e6).fit(_logit(reference)[:, None], labels)
    if fitted.coef_[0, 0] <= 0:  # no usable signal: leave the scores as they are
        return None
    return float(fitted.coef_[0, 0]), float(fitted.intercept_[0])


def calibrate(scores: np.ndarray, calibration: tuple[float, float] | None) -> np.ndarray:
    """Apply :func:`fit_calibration`'s map (scores unchanged for None).

    >>> calibrate(np.array([0.5]), (2.0, 0.0)).tolist(), calibrate(np.array([0.3]), None).tolist()
    ([0.5], [0.3])
    """
    if calibration is None:
        return scores
    slope, intercept = calibration
    return expit(slope * _logit(scores) + intercept)
