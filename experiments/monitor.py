"""``credit-fl monitor <run dir> [monitor.<key>=<value> ...] [data overrides for the period]``.

Watches a vertical run's model on a later period (``data.period=2 data.shift=downturn``, or
``data=csv`` with the period's party files):

* each party, on its own rows, computes the characteristic stability index of each of its
  columns and of its embedding's norm against the bins frozen from its training rows in its
  bundle; only the indices and the merged bins' counts leave it (``query.monitor``);
* the lender compares the model's scores with the run's test predictions: the population
  stability index of the scores and of the grade mix; with outcomes, AUC, KS, calibration and
  default rate by grade; without, a label-free estimate of AUC and default rate from the
  calibrated probabilities (:mod:`models.performance_estimate`), with its assumption.

Indices below ``monitor.watch`` (0.1) are ``stable``, below ``monitor.act`` (0.25) ``watch``,
else ``act``, per column, per party and for the model. Writes ``monitor.json``, ``report.md``
and ``monitor.png`` to ``monitor.out`` (default ``<run dir>/monitoring/<date>_<time>``), whole
or not at all. Exit 1 when anything is ``act`` (a scheduler's alert), 2 on bad input.
Several periods (``data.period=2,3,4``, :mod:`experiments.monitor_series`) give a series: one
entry per period in ``monitor.json``, a table and ``monitor_series.png`` over the periods. A
party whose rows trained under DP noises its counts and charges ``monitor.epsilon``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError, CreditFLError
from credit_data.settings import LABEL_HOLDER, Source
from credit_data.stability import status_of
from credit_fl.monitoring import (
    MonitorSettings,
    check_run_dir,
    model_section,
    party_indices,
)
from experiments.options import take_options
from federation.storage import write_atomic

USAGE = ("usage: credit-fl monitor <run dir> [monitor.watch=0.1] [monitor.act=0.25] "
         "[monitor.min_count=50] [monitor.epsilon=1.0] [monitor.out=<dir>] [data.period=2 "
         "data.shift=downturn | data.period=2,3,4 data.shift=none,downturn,concept | "
         "data=csv data.parties.<party>.path=<file> ...]")
STATUSES = ("stable", "watch", "act")


def split_args(args: list[str]) -> tuple[MonitorSettings, list[str]]:
    """Take the ``monitor.*`` options out of ``args``; the rest are the run's overrides."""
    settings, rest = take_options(args, "monitor", MonitorSettings)
    if not 0 < settings.watch < settings.act:
        raise ConfigError(f"monitor.watch ({settings.watch}) must lie in (0, monitor.act "
                          f"({settings.act}))")
    if settings.min_count < 1:
        raise ConfigError(f"monitor.min_count must be at least 1, got {settings.min_count}")
    if not settings.epsilon > 0:
        raise ConfigError(f"monitor.epsilon must be positive, got {settings.epsilon}")
    return settings, rest


def worst(statuses: list[str]) -> str:
    """Return the most severe of ``statuses`` (``stable`` when there are none)."""
    return max(statuses, key=STATUSES.index, default="stable")


def _labels(population: Any, label: str, ids: pd.Series) -> pd.Series | None:
    """Return the period's outcomes at the lender, where it has them (synthetic periods do)."""
    labels = population.tables[LABEL_HOLDER].labels
    if labels is None:
        return None
    return labels[label].reindex(ids.astype(str).to_numpy())


def _load_period(run_dir: Path, model: dict[str, Any], overrides: list[str],
                 options: MonitorSettings
                 ) -> tuple[Any, Any, tuple[dict[str, Any], dict[str, float | None]],
                            dict[str, Any] | None]:
    """Return one period's settings, population, released indices and consent counts.

    The consent counts are the parties' for `monitoring` (None without consent records).
    """
    from credit_data.consent import MONITORING
    from credit_data.loading import load_population
    from credit_fl.batch_scoring import load_applicants
    from credit_fl.config import settings_of
    from credit_fl.consent_results import consent_summary, consented_population
    from federation.run_settings import Engine
    from federation.settings import Mode

    settings = settings_of(run_dir, "explain.enabled=false", *overrides)  # scores only
    if settings.federation.mode is not Mode.vertical:
        raise ConfigError(f"{run_dir}: monitoring watches a vertical model's parties; this run "
                          f"is {settings.federation.mode.value}")
    # the nodes run in this process (no Ray): monitoring is one message per party
    settings = dataclasses.replace(settings, verbose=False, engine=Engine.in_process)
    synthetic = settings.data.source is Source.synthetic
    # generated once (with the lender's outcomes), or each party's file read and checked
    population = (load_population(settings.data, settings.seed, labels=True) if synthetic
                  else load_applicants(settings))  # names an empty or malformed period first
    parties = [p for p in settings.federation.parties
               if p in population.tables and p in model["bundles"]]
    # each party's customers without `monitoring` consent are unknown to it (docs/consent.md)
    consent = consent_summary(settings.data, population, parties, MONITORING)
    population = consented_population(settings.data, population, MONITORING)
    return settings, population, party_indices(run_dir, model, population, parties, options,
                                                settings.privacy), consent


