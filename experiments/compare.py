"""Gather the runs of sweeps into a privacy-utility table and plot.

``python -m experiments.compare <dir> [<dir> ...] [--out <dir>]`` reads every ``results.json``
(and every ``failed.json`` of a failed sweep job) under the given directories and writes, into
``--out`` (default: the first directory):

- ``runs.csv``: one row per run (series, epsilon, seed, AUC, KS, Brier, audit figures);
- ``summary.csv`` and ``summary.md``: mean and standard deviation over seeds, per series and
  epsilon, with the references and the failed jobs;
- ``privacy_utility.png``: test AUC against the epsilon spent (the largest party total; log axis,
  error bars over seeds), one line per mode and mechanism, the references as horizontal lines;
  and the membership attack's AUC (and, in vertical mode, the label-leakage attack's) against it;
  with runs that ran the one-run canary audit (``audit.canaries``), a third panel: its epsilon
  lower bound against the epsilon spent, under the line ``bound = spent``.

A series is a mode and its mechanisms ("horizontal DP-SGD", "vertical label DP + DP-SGD", ...);
its runs are grouped by the budget they were given (``epsilon``: the largest of its mechanisms'
budgets), and the table and the plot show what they spent: the largest party total
(``epsilon_spent``, results.json's ``privacy.epsilon``; the lender of a default vertical run
spends label DP's 3 and DP-SGD's 3, about 6).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from credit_data.errors import CompareError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from federation.storage import atomic_path, write_atomic  # noqa: E402

METRICS = ("auc", "ks", "brier")
SPENT = "epsilon (largest party total)"
MECHANISM_NAMES = {"dpsgd": "DP-SGD", "central": "central DP", "label_dp": "label DP",
                   "embedding_noise": "embedding noise"}
REFERENCE_NAMES = {"centralized": "centralized", "lender_only": "lender only",
                   "non_private": "non-private", "logistic_regression": "logistic regression",
                   "logistic_regression_lender": "logistic regression, lender's columns"}



def series_of(results: dict[str, Any]) -> str | None:
    """Name the mode and mechanisms of a private run; None for a run without privacy.

    >>> series_of({"mode": "vertical", "privacy": {"mechanism": "label_dp+dpsgd"}})
    'vertical label DP + DP-SGD'
    >>> series_of({"mode": "horizontal", "privacy": {"mechanism": "central"}})
    'horizontal central DP'
    """
    privacy = results.get("privacy")
    if privacy is None or results["mode"] not in ("horizontal", "vertical"):
        return None
    names = [MECHANISM_NAMES.get(m, m) for m in privacy["mechanism"].split("+")]
    return f"{results['mode']} {' + '.join(names)}"


def budget_of(results: dict[str, Any]) -> float:
    """Return the epsilon a private run was given: the largest of its mechanisms' budgets."""
    config = results["config"]["privacy"]
    mechanisms = results["privacy"]["mechanism"].split("+")
    budgets = []
    if "dpsgd" in mechanisms or "central" in mechanisms:
        budgets.append(config["target_epsilon"])
    if "label_dp" in mechanisms:
        budgets.append(config["label_epsilon"])
    if "embedding_noise" in mechanisms:
        budgets.append(config["embedding_epsilon"])
    return float(max(budgets))


def largest_party_total(privacy: dict[str, Any]) -> float:
    """Return a run's headline epsilon: the largest party total (each party's mechanisms composed).

    A results.json written before the headline was the largest party total (its ``epsilon`` the
    largest ledger entry) is read from its ``party_totals``; central DP's headline is its
    record-level entry.

    >>> largest_party_total({"epsilon": 3.0, "party_totals": {"lender": {"epsilon": 6.0},
    ...                                                       "bureau": {"epsilon": 3.0}}})
    6.0
    """
    totals = privacy.get("party_totals")
    if totals:
        return float(max(t["epsilon"] for t in totals.values()))
    return float(privacy["epsilon"])


def _reference_name(results: dict[str, Any]) -> str:
    mode = results["mode"]
    return {"centralized": "centralized", "local": "lender_only"}.get(mode, "non_private")


