"""One client's training for one round, with or without DP-SGD. Never imports flwr.

With DP-SGD the privacy accountant is rebuilt every round from the party's own history, so the
epsilon it reports covers every round so far (a fresh engine per round would report round one
forever: the mistake Flower's own Opacus example makes).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models.binned_scorecard import decay_groups
from models.threads import one_thread
from privacy.accounting import ACCOUNTANT, History, epsilon_of, merge_history
from privacy.ledger import PrivacyLedgerError
from privacy.randomness import seed_torch_global


@dataclass(frozen=True)
class DPRound:
    """DP-SGD parameters of one round and the party's history before it."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    delta: float
    history: History = field(default_factory=list)


@dataclass(frozen=True)
class LocalResult:
    """What one round of local training produced."""

    train_loss: float
    steps: int
    history: History
    epsilon: float | None


def steps_per_epoch(sample_rate: float) -> int:
    """Poisson-sampled batches per epoch, as Opacus' DP data loader draws them.

    >>> steps_per_epoch(0.01)
    100
    """
    return int(round(1.0 / sample_rate))


def poisson_sample_rate(n_rows: int, batch_size: int) -> float:
    """Return the sample rate Opacus' DP data loader uses: one over the number of batches.

    Noise calibration, accounting and the ledger must all use this rate, not
    ``batch_size / n_rows``, or the epsilon reported and the epsilon recomputed disagree.

    >>> poisson_sample_rate(7782, 512)
    0.0625
    """
    return 1.0 / math.ceil(n_rows / batch_size)


def epsilon_after_round(dp: DPRound, epochs: int) -> float:
    """Epsilon the party will have spent once this round's steps are added."""
    steps = epochs * steps_per_epoch(dp.sample_rate)
    return epsilon_of(dp.history + [(dp.noise_multiplier, dp.sample_rate, steps)], delta=dp.delta)


