"""The audit benchmark's figure: what the audits show against the epsilon a run accounts.

Left: the one-run canary bound (DP-SGD membership and, under label DP, labels) against the
accounted epsilon, with the line ``bound = accounted`` a sound mechanism never crosses.
Right: RMIA's and the loss-threshold attack's TPR at 0.1% FPR (Clopper-Pearson intervals), with
the FPR itself (what an attack that learns nothing gets). A run without DP sits at the right
edge, marked "no DP".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.plots import save_figure  # noqa: E402


def _positions(rows: list[dict[str, Any]]) -> tuple[list[float], list[str], float]:
    """Return each row's x (its target epsilon; no DP one step past the largest) and label."""
    finite = [r["target_epsilon"] for r in rows if r["target_epsilon"] is not None]
    no_dp = (max(finite) * 2.5) if finite else 1.0
    xs = [no_dp if r["target_epsilon"] is None else r["target_epsilon"] for r in rows]
    labels = ["no DP" if r["target_epsilon"] is None else f"{r['target_epsilon']:g}"
              for r in rows]
    return xs, labels, no_dp


def write_attack_figure(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Draw the two panels from the benchmark's rows and move the PNG into place when complete.

    Each row: ``target_epsilon`` (None: no DP), ``dpsgd_accounted`` and ``label_accounted``
    (None: none), ``one_run_bound``, ``label_bound`` (None: no label audit), and
    ``rmia_tpr``/``loss_tpr``: ``{"tpr", "tpr_interval"}`` at 0.1% FPR.
    """
    xs, labels, no_dp = _positions(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(xs, [r["one_run_bound"] for r in rows], marker="o",
              label="one-run bound, DP-SGD membership canaries")
    left.plot(xs, [r["dpsgd_accounted"] if r["dpsgd_accounted"] is not None else math.nan
                   for r in rows], marker="x", linestyle=":", color="tab:blue",
              label="DP-SGD accounted (twin)")
    if any(r["label_bound"] is not None for r in rows):
        left.plot(xs, [math.nan if r["label_bound"] is None else r["label_bound"] for r in rows],
                  marker="s", label="one-run bound, label canaries")
    top = max([x for x in xs if x != no_dp] + [1.0])
    line = np.geomspace(0.5, top, 50)
    left.plot(line, line, color="grey", linestyle="--",
              label="bound = accounted epsilon")
    left.set_ylabel("epsilon lower bound (95%)")
    left.set_title("One-run canary audit")
    for key, name, marker in (("rmia_tpr", "RMIA", "o"), ("loss_tpr", "loss threshold", "s")):
        tpr = [r[key]["tpr"] for r in rows]
        low = [r[key]["tpr"] - r[key]["tpr_interval"][0] for r in rows]
        high = [r[key]["tpr_interval"][1] - r[key]["tpr"] for r in rows]
        right.errorbar(xs, tpr, yerr=[low, high], marker=marker, capsize=3, label=name)
    right.axhline(0.001, color="grey", linestyle=":", label="FPR (0.1%): learns nothing")
    right.set_ylabel("TPR at 0.1% FPR (95% Clopper-Pearson)")
    right.set_yscale("symlog", linthresh=1e-4)
    right.set_ylim(bottom=0.0)
    right.set_title("Membership attacks on the final model")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.minorticks_off()
        ax.set_xlabel("target epsilon of the run")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, title, path)