def run_row(path: Path) -> dict[str, Any]:
    """One row of runs.csv from a run's results.json."""
    try:
        results = json.loads(path.read_text())
        row: dict[str, Any] = {"run": str(path.parent), "status": "ok",
                               "mode": results["mode"], "seed": results["seed"],
                               **{k: results["metrics"]["test"][k] for k in METRICS}}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CompareError(f"{path}: not a run's results.json ({exc})") from exc
    series = series_of(results)
    row["series"] = series if series is not None else f"reference: {_reference_name(results)}"
    if series is not None:
        row["epsilon"] = budget_of(results)
        row["epsilon_spent"] = largest_party_total(results["privacy"])
    audit = results.get("audit") or {}
    membership = audit.get("membership")
    if membership:
        row["attack_auc"] = membership["attack_auc"]
        row["empirical_epsilon_lower_bound"] = membership["epsilon_lower_bound"]
        theory = membership["theoretical_epsilon"]
        row["theoretical_epsilon"] = math.inf if theory is None else theory
    one_run = audit.get("one_run")
    if one_run:  # the canary audit's bound, and the twin's own accounted epsilon
        row["one_run_epsilon_lower_bound"] = one_run["epsilon_lower_bound"]
        accounted = one_run["accounted_epsilon"]
        row["one_run_accounted_epsilon"] = math.inf if accounted is None else accounted
    if audit.get("rmia"):
        row["rmia_tpr_at_0.1%_fpr"] = audit["rmia"]["tpr_at_fpr"]["0.001"]["tpr"]
    leakage = audit.get("label_leakage")
    if leakage:
        row["label_leakage_auc"] = max(v["attack_auc"] for v in leakage["parties"].values())
    for name, ref in (results.get("references") or {}).items():
        row[f"ref_{name}_auc"] = ref["auc"]
        ref_audit = ref.get("audit") or {}
        if ref_audit.get("membership"):
            row[f"ref_{name}_attack_auc"] = ref_audit["membership"]["attack_auc"]
        if ref_audit.get("label_leakage"):
            row[f"ref_{name}_label_leakage_auc"] = max(
                v["attack_auc"] for v in ref_audit["label_leakage"]["parties"].values())
    return row


def failed_row(path: Path) -> dict[str, Any]:
    """One row of runs.csv from a failed sweep job's failed.json."""
    try:
        failure = json.loads(path.read_text())
        return {"run": str(path.parent), "status": "failed", "error": failure["error"]}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CompareError(f"{path}: not a failed job's failed.json ({exc})") from exc


def gather(dirs: list[Path]) -> pd.DataFrame:
    """Read every run under ``dirs`` (with a progress bar) into one frame."""
    files: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            raise CompareError(f"{d}: no such directory")
        files += sorted(d.rglob("results.json")) + sorted(d.rglob("failed.json"))
    if not files:
        raise CompareError(f"no results.json or failed.json under {', '.join(map(str, dirs))}")
    rows = [run_row(f) if f.name == "results.json" else failed_row(f)
            for f in tqdm(files, desc="reading runs", unit="run", file=sys.stderr)]
    return pd.DataFrame(rows)


