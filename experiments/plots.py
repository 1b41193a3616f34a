"""plots.png: ROC curve, calibration curve and learning curve of one run.

Drawn from the test split's score summary (:class:`models.metrics.ScoreSummary`), so a
deployed coordinator that never sees a row draws the same plots as a simulation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from credit_fl.explanation_report import TOP  # noqa: E402
from federation.storage import atomic_path  # noqa: E402
from models.metrics import ScoreSummary  # noqa: E402


def write_plots(path: Path, test: ScoreSummary, history: list[dict[str, Any]],
                title: str) -> None:
    """Draw the three panels and move the PNG into place only once it is complete."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    fpr, tpr = test.roc()
    axes[0].plot(fpr, tpr, label=f"test (AUC {test.metrics()['auc']:.4f})")
    axes[0].plot([0, 1], [0, 1], ls=":", c="grey")
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate")
    axes[0].legend(loc="lower right")
    axes[0].set_title("ROC (test)")
    mean_score, observed = test.deciles()
    axes[1].plot(mean_score, observed, marker="o", label="test")
    axes[1].plot([0, 1], [0, 1], ls=":", c="grey", label="perfectly calibrated")
    axes[1].set_xlabel("mean predicted default probability")
    axes[1].set_ylabel("observed default rate")
    axes[1].legend(loc="upper left")
    top = max(float(mean_score.max()), float(observed.max())) * 1.1
    axes[1].set_xlim(0, top)
    axes[1].set_ylim(0, top)
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
    save_figure(fig, title, path)


def save_figure(fig: Any, title: str, path: Path) -> None:
    """Title, lay out and write ``fig`` to ``path`` whole (never half-written), then close it."""
    fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def plot_explanations(scoring: dict[str, Any], path: Path) -> Path | None:
    """Plot each party's global explanation (mean |points| of its strongest columns)."""
    tables = (scoring.get("explanation") or {}).get("global") or {}
    if not tables:
        return None
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.4), squeeze=False)
    for ax, (party, table) in zip(axes[0], tables.items(), strict=True):
        rows = table[:TOP][::-1]
        ax.barh([str(r["description"]) for r in rows], [r["mean_abs_points"] for r in rows],
                color=["#b2182b" if r["mean_points"] < 0 else "#2166ac" for r in rows])
        ax.set_title(f"{party} (red: lowers the score on average)", fontsize=9)
        ax.set_xlabel("mean |points|")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