def _period_report(run_dir: Path, settings: Any, population: Any,
                   released: tuple[dict[str, Any], dict[str, float | None]],
                   consent: dict[str, Any] | None, manifest: dict[str, Any],
                   options: MonitorSettings, stage: Path) -> dict[str, Any]:
    """Return one period's entry: its parties' statuses, the model's section, what left."""
    from credit_data.consent import MONITORING
    from credit_fl.batch_scoring import score_bundles
    from credit_fl.monitoring import frames_of

    synthetic = settings.data.source is Source.synthetic
    scores, _ = score_bundles(run_dir, settings, stage, frames=frames_of(
        population, settings.data.id_column) if synthetic else None, purpose=MONITORING)
    shutil.rmtree(stage, ignore_errors=True)
    reference = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    indices, epsilon = released
    party_report = {}
    for party, columns in indices.items():
        for value in columns.values():
            value["status"] = status_of(float(value["index"]), options.watch, options.act)
        party_report[party] = {"status": worst([c["status"] for c in columns.values()]),
                               "columns": columns}
    inputs_act = any(p["status"] == "act" for p in party_report.values())
    labels = _labels(population, settings.data.label, scores["id"])
    section = model_section(reference, scores, labels, manifest, options, inputs_act)
    return {"period": {"data": settings.data.name, "source": settings.data.source.value,
                       "period": settings.data.period if synthetic else None,  # files: theirs
                       "shift": settings.data.shift.value,
                       "applicants": len(scores)},
            "parties": party_report, "model": section,
            "status": worst([section["status"], *(p["status"] for p in party_report.values())]),
            "released": {p: {"indices": len(c), "counts": sum(len(v["counts"])
                                                               for v in c.values()),
                             "epsilon": epsilon.get(p)}
                         for p, c in indices.items()},
            "consent": consent}