def references(runs: pd.DataFrame, metric: str = "auc") -> dict[str, tuple[float, float]]:
    """Mean and standard deviation over seeds of each reference's ``metric``.

    From the runs' own ``references`` blocks (one per seed) and from runs without privacy;
    ``metric`` is ``auc``, ``attack_auc`` or ``label_leakage_auc``.
    """
    ok = runs[runs["status"] == "ok"]
    out = {}
    for name in REFERENCE_NAMES:
        values = []
        column = f"ref_{name}_{metric}"
        if column in ok:
            values += list(ok.dropna(subset=[column]).groupby("seed")[column].first())
        if metric in ok:
            values += list(ok.loc[ok["series"] == f"reference: {name}", metric].dropna())
        if values:
            s = pd.Series(values, dtype=float)
            out[name] = (float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else 0.0)
    return out


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds, per series and epsilon."""
    private = runs[(runs["status"] == "ok") & runs["series"].notna()
                   & ~runs["series"].astype(str).str.startswith("reference")]
    if private.empty:
        return pd.DataFrame()
    columns = [c for c in ("auc", "ks", "brier", "epsilon_spent", "theoretical_epsilon",
                           "empirical_epsilon_lower_bound", "one_run_epsilon_lower_bound",
                           "one_run_accounted_epsilon", "rmia_tpr_at_0.1%_fpr", "attack_auc",
                           "label_leakage_auc")
               if c in private]
    grouped = private.groupby(["series", "epsilon"])
    table = grouped[columns].agg(["mean", "std"])
    table.columns = [f"{c}_{stat}" for c, stat in table.columns]
    table.insert(0, "seeds", grouped.size())
    return table.reset_index().sort_values(["series", "epsilon"])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.4f}")
    return str(value)


def markdown(summary: pd.DataFrame, refs: dict[str, tuple[float, float]],
             attack_refs: dict[str, dict[str, tuple[float, float]]], runs: pd.DataFrame) -> str:
    """summary.md: the table a reader looks at, the references and the failed jobs."""
    lines = ["# Privacy-utility comparison", ""]
    if not summary.empty:
        shown = [("series", "series"), ("epsilon", "budget per mechanism"), ("seeds", "seeds"),
                 ("auc", "AUC"), ("ks", "KS"), ("brier", "Brier"),
                 ("epsilon_spent", SPENT), ("theoretical_epsilon", "theoretical eps"),
                 ("empirical_epsilon_lower_bound", "empirical eps lower bound"),
                 ("one_run_epsilon_lower_bound", "one-run canary eps lower bound"),
                 ("one_run_accounted_epsilon", "canary twin accounted eps"),
                 ("rmia_tpr_at_0.1%_fpr", "RMIA TPR at 0.1% FPR"),
                 ("attack_auc", "MIA AUC"), ("label_leakage_auc", "label-leakage AUC")]
        header, cells = [], []
        for key, label in shown:
            if key in summary:
                header.append(label)
                cells.append([f"{v:g}" if key == "epsilon" else _fmt(v) for v in summary[key]])
            elif f"{key}_mean" in summary:
                header.append(f"{label} (mean ± sd)")
                cells.append([f"{_fmt(m)} ± {_fmt(s)}" for m, s in
                              zip(summary[f"{key}_mean"], summary[f"{key}_std"], strict=True)])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in zip(*cells, strict=True)]
    else:
        lines.append("No private runs found.")
    if refs:
        lines += ["", "References (test AUC, mean ± sd over seeds): "
                  + "; ".join(f"{REFERENCE_NAMES[k]} {m:.4f} ± {s:.4f}"
                              for k, (m, s) in refs.items()) + "."]
    for attack, by_reference in attack_refs.items():
        if by_reference:
            lines += ["", f"Attack AUC of the {attack} attack on the references: "
                      + "; ".join(f"{REFERENCE_NAMES[k]} {m:.4f} ± {s:.4f}"
                                  for k, (m, s) in by_reference.items()) + "."]
    failed = runs[runs["status"] == "failed"]
    if not failed.empty:
        lines += ["", f"## Failed jobs ({len(failed)})", ""]
        lines += [f"- `{r.run}`: {r.error}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n"


def plot(summary: pd.DataFrame, refs: dict[str, tuple[float, float]],
         attack_refs: dict[str, dict[str, tuple[float, float]]], path: Path) -> None:
    """privacy_utility.png: AUC against epsilon, and the attacks' AUC against epsilon.

    ``attack_refs`` maps an attack (``membership``, ``label leakage``) to its references'
    attack AUC (the non-private run's: what the attack gets without protection).
    """
    audited = (not summary.empty and "one_run_epsilon_lower_bound_mean" in summary
               and summary["one_run_epsilon_lower_bound_mean"].notna().any())
    fig, axes = plt.subplots(1, 3 if audited else 2, figsize=(19 if audited else 13, 5))
    left, right = axes[0], axes[1]
    for series, group in summary.groupby("series") if not summary.empty else []:
        x = group["epsilon_spent_mean"]  # what the runs spent: the largest party total
        left.errorbar(x, group["auc_mean"], yerr=group["auc_std"].fillna(0.0),
                      marker="o", capsize=3, label=series)
        if "attack_auc_mean" in group:
            right.errorbar(x, group["attack_auc_mean"],
                           yerr=group["attack_auc_std"].fillna(0.0), marker="o", capsize=3,
                           label=f"{series}: membership")
        if "label_leakage_auc_mean" in group and group["label_leakage_auc_mean"].notna().any():
            right.errorbar(x, group["label_leakage_auc_mean"],
                           yerr=group["label_leakage_auc_std"].fillna(0.0), marker="s",
                           linestyle="--", capsize=3, label=f"{series}: label leakage")
        if audited and group["one_run_epsilon_lower_bound_mean"].notna().any():
            axes[2].errorbar(x, group["one_run_epsilon_lower_bound_mean"],
                             yerr=group["one_run_epsilon_lower_bound_std"].fillna(0.0),
                             marker="o", capsize=3, label=f"{series}: one-run canary bound")
    _reference_lines(left, right, refs, attack_refs)
    panels = [(left, "Utility against privacy budget", "test AUC"),
              (right, "Empirical attacks", "attack AUC")]
    if audited:
        spent = summary["epsilon_spent_mean"].to_numpy(dtype=float)
        spent = spent[np.isfinite(spent) & (spent > 0)]
        if len(spent):  # a sound run's bound stays under its spent epsilon
            line = np.geomspace(float(spent.min()), float(spent.max()), 50)
            axes[2].plot(line, line, color="grey", linestyle="--", label="bound = spent")
        panels.append((axes[2], "Audited epsilon (one-run canaries, 95%)",
                       "epsilon lower bound"))
    for ax, title, ylabel in panels:
        ax.set_xscale("log")
        ax.set_xlabel(f"{SPENT}, mean over seeds")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)



REFERENCE_STYLES: dict[str, Any] = {
    "centralized": ":", "lender_only": "-.", "non_private": "--",
    "logistic_regression": (0, (1, 3)), "logistic_regression_lender": (0, (5, 5))}
"""The line style of each reference in privacy_utility.png."""


def _reference_lines(left: Any, right: Any, refs: dict[str, tuple[float, float]],
                     attack_refs: dict[str, dict[str, tuple[float, float]]]) -> None:
    """Draw the references' AUC (left) and their attack AUC and chance (right) as lines."""
    for name, (mean, _) in refs.items():
        left.axhline(mean, color="grey", linestyle=REFERENCE_STYLES[name],
                     label=f"{REFERENCE_NAMES[name]} ({mean:.3f})")
    for attack, by_reference in attack_refs.items():
        for name, (mean, _) in by_reference.items():
            right.axhline(mean, color="black" if attack == "membership" else "tab:red",
                          linestyle=REFERENCE_STYLES[name], alpha=0.6,
                          label=f"{attack}, {REFERENCE_NAMES[name]} ({mean:.3f})")
    right.axhline(0.5, color="grey", linestyle=":", label="chance (0.5)")

def compare(dirs: list[Path], out: Path | None = None) -> dict[str, Path]:
    """Write runs.csv, summary.csv, summary.md and privacy_utility.png; return their paths."""
    runs = gather(dirs)
    summary = summarize(runs)
    refs = references(runs)
    attack_refs = {"membership": references(runs, "attack_auc"),
                   "label leakage": references(runs, "label_leakage_auc")}
    out = out or dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("runs.csv", "summary.csv", "summary.md",
                                           "privacy_utility.png")}
    write_atomic(paths["runs.csv"], runs.to_csv(index=False))
    write_atomic(paths["summary.csv"], summary.to_csv(index=False))
    write_atomic(paths["summary.md"], markdown(summary, refs, attack_refs, runs))
    plot(summary, refs, attack_refs, paths["privacy_utility.png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m experiments.compare <dir> [<dir> ...] [--out <dir>]``."""
    parser = argparse.ArgumentParser(prog="python -m experiments.compare",
                                     description="Privacy-utility table and plot of sweeps.")
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write (default: the first directory)")
    args = parser.parse_args(argv)
    try:
        paths = compare(args.dirs, args.out)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(paths["summary.md"].read_text())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
