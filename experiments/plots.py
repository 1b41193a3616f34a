"""plots.png: ROC curve, calibration curve and learning curve of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import RocCurveDisplay  # noqa: E402

from federation.storage import atomic_path  # noqa: E402


def write_plots(path: Path, y_test: np.ndarray, p_test: np.ndarray,
                history: list[dict[str, Any]], title: str) -> None:
    """Draw the three panels and move the PNG into place only once it is complete."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    RocCurveDisplay.from_predictions(y_test, p_test, ax=axes[0], name="test")
    axes[0].plot([0, 1], [0, 1], ls=":", c="grey")
    axes[0].set_title("ROC (test)")
    CalibrationDisplay.from_predictions(y_test, p_test, n_bins=10, strategy="quantile",
                                        ax=axes[1], name="test")
    axes[1].set_title("Calibration (test, deciles)")
    step = "epoch" if history and "epoch" in history[0] else "round"
    epochs = [h[step] for h in history]
    # a deployed server has no validation rows: it plots the AUC pooled from the lenders
    key, name = (("val_auc", "validation AUC") if all("val_auc" in h for h in history)
                 else ("pooled_auc", "pooled lender AUC"))
    axes[2].plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", label=name)
    axes[2].set_xlabel(step)
    axes[2].set_ylabel(name)
    if any("train_loss" in h for h in history):  # under DP the training loss stays at home
        loss_axis = axes[2].twinx()
        loss_axis.plot(epochs, [h.get("train_loss", float("nan")) for h in history],
                       c="tab:orange", marker=".", label="train loss")
        loss_axis.set_ylabel("train loss")
    axes[2].set_title("Learning curve")
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
