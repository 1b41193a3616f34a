"""``deploy monitor <run dir> [monitor.period=<file>[,<file>...]] [monitor.<key>=<value> ...]``.

Watches a deployed vertical run's model on a later period, each party at its own node
(:mod:`deployment.monitoring_node`): every node reads its period's rows from its own disk (the
file ``monitor.period`` names in its ``--periods-dir``, the same name at every node; without it
its ``--data``), and answers with the stability index of each of its columns and of its
embedding's norm against the bins frozen in the bundle it kept from that run, and the merged
bins' counts, nothing else; a node refuses unless its own config says ``--release-monitoring``,
and under a DP budget it noises its counts and charges its ledger (docs/monitoring.md).

Then the model's section, as in simulation: the period is scored through the parties (the
scores stay at the lender's node) and the lender's node sends its figures (score and grade-mix
PSI, grade mix, outcomes where its period file has them, else the label-free estimate); the
coordinator judges them against the thresholds. The lender's node withholds them without its
``--release-monitoring`` or under a DP budget, and ``model`` is then null, the reason in
``report.md``.

Several files (``monitor.period=q2.csv,q3.csv``) give a series, one Flower run per period
(each in the nodes' ledgers and audit logs under its own name, ``<name>-<k>``): one entry per
period in ``monitor.json``'s ``series``, as ``credit-fl monitor data.period=2,3`` gives.

The coordinator writes ``monitor.json`` (the keys of ``credit-fl monitor``'s, docs/
results-schema.md), ``report.md`` and ``monitor.png`` (``monitor_series.png`` for a series) to
``monitor.out`` (default ``<runs>/<model run>/monitoring/<name>``, beside the server's audit
log). ``period.source`` is ``deployment``, ``period.period`` the file the nodes read (null:
their ``--data``), ``shift`` null. Exit 1 when anything is ``act``, 2 on bad input or a refusal.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from credit_data.errors import ConfigError
from credit_data.stability import status_of
from credit_fl.config import config_of, settings_of
from credit_fl.monitoring import MonitorSettings, check_run_dir, judge
from deployment.coordinator import prepare, server_dir
from deployment.run_config import (
    COLUMNS,
    MODEL_RUN,
    MONITOR_REQUEST,
    RUN_NAME,
    RUN_SETTINGS,
    TASK,
)
from experiments.deploy.federation import (
    Federation,
    _flwr_run,
    check_matches_federation,
    check_nodes,
    own_run,
)
from experiments.monitor import (
    model_lines,
    plot_indices,
    split_args,
    worst,
)
from experiments.monitor_series import plot_series, released_over, series_lines
from federation.settings import Mode
from federation.storage import write_atomic

__all__ = ["monitor", "render", "split_period"]

PERIOD = "monitor.period="


def split_period(args: list[str]) -> tuple[list[str | None], list[str]]:
    """Take the periods (``monitor.period=<file>[,<file>...]``) out of ``args``.

    Without ``monitor.period`` one period, each node's ``--data`` (``[None]``). Any override
    but ``monitor.*`` is refused.

    >>> split_period(["monitor.period=2026-q3.csv", "monitor.act=0.3"])
    (['2026-q3.csv'], ['monitor.act=0.3'])
    >>> split_period(["monitor.period=q2.csv,q3.csv"])[0]
    ['q2.csv', 'q3.csv']
    """
    named = [a.removeprefix(PERIOD) for a in args if a.startswith(PERIOD)]
    rest = [a for a in args if not a.startswith(PERIOD)]
    other = [a for a in rest if not a.startswith("monitor.")]
    if other:
        raise ConfigError(f"deploy monitor: {other[0]!r}: each node reads its period's rows "
                          "from its own disk; name a file in the nodes' --periods-dir with "
                          "monitor.period=<file> (or none: each node's --data) and set only "
                          "monitor.* options")
    if len(named) > 1:
        raise ConfigError("deploy monitor: give monitor.period once (several periods: "
                          "monitor.period=<file>,<file>, the same names at every node)")
    if not named:
        return [None], rest
    periods: list[str | None] = [p.strip() for p in named[0].strip("[]").split(",")]
    if not all(periods):
        raise ConfigError(f"deploy monitor: {named[0]!r}: an empty file name in monitor.period")
    if len(set(periods)) != len(periods):
        raise ConfigError(f"deploy monitor: {named[0]!r} names a file twice")
    return periods, rest


def _parties(found: dict[str, Any], options: MonitorSettings) -> dict[str, Any]:
    out = {}
    for party, columns in found["parties"].items():
        for value in columns.values():
            value["status"] = status_of(float(value["index"]), options.watch, options.act)
        out[party] = {"status": worst([c["status"] for c in columns.values()]),
                      "columns": columns}
    return out


def _entry(found: dict[str, Any], period: str | None, data: str,
           options: MonitorSettings) -> tuple[dict[str, Any], str | None]:
    """One period's entry of ``monitor.json`` from what the server received; why no model."""
    parties = _parties(found, options)
    inputs_act = any(p["status"] == "act" for p in parties.values())
    model = None if found.get("model") is None else judge(
        found["model"], watch=options.watch, act=options.act, inputs_act=inputs_act)
    released = {p: {"indices": len(c), "counts": sum(len(v["counts"]) for v in c.values()),
                    "epsilon": found["epsilon"].get(p)} for p, c in found["parties"].items()}
    return {"period": {"data": data, "source": "deployment", "period": period, "shift": None,
                       "applicants": found.get("applicants")},
            "parties": parties, "model": model,
            "status": worst([*(p["status"] for p in parties.values()),
                             *([model["status"]] if model else [])]),
            "released": released, "consent": None}, found.get("model_withheld")


