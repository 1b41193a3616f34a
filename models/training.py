"""Mini-batch training with early stopping on the validation rows.

Batches are cut from tensors built once (no DataLoader): on these small tabular models the
loader, not the model, would dominate the time.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from credit_data.errors import ConfigError
from models.metrics import rank_auc
from models.networks import output_layer
from models.settings import Criterion, TrainSettings
from models.threads import one_thread


@dataclass
class FitResult:
    """What a training run learned about itself."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_auc: float = float("nan")
    seconds: float = 0.0
    rows_seen: int = 0

    @property
    def rows_per_second(self) -> float:
        """Training rows processed per second of training."""
        return self.rows_seen / self.seconds if self.seconds > 0 else float("nan")


def seed_everything(seed: int) -> None:
    """Fix Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def check_train(settings: TrainSettings) -> None:
    """Raise a ConfigError naming the key of any out-of-range value."""
    checks = [("epochs", settings.epochs >= 1), ("batch_size", settings.batch_size >= 1),
              ("lr", settings.lr > 0), ("weight_decay", settings.weight_decay >= 0),
              ("patience", settings.patience >= 1),
              ("min_steps_per_epoch", settings.min_steps_per_epoch >= 1),
              ("smoothing", settings.smoothing >= 1),
              ("min_epochs", settings.min_epochs >= 1)]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"train.{key} is out of range: {getattr(settings, key)}")


def validation_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of scores ``p`` (clipped as the metrics clip them).

    >>> round(validation_log_loss(np.array([0, 1]), np.array([0.5, 0.5])), 4)
    0.6931
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass
class EarlyStopping:
    """Pick the best epoch and say when to stop, from the validation rows (``train.*``).

    Each epoch's criterion (validation log-loss, or AUC) is averaged over the last
    ``smoothing`` epochs; the best average wins, and training stops ``patience`` epochs after
    it, never before ``min_epochs``. Serves the centralized and local models and the vertical
    lender alike.

    >>> from models.settings import Criterion, TrainSettings
    >>> watch = EarlyStopping(TrainSettings(smoothing=2, patience=2, min_epochs=3))
    >>> y = np.array([0, 1, 0, 1])
    >>> [watch.observe(e, y, np.array([0.5 - d, 0.5 + d, 0.5 - d, 0.5 + d]))
    ...  for e, d in enumerate([0.1, 0.3, 0.2, 0.0, 0.0], start=1)]
    [True, True, True, False, False]
    >>> watch.best_epoch, watch.should_stop(5)
    (3, True)
    """

    settings: TrainSettings
    values: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best: float = float("-inf")

    def observe(self, epoch: int, y_val: np.ndarray, p_val: np.ndarray,
                auc: float | None = None) -> bool:
        """Record one epoch's validation scores; return whether it is the best so far."""
        if self.settings.criterion is Criterion.auc:
            value = auc if auc is not None else rank_auc(p_val, y_val)
        else:
            value = -validation_log_loss(y_val, p_val)
        self.values.append(float(value))
        average = float(np.mean(self.values[-self.settings.smoothing:]))
        if not average > self.best:  # written so that a NaN average is never better
            return False
        self.best, self.best_epoch = average, epoch
        return True

    def should_stop(self, epoch: int) -> bool:
        """Whether ``patience`` epochs passed without a better average (after ``min_epochs``)."""
        return (epoch >= self.settings.min_epochs
                and epoch - self.best_epoch >= self.settings.patience)


def batch_for(n_train: int, settings: TrainSettings) -> int:
    """Return the batch size: ``train.batch_size``, smaller on small data.

    At most ``train.batch_size`` rows, and few enough that an epoch makes at least
    ``train.min_steps_per_epoch`` optimizer steps (never below 32 rows).
    """
    return int(min(settings.batch_size, max(32, -(-n_train // settings.min_steps_per_epoch))))


@torch.no_grad()
def start_at_base_rate(model: nn.Module, rate: float) -> None:
    """Set the output bias to the log-odds of ``rate``, so training starts calibrated.

    Without it, the first epochs go to moving the bias from its random start to the default
    rate; on small data early stopping can then end training before anything else is learned.
    """
    rate = min(max(rate, 1e-4), 1 - 1e-4)
    output_layer(model).bias.fill_(float(np.log(rate / (1 - rate))))


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor,
                  batch_size: int = 65_536) -> np.ndarray:
    """Default probabilities for every row of ``x``.

    The sigmoid runs in float64, so that confident scores keep their order instead of rounding
    to 0 or 1 (the membership audit ranks them).
    """
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    out = [torch.sigmoid(model(xt[i:i + batch_size]).double())
           for i in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def _one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
               data: tuple[torch.Tensor, torch.Tensor], order: torch.Tensor,
               batch_size: int) -> float:
    """Take one pass of minibatch steps over the rows in ``order``; return the summed loss."""
    x, y = data
    model.train()
    total = 0.0
    for i in range(0, len(order), batch_size):
        batch = order[i:i + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total


@one_thread()
def fit(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
        y_val: np.ndarray, settings: TrainSettings, seed: int,
        log: Callable[[str], None] | None = None) -> FitResult:
    """Train ``model`` in place and leave it at its best validation AUC.

    With ``settings.early_stopping`` false it trains every epoch and keeps the last weights.

    Parameters
    ----------
    log:
        Called with one line per epoch; ``None`` keeps quiet.
    """
    # here, not at the top: lender nodes import this module (predict_proba) and nothing else
    # they run needs scikit-learn, about 1.5 s of import in every simulation worker
    from sklearn.metrics import roc_auc_score

    from models.binned_scorecard import decay_groups

    check_train(settings)
    batch_size = batch_for(len(x_train), settings)
    watch = EarlyStopping(settings)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    start_at_base_rate(model, float(yt.mean()))
    optimizer = torch.optim.Adam(decay_groups(model, settings.weight_decay, len(xt)),
                                 lr=settings.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        order = torch.randperm(len(xt), generator=generator)
        total = _one_epoch(model, optimizer, loss_fn, (xt, yt), order, batch_size)
        result.rows_seen += len(order)
        p_val = predict_proba(model, x_val)
        val_auc = float(roc_auc_score(y_val, p_val))
        improved = watch.observe(epoch, y_val, p_val, val_auc)
        if improved:
            result.best_epoch, result.best_val_auc = epoch, val_auc
            best_state = copy.deepcopy(model.state_dict())
        result.history.append({"epoch": epoch, "train_loss": total / len(order),
                               "val_auc": val_auc,
                               "val_log_loss": validation_log_loss(y_val, p_val)})
        if log is not None:
            log(f"epoch {epoch:3d}/{settings.epochs}  train_loss {total / len(order):.4f}  "
                f"val_auc {val_auc:.4f}{'  *' if improved else ''}")
        if settings.early_stopping and watch.should_stop(epoch):
            if log is not None:
                log(f"early stop: no better validation {settings.criterion.value} (averaged "
                    f"over {settings.smoothing} epochs) for {settings.patience} epochs")
            break
    result.seconds = time.perf_counter() - start
    if settings.early_stopping:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = settings.epochs
    return result
