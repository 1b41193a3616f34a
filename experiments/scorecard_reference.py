"""The scorecard's independent reference: scikit-learn's logistic regression on its one-hot bins.

The same bins the scorecard's encoders cut (:class:`models.binned_scorecard.BinLayout`, from
each party's encoded columns), every party's side by side, fitted by ``lbfgs`` on the training
rows (its ``C`` picked on the validation rows); its test AUC is what ``model=scorecard`` should
reach in every mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from credit_data.design import Design
from credit_data.split import TEST, TRAIN, VAL
from models.binned_scorecard import layout_of
from models.settings import ModelSettings

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
"""Inverse regularization strengths the reference picks from on the validation rows."""


def one_hot_bins(design: Design, parties: tuple[str, ...], model: ModelSettings) -> np.ndarray:
    """Every applicant's bins, the parties' blocks side by side."""
    blocks = []
    for party in parties:
        block = design.blocks[party]
        layout = layout_of(model, block.names, block.width)
        blocks.append(layout.one_hot(torch.as_tensor(block.values)).numpy())
    return np.concatenate(blocks, axis=1)


def binned_reference(design: Design, parties: tuple[str, ...], model: ModelSettings,
                     grid: tuple[float, ...] = C_GRID) -> dict[str, Any]:
    """Fit the reference on a design's bins; return its test AUC, its ``C``, the bins' count."""
    x = one_hot_bins(design, parties, model)
    return fitted_reference(x, design.y, design.split, grid) | {"parties": list(parties)}


def fitted_reference(x: np.ndarray, y: np.ndarray, split: np.ndarray,
                     grid: tuple[float, ...] = C_GRID) -> dict[str, Any]:
    """Fit the reference on bins ``x``; return its test AUC, its ``C`` and the bins' count.

    Its regularization ``C`` is the one of ``grid`` with the best validation AUC (as the
    scorecard's training keeps its best validation epoch), fitted on the training rows alone.
    """
    train, val, test = (split == s for s in (TRAIN, VAL, TEST))
    fits = {c: LogisticRegression(C=c, max_iter=5000).fit(x[train], y[train]) for c in grid}
    best = max(grid, key=lambda c: roc_auc_score(y[val], fits[c].predict_proba(x[val])[:, 1]))
    auc = roc_auc_score(y[test], fits[best].predict_proba(x[test])[:, 1])
    return {"auc": float(auc), "C": best, "bins": int(x.shape[1])}
