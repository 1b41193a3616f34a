"""``deploy monitor <run dir> [monitor.period=<file>] [monitor.<key>=<value> ...]``.

Watches a deployed vertical run's model on a later period, each party at its own node
(:mod:`deployment.monitoring_node`): every node reads its period's rows from its own disk (the
file ``monitor.period`` names in its ``--periods-dir``, the same name at every node; without it
its ``--data``), and answers with the stability index of each of its columns and of its
embedding's norm against the bins frozen in the bundle it kept from that run, and the merged
bins' counts, nothing else; a node refuses unless its own config says ``--release-monitoring``,
and under a DP budget it noises its counts and charges its ledger (docs/monitoring.md).

The coordinator writes ``monitor.json`` (the keys of ``credit-fl monitor``'s, docs/
results-schema.md) and ``report.md`` to ``monitor.out`` (default
``<runs>/<model run>/monitoring/<name>``, beside the server's audit log). On a deployment the
report has the parties' sections only: ``model`` is null (the lender's scores of the period
stay at the lender, and no message computes the model's section there yet), and ``period``
names the file the nodes read (``source`` ``deployment``). Exit 1 when anything is ``act``,
2 on bad input or a refusal.
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
from deployment.coordinator import prepare, server_dir
from deployment.run_config import (
    COLUMNS,
    MODEL_RUN,
    MONITOR_REQUEST,
    RUN_NAME,
    RUN_SETTINGS,
    TASK,
)
from experiments.deploy import (
    Federation,
    _flwr_run,
    check_matches_federation,
    check_nodes,
    own_run,
)
from experiments.monitor import MonitorSettings, check_run_dir, split_args, worst
from federation.settings import Mode
from federation.storage import write_atomic

__all__ = ["monitor", "render", "split_period"]

PERIOD = "monitor.period="


def split_period(args: list[str]) -> tuple[str | None, list[str]]:
    """Take ``monitor.period=<file>`` out of ``args``; refuse any override but ``monitor.*``.

    >>> split_period(["monitor.period=2026-q3.csv", "monitor.act=0.3"])
    ('2026-q3.csv', ['monitor.act=0.3'])
    """
    period = [a.removeprefix(PERIOD) for a in args if a.startswith(PERIOD)]
    rest = [a for a in args if not a.startswith(PERIOD)]
    other = [a for a in rest if not a.startswith("monitor.")]
    if other:
        raise ConfigError(f"deploy monitor: {other[0]!r}: each node reads its period's rows "
                          "from its own disk; name a file in the nodes' --periods-dir with "
                          "monitor.period=<file> (or none: each node's --data) and set only "
                          "monitor.* options")
    if len(period) > 1 or (period and not period[0]):
        raise ConfigError("deploy monitor: monitor.period names one file (the same name at "
                          "every node)")
    return (period[0] if period else None), rest


def _parties(found: dict[str, Any], options: MonitorSettings) -> dict[str, Any]:
    out = {}
    for party, columns in found["parties"].items():
        for value in columns.values():
            value["status"] = status_of(float(value["index"]), options.watch, options.act)
        out[party] = {"status": worst([c["status"] for c in columns.values()]),
                      "columns": columns}
    return out


def monitor(directory: Path, model_run: Path, args: list[str],
            timeout: float = 3600) -> tuple[Path, dict[str, Any]]:
    """Monitor ``model_run`` (a vertical run of this federation) at its nodes; see the doc."""
    start = time.perf_counter()
    fed = Federation.load(directory)
    model_run = own_run(fed, model_run, "deploy monitor ")
    period, rest = split_period(args)
    options, _ = split_args(rest)
    model = check_run_dir(model_run)
    settings = settings_of(model_run, "explain.enabled=false")
    if settings.federation.mode is not Mode.vertical:
        raise ConfigError(f"{model_run}: monitoring watches a vertical model's parties; this "
                          f"run is {settings.federation.mode.value}")
    check_matches_federation(fed, settings)
    name = time.strftime("%Y-%m-%d_%H-%M-%S_monitor")
    server = server_dir(fed.runs, "monitor", name, model_run.name)
    out = Path(options.out) if options.out else server
    if options.out and out.exists():
        raise ConfigError(f"monitor.out={out} exists; name a new directory")
    request = {"min_count": options.min_count, "epsilon": options.epsilon, "period": period}
    config = {RUN_SETTINGS: json.dumps(config_of(settings)), RUN_NAME: name,
              COLUMNS: json.dumps(fed.columns), TASK: "monitor", MODEL_RUN: model_run.name,
              MONITOR_REQUEST: json.dumps(request)}
    check_nodes(fed)
    prepare(server, config)
    try:
        found = _flwr_run(fed, server, config, timeout)
    except BaseException:
        shutil.rmtree(server, ignore_errors=True)
        raise
    parties = _parties(found, options)
    released = {p: {"indices": len(c), "counts": sum(len(v["counts"]) for v in c.values()),
                    "epsilon": found["epsilon"].get(p)} for p, c in found["parties"].items()}
    entry = {"period": {"data": settings.data.name, "source": "deployment", "period": period,
                        "shift": None, "applicants": None},
             "parties": parties, "model": None,
             "status": worst([p["status"] for p in parties.values()]),
             "released": released, "consent": None}
    report = {"run": str(model_run), "model_id": model["model_id"], "period": entry["period"],
              "thresholds": dataclasses.asdict(options) | {"out": None},
              "parties": parties, "model": None, "status": entry["status"],
              "released": released, "consent": None, "series": [entry],
              "wall_seconds": time.perf_counter() - start}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "monitor.json", json.dumps(report, indent=2) + "\n")
    write_atomic(out / "report.md", render(report, {
        p: str(fed.node_state(p) / name / p / "audit.jsonl") for p in parties}))
    return out, report


def render(report: dict[str, Any], logs: dict[str, str]) -> str:
    """Render report.md: the verdict, each party's columns, what left, where the logs are."""
    what = (f"file `{report['period']['period']}` at each node" if report["period"]["period"]
            else "each node's --data")
    lines = [f"# Monitoring {report['run']} (deployment)", "",
             f"The period's rows: {what}: **{report['status']}**.", "",
             "## Parties (each index computed at the party's node; only indices and counts "
             "left it)", "", "| party | column | index | rows | status |",
             "|---|---|---:|---:|---|"]
    for party, entry in report["parties"].items():
        for column, value in entry["columns"].items():
            lines.append(f"| {party} | {column} | {value['index']:.4f} | {value['rows']:,} | "
                         f"{value['status']} |")
    lines += ["", "| party | indices | counts | epsilon | audit log |", "|---|---:|---:|---|---|"]
    for party, r in report["released"].items():
        spent = "exact (outside any epsilon, opted in)" if r["epsilon"] is None else (
            f"{r['epsilon']:g} (noised, charged to its ledger)")
        lines.append(f"| {party} | {r['indices']} | {r['counts']} | {spent} | "
                     f"{logs.get(party, '')} |")
    lines += ["", "The model's section (score and grade-mix PSI, the label-free estimate) is "
              "not computed on a deployment: the lender's scores of the period stay at its "
              "node (docs/monitoring.md)."]
    return "\n".join(lines) + "\n"
