"""Mini-batch training with early stopping on validation AUC.

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
from models.networks import output_layer
from models.settings import TrainSettings


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
              ("patience", settings.patience >= 1)]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"train.{key} is out of range: {getattr(settings, key)}")


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

    check_train(settings)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    start_at_base_rate(model, float(yt.mean()))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr,
                                 weight_decay=settings.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for i in range(0, len(order), settings.batch_size):
            batch = order[i:i + settings.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        result.rows_seen += len(order)
        val_auc = float(roc_auc_score(y_val, predict_proba(model, x_val)))
        improved = not val_auc <= result.best_val_auc
        if improved:
            result.best_epoch, result.best_val_auc = epoch, val_auc
            best_state = copy.deepcopy(model.state_dict())
        result.history.append({"epoch": epoch, "train_loss": total / len(order),
                               "val_auc": val_auc})
        if log is not None:
            log(f"epoch {epoch:3d}/{settings.epochs}  train_loss {total / len(order):.4f}  "
                f"val_auc {val_auc:.4f}{'  *' if improved else ''}")
        if settings.early_stopping and epoch - result.best_epoch >= settings.patience:
            if log is not None:
                log(f"early stop: no better validation AUC for {settings.patience} epochs")
            break
    result.seconds = time.perf_counter() - start
    if settings.early_stopping:
        model.load_state_dict(best_state)
    else:
        result.best_epoch = settings.epochs
    return result