def monitor_run(run_dir: Path, args: list[str]) -> tuple[Path, dict[str, Any]]:
    """Monitor ``run_dir``'s model on the periods ``args`` name; return its directory, report.

    Several periods (``data.period=2,3,4``) give one entry each in ``series``; the report's
    ``period``, ``parties`` and ``model`` are the last period's, its ``status`` the worst of all
    and ``released`` the sum over the periods.
    """
    from experiments.monitor_series import period_overrides, plot_series
    from models.bundle import read_manifest

    start = time.perf_counter()
    options, rest = split_args(args)
    runs, overrides = period_overrides(rest)
    run_dir = run_dir.resolve()
    model = check_run_dir(run_dir)
    out = Path(options.out) if options.out else (
        run_dir / "monitoring" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    if out.exists():
        raise ConfigError(f"monitor.out={out} exists; name a new directory")
    # every period's data checked and every party asked before anything is written
    loaded = []
    for run in runs:
        loaded.append(_load_period(run_dir, model, [*overrides, *run], options))
        if len(runs) > 1 and loaded[-1][0].data.source is not Source.synthetic:
            raise ConfigError(f"data.period names {len(runs)} periods, but with data="
                              f"{loaded[-1][0].data.name} a period is its party files: "
                              "monitor one period's files per command")
    manifest = read_manifest(run_dir / model["bundles"][LABEL_HOLDER])
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        series = [_period_report(run_dir, settings, population, indices, consent, manifest,
                                 options, stage / f"scoring-{k}")
                  for k, (settings, population, indices, consent) in enumerate(loaded)]
        latest = series[-1]
        from experiments.monitor_series import released_over

        released = released_over(series)
        report = {
            "run": str(run_dir), "model_id": manifest["model_id"],
            "period": latest["period"],
            "thresholds": dataclasses.asdict(options) | {"out": None},
            "parties": latest["parties"], "model": latest["model"],
            "status": worst([e["status"] for e in series]),
            "released": released, "consent": latest["consent"], "series": series,
            "wall_seconds": time.perf_counter() - start}
        write_atomic(stage / "monitor.json", json.dumps(report, indent=2) + "\n")
        write_atomic(stage / "report.md", render(report))
        plot_indices(report, stage / "monitor.png")
        if len(series) > 1:
            plot_series(report, stage / "monitor_series.png")
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out, report


def plot_indices(report: dict[str, Any], path: Path) -> None:
    """Plot each column's index against the thresholds and, with a model section, the grades."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values, colours = [], [], []
    palette = {"stable": "tab:green", "watch": "tab:orange", "act": "tab:red"}
    for party, entry in report["parties"].items():
        for column, value in entry["columns"].items():
            names.append(f"{party}.{column}")
            values.append(value["index"])
            colours.append(palette[value["status"]])
    model = report["model"]
    fig, axes = plt.subplots(1, 2 if model else 1, figsize=(13, max(4, 0.22 * len(names))),
                             gridspec_kw={"width_ratios": [2, 1]} if model else None,
                             squeeze=False)
    left = axes[0][0]
    left.barh(names, values, color=colours)
    for threshold in (report["thresholds"]["watch"], report["thresholds"]["act"]):
        left.axvline(threshold, color="grey", linestyle="--", linewidth=0.8)
    left.set_xlabel("stability index against training")
    left.invert_yaxis()
    if model:
        right = axes[0][1]
        mix = model["grade_mix"]
        grades = list(mix["training"])
        x = np.arange(len(grades))
        right.bar(x - 0.2, [mix["training"][g] for g in grades], 0.4, label="training")
        right.bar(x + 0.2, [mix["period"][g] for g in grades], 0.4, label="period")
        right.set_xticks(x, grades)
        right.set_title(f"grade mix (PSI {model['grade_psi']:.3f})")
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render(report: dict[str, Any]) -> str:
    """Render report.md: the verdict, each party's columns, the model."""
    from experiments.monitor_series import series_lines

    m = report["model"]
    period = report["period"]
    lines = [f"# Monitoring {report['run']}", ""]
    if len(report["series"]) > 1:
        lines += [f"{len(report['series'])} periods: **{report['status']}** (the worst of "
                  "them); below them, the last period in detail.", "", *series_lines(report)]
    what = (f"Period {period['period']} (shift {period['shift']}, {period['data']})"
            if period["period"] is not None else f"The period's files ({period['data']})")
    lines += [f"{what}, {period['applicants']:,} applicants: "
              f"**{report['series'][-1]['status']}**.", "",
              "![indices against the thresholds; the grade mix](monitor.png)", "",
              "## Parties (each index computed at the party; only indices and counts left it)",
             "", "| party | column | index | rows | status |", "|---|---|---:|---:|---|"]
    for party, entry in report["parties"].items():
        for column, value in entry["columns"].items():
            lines.append(f"| {party} | {column} | {value['index']:.4f} | {value['rows']:,} | "
                         f"{value['status']} |")
    noised = {p: r["epsilon"] for p, r in report["series"][-1]["released"].items()
              if r.get("epsilon") is not None}
    if noised:
        lines += ["", "Under their DP budgets these parties noised their counts (Laplace, drawn "
                  "from the OS at the party) and charged their ledgers: " + ", ".join(
                      f"{p} epsilon {e:g}" for p, e in noised.items()) + "."]
    lines += ["", "## Model", "", *model_lines(m)]
    return "\n".join(lines) + "\n"


def model_lines(m: dict[str, Any]) -> list[str]:
    """Return report.md's lines of a model section (PSIs, the estimate, the outcomes)."""
    e = m["estimate"]
    lines = [f"Score PSI {m['score_psi']:.4f}, grade-mix PSI {m['grade_psi']:.4f}: "
             f"**{m['status']}**.", "",
             f"Label-free estimate: AUC {e['auc']:.4f}, default rate "
             f"{e['default_rate']:.4f} (training: AUC {m['training']['auc']:.4f}, default "
             f"rate {m['training']['default_rate']:.4f}). Assumption: {e['assumption']}.", "",
             ("Trusted: " if e["trusted"] else "**Cannot be trusted**: ") + e["why"] + "."]
    if m["outcomes"] is not None:
        o = m["outcomes"]
        lines += ["", f"With outcomes: AUC {o['auc']:.4f}, KS {o['ks']:.4f}, ECE {o['ece']:.4f}, "
                  f"default rate {o['default_rate']:.4f}.", "",
                  "| grade | training default rate | period default rate |", "|---|---:|---:|"]
        for grade, rate in o["default_rate_by_grade"].items():
            before = m["training"]["default_rate_by_grade"].get(grade)
            lines.append(f"| {grade} | {_rate(before)} | {_rate(rate)} |")
    return lines


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    """Monitor a run on a period; exit 1 on ``act``, 2 on bad input."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        print(USAGE)
        return 0 if args else 2
    import logging

    from experiments.console import quiet_console

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    quiet_console()
    try:
        out, report = monitor_run(Path(args[0]), args[1:])
    except CreditFLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text())
    print(f"Monitoring: {out / 'monitor.json'}")
    return 1 if report["status"] == "act" else 0


__all__ = ["main", "model_lines",
           "monitor_run", "plot_indices", "split_args", "worst"]

if __name__ == "__main__":
    sys.exit(main())