def monitor(directory: Path, model_run: Path, args: list[str],
            timeout: float = 3600) -> tuple[Path, dict[str, Any]]:
    """Monitor ``model_run`` (a vertical run of this federation) at its nodes; see the doc."""
    start = time.perf_counter()
    fed = Federation.load(directory)
    model_run = own_run(fed, model_run, "deploy monitor ")
    periods, rest = split_period(args)
    options, _ = split_args(rest)
    model = check_run_dir(model_run)
    settings = settings_of(model_run, "explain.enabled=false")
    if settings.federation.mode is not Mode.vertical:
        raise ConfigError(f"{model_run}: monitoring watches a vertical model's parties; this "
                          f"run is {settings.federation.mode.value}")
    check_matches_federation(fed, settings)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S_monitor")
    names = [stamp] if len(periods) == 1 else [f"{stamp}-{k}" for k in range(1, len(periods)
                                                                              + 1)]
    out = Path(options.out) if options.out else server_dir(fed.runs, "monitor", stamp,
                                                           model_run.name)
    if (options.out or len(periods) > 1) and out.exists():
        raise ConfigError(f"monitor.out={out} exists; name a new directory")
    check_nodes(fed)
    series, withheld, logs = [], [], {}
    for name, period in zip(names, periods, strict=True):  # one Flower run per period
        server = server_dir(fed.runs, "monitor", name, model_run.name)
        request = {"min_count": options.min_count, "epsilon": options.epsilon, "period": period}
        config = {RUN_SETTINGS: json.dumps(config_of(settings)), RUN_NAME: name,
                  COLUMNS: json.dumps(fed.columns), TASK: "monitor", MODEL_RUN: model_run.name,
                  MONITOR_REQUEST: json.dumps(request)}
        prepare(server, config)
        try:
            found = _flwr_run(fed, server, config, timeout)
        except BaseException:
            shutil.rmtree(server, ignore_errors=True)
            raise
        entry, why = _entry(found, period, settings.data.name, options)
        series.append(entry)
        withheld.append(why)
        logs[name] = {p: str(fed.node_state(p) / name / p / "audit.jsonl")
                      for p in found["parties"]}
    latest = series[-1]
    released = released_over(series)
    report = {"run": str(model_run), "model_id": model["model_id"], "period": latest["period"],
              "thresholds": dataclasses.asdict(options) | {"out": None},
              "parties": latest["parties"], "model": latest["model"],
              "status": worst([e["status"] for e in series]),
              "released": released, "consent": None, "series": series,
              "wall_seconds": time.perf_counter() - start}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "monitor.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "report.md", render(report, logs, withheld[-1]))
    plot_indices(report, out / "monitor.png")
    if len(series) > 1:
        plot_series(report, out / "monitor_series.png")
    return out, report


def render(report: dict[str, Any], logs: dict[str, dict[str, str]],
           withheld: str | None = None) -> str:
    """Render report.md: the verdict, each party's columns, the model, what left, the logs.

    ``logs``: per Flower run (one per period), each party's audit log; ``withheld``: why the
    last period has no model section.
    """
    latest = report["series"][-1]
    what = (f"file `{report['period']['period']}` at each node" if report["period"]["period"]
            else "each node's --data")
    lines = [f"# Monitoring {report['run']} (deployment)", ""]
    if len(report["series"]) > 1:
        lines += [f"{len(report['series'])} periods (one run each): **{report['status']}** "
                  "(the worst of them); below them, the last period in detail.", "",
                  *series_lines(report)]
    lines += [f"The period's rows: {what}: **{latest['status']}**.", "",
              "![indices against the thresholds; the grade mix](monitor.png)", "",
              "## Parties (each index computed at the party's node; only indices and counts "
              "left it)", "", "| party | column | index | rows | status |",
              "|---|---|---:|---:|---|"]
    for party, entry in report["parties"].items():
        for column, value in entry["columns"].items():
            lines.append(f"| {party} | {column} | {value['index']:.4f} | {value['rows']:,} | "
                         f"{value['status']} |")
    lines += ["", "## Model (the lender's figures, computed at its node from its scores)", ""]
    if report["model"] is None:
        lines.append(f"Not computed: {withheld}.")
    else:
        lines += model_lines(report["model"])
    lines += ["", "## What left the nodes", "",
              "| party | indices | counts | epsilon |", "|---|---:|---:|---|"]
    for party, r in report["released"].items():
        spent = "exact (outside any epsilon, opted in)" if r["epsilon"] is None else (
            f"{r['epsilon']:g} (noised, charged to its ledger)")
        lines.append(f"| {party} | {r['indices']} | {r['counts']} | {spent} |")
    if report["model"] is not None:
        lines += ["", "The lender's node also sent the model section's figures (exact, under "
                  "its --release-monitoring); the period was scored as a batch scoring (the "
                  "scores stay at the lender)."]
    lines += ["", "Audit logs:", ""]
    for name, parties in logs.items():
        lines += [f"* `{name}`: " + ", ".join(f"{p} `{path}`" for p, path in parties.items())]
    return "\n".join(lines) + "\n"