class BatchedRows(TensorDataset):
    """A TensorDataset that hands a sampled batch over in one indexing step.

    Torch's loader otherwise fetches a batch row by row and stacks the rows again; with Opacus'
    Poisson sampler that was half of a DP-SGD round on a lender's 14,000 rows. The batches, and
    so the training, are the same.

    >>> rows = BatchedRows(torch.arange(6.0).reshape(3, 2), torch.tensor([0.0, 1.0, 0.0]))
    >>> x, y = rows.__getitems__([2, 0])
    >>> x.tolist(), y.tolist()
    ([[4.0, 5.0], [0.0, 1.0]], [0.0, 0.0])
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)


def as_is(batch: Any) -> Any:
    """Collate nothing: a batch from :class:`BatchedRows` comes stacked already."""
    return batch


@one_thread()
def train_round(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
                lr: float, weight_decay: float, seed: int, proximal_mu: float = 0.0,
                dp: DPRound | None = None,
                secret: tuple[torch.Generator, torch.Generator] | None = None,
                penalty_rows: int | None = None) -> LocalResult:
    """Train ``model`` in place for ``epochs`` passes over ``(x, y)``.

    ``proximal_mu`` adds FedProx's ``mu / 2 * ||w - w_start||^2``. With ``dp`` the batches are
    Poisson-sampled at ``dp.sample_rate`` and gradients are clipped per record (ghost clipping)
    and noised; the returned history extends ``dp.history``. ``secret`` (the sampling and the
    noise generators, from the party's secret source) is then required: ``seed`` is public.
    ``penalty_rows``: the rows a scorecard's penalty is spread over
    (:func:`~models.binned_scorecard.decay_groups`; default the rows of ``x``).
    """
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    rows = len(xt) if penalty_rows is None else penalty_rows
    if dp is None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        return _train_plain(model, xt, yt, epochs, batch_size, lr, weight_decay, proximal_mu,
                            generator, rows)
    if secret is None:
        raise PrivacyLedgerError("DP-SGD needs generators from the party's secret source")
    sampling, noise = secret
    seed_torch_global(sampling)  # dropout, if any: secret too, from the whole state
    return _train_private(model, xt, yt, epochs, lr, weight_decay, dp, sampling, noise, rows)


@one_thread()
def gradient_steps(model: nn.Module, x: np.ndarray, y: np.ndarray, *, steps: int, lr: float,
                   penalty_rows: int, proximal_mu: float = 0.0) -> LocalResult:
    """Take ``steps`` full-batch gradient steps (plain gradient descent) on ``(x, y)``.

    A horizontal scorecard's round (``model.gradient_lr``). The weighted average of the
    lenders' steps (FedAvg weighs each by its rows) is then exactly a gradient step on the
    union's mean loss, with the scorecard's penalty spread over ``penalty_rows``, the union's
    training rows (:func:`~models.binned_scorecard.decay_groups`). Adam's mini-batches are not:
    Adam's first steps after a fresh start move every weight by about ``lr`` whatever its
    gradient's size, and a lender takes as many as it has batches, so their average weighs
    each lender by the square of its rows and ignores how much its loss says; on skewed lenders
    the training loss of the union then rose round after round (docs/explanations.md).
    """
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(decay_groups(model, 0.0, penalty_rows), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    first = float("nan")
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xt), yt)
        if step == 0:
            first = loss.item()
        if proximal_mu > 0:
            loss = loss + proximal_mu / 2 * sum(
                ((p - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True))
        loss.backward()
        optimizer.step()
    return LocalResult(first, steps, [], None)


def _train_plain(model, xt, yt, epochs, batch_size, lr, weight_decay, mu, generator,
                 rows) -> LocalResult:
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(decay_groups(model, weight_decay, rows), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    total, seen, steps = 0.0, 0, 0
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[batch]), yt[batch])
            data_loss = loss.item()
            if mu > 0:
                loss = loss + mu / 2 * sum(((p - s) ** 2).sum()
                                           for p, s in zip(model.parameters(), start, strict=True))
            loss.backward()
            optimizer.step()
            total, seen, steps = total + data_loss * len(batch), seen + len(batch), steps + 1
    return LocalResult(total / max(seen, 1), steps, [], None)


def _train_private(model, xt, yt, epochs, lr, weight_decay, dp: DPRound,
                   generator, noise, rows) -> LocalResult:
    # Opacus warns that secure_mode is off (it needs torchcsprng, which the index lacks; the
    # README says so) and, with ghost clipping, about backward hooks on inputs without grad.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _train_private_quietly(model, xt, yt, epochs, lr, weight_decay, dp, generator,
                                      noise, rows)


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                 rows: BatchedRows, *, sample_rate: float, steps: int, noise_multiplier: float,
                 max_grad_norm: float, sampling: torch.Generator, noise: torch.Generator,
                 history: History | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """Opacus' ``make_private`` with the party's secret generators for sampling and noise.

    Opacus draws Poisson batches from torch's global generator unless given one (only its
    ``secure_mode`` does, and that needs torchcsprng); here the loader samples each of ``steps``
    batches at ``sample_rate`` from ``sampling`` (Opacus' own ``int(1 / rate)`` would run 92
    steps at rate 1/93), and the optimizer draws its noise from ``noise``, four samples summed
    and halved as ``secure_mode`` does (the floating-point defence). The accountant starts
    from ``history`` and records ``sample_rate`` and the steps that run. Returns the private
    model, optimizer, criterion and loader, and the engine whose accountant the optimizer's
    steps feed.
    """
    from opacus import PrivacyEngine  # only DP-SGD needs it (see privacy.accounting)
    from opacus.data_loader import wrap_collate_with_empty
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    if abs(sample_rate * steps - 1.0) > 1e-9:
        raise PrivacyLedgerError(f"{steps} steps at rate {sample_rate}: the accountant would "
                                 "record another rate than the one sampled")
    engine = PrivacyEngine(accountant=ACCOUNTANT)
    if history:
        engine.accountant.load_state_dict({"history": list(history), "mechanism": ACCOUNTANT})
    first = rows[0] if len(rows) else tuple(t[:1] for t in rows.tensors)
    poisson = DataLoader(rows, batch_sampler=UniformWithReplacementSampler(
        num_samples=len(rows), sample_rate=sample_rate, generator=sampling, steps=steps),
        collate_fn=wrap_collate_with_empty(
            collate_fn=as_is, sample_empty_shapes=[(0, *x.shape) for x in first],
            dtypes=[x.dtype for x in first]))
    private, dp_optimizer, dp_criterion, dp_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=poisson, criterion=criterion,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, poisson_sampling=False,
        grad_sample_mode="ghost", noise_generator=noise)
    private.forbid_grad_accumulation()
    dp_optimizer.secure_mode = True  # four Gaussian draws per sample (needs no torchcsprng)
    return private, dp_optimizer, dp_criterion, dp_loader, engine


def _train_private_quietly(model, xt, yt, epochs, lr, weight_decay, dp: DPRound,
                           generator, noise, rows) -> LocalResult:
    optimizer = torch.optim.Adam(decay_groups(model, weight_decay, rows), lr=lr)
    private_model, optimizer, criterion, loader, engine = make_private(
        model, optimizer, nn.BCEWithLogitsLoss(), BatchedRows(xt, yt),
        sample_rate=dp.sample_rate, steps=steps_per_epoch(dp.sample_rate),
        noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
        sampling=generator, noise=noise, history=dp.history)
    loss, steps = private_passes(private_model, optimizer, criterion, loader, epochs)
    history = merge_history([tuple(h) for h in engine.accountant.history])  # type: ignore[misc]
    return LocalResult(loss, steps, history, epsilon_of(history, delta=dp.delta))


def private_passes(private: nn.Module, optimizer: torch.optim.Optimizer, criterion,
                   loader: DataLoader, passes: int, *,
                   local_steps: int = 1) -> tuple[float, int]:
    """Run ``passes`` over an Opacus Poisson loader; return the mean loss and the batches.

    Each sampled batch takes ``local_steps`` noisy steps (the loss is its first step's); the
    caller accounts a batch's steps together (:class:`models.split_training.DPPlan`). An empty
    Poisson batch still counts (the noise is added all the same). The Opacus hooks are removed
    at the end, leaving the plain module as it came.
    """
    private.train()
    total, seen, steps = 0.0, 0, 0
    for _ in range(passes):
        for xb, tb in loader:
            for step in range(local_steps):
                optimizer.zero_grad(set_to_none=True)
                if len(xb) == 0:
                    optimizer.step()
                    continue
                loss = criterion(private(xb), tb)
                loss.backward()
                optimizer.step()
                if step == 0:
                    total, seen = total + loss.item() * len(xb), seen + len(xb)
            steps += 1
    private.remove_hooks()  # type: ignore[operator]
    return total / max(seen, 1), steps
