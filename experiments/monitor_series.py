"""Several periods in one ``credit-fl monitor`` command: which periods, and the series' report.

``data.period=2,3,4`` (or ``data.period=[2,3,4]``, or ``data.period`` given more than once)
watches each period in turn; ``data.shift`` is one shift for every period after 1 (period 1
is the training population and has none), or one shift per period (``data.shift=none,downturn``).
``monitor.json`` then holds one entry per period in ``series``, ``report.md`` a table over the
periods and ``monitor_series.png`` the indices over the periods.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from credit_data.errors import ConfigError

__all__ = ["period_overrides", "plot_series", "released_over", "series_lines"]

log = logging.getLogger(__name__)


def _values(arg: str, key: str) -> list[str]:
    text = arg.removeprefix(f"{key}=").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    values = [v.strip() for v in text.split(",")]
    if not all(values):
        raise ConfigError(f"{arg}: an empty value in {key}")
    return values


def period_overrides(args: list[str]) -> tuple[list[list[str]], list[str]]:
    """Take ``data.period`` and ``data.shift`` out of ``args``: one override list per period.

    Without ``data.period`` there is one period, the overrides' own (``[[]]``).

    >>> period_overrides(["data.period=2,3", "data.shift=downturn", "seed=1"])
    ([['data.period=2', 'data.shift=downturn'], ['data.period=3', 'data.shift=downturn']], \
['seed=1'])
    >>> period_overrides(["data.period=1", "data.period=2", "data.shift=downturn"])[0]
    [['data.period=1', 'data.shift=none'], ['data.period=2', 'data.shift=downturn']]
    >>> period_overrides(["data.period=[2,2]", "data.shift=none,concept"])[0]
    [['data.period=2', 'data.shift=none'], ['data.period=2', 'data.shift=concept']]
    >>> period_overrides(["data.shift=downturn"])
    ([['data.shift=downturn']], [])
    >>> period_overrides(["data.period=2,3", "data.shift=none,downturn,concept"])
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: data.shift names 3 shifts for 2 periods; give one shift, \
or one per period
    """
    periods: list[str] = []
    shifts: list[str] = []
    rest = []
    for arg in args:
        if arg.startswith("data.period="):
            periods += _values(arg, "data.period")
        elif arg.startswith("data.shift="):
            shifts += _values(arg, "data.shift")
        else:
            rest.append(arg)
    if not periods:
        return [[f"data.shift={s}" for s in shifts[-1:]]], rest
    for p in periods:
        if not p.isdigit():
            raise ConfigError(f"data.period={p}: a period is a whole number (1, 2, ...)")
    if len(shifts) > 1 and len(shifts) != len(periods):
        raise ConfigError(f"data.shift names {len(shifts)} shifts for {len(periods)} periods; "
                          "give one shift, or one per period")
    if len(shifts) == 1 and len(periods) > 1:
        shifts = [shifts[0] if int(p) > 1 else "none" for p in periods]
    runs: list[list[str]] = []
    for k, p in enumerate(periods):
        run = [f"data.period={int(p)}", *([f"data.shift={shifts[k]}"] if shifts else [])]
        if run in runs:
            log.warning("%s is given twice; it is watched once", " ".join(run))
            continue
        runs.append(run)
    return runs, rest


def _label(entry: dict[str, Any]) -> str:
    """Return a period's name: its number and shift, or a deployment's file."""
    period = entry["period"]
    if period["source"] == "deployment":
        return str(period["period"] or "--data")
    return (f"{period['period']}" if period["shift"] == "none"
            else f"{period['period']} ({period['shift']})")


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def series_lines(report: dict[str, Any]) -> list[str]:
    """Return report.md's table over the periods (nothing for a single period)."""
    series = report["series"]
    if len(series) < 2:
        return []
    lines = ["## Over periods", "", "![indices over the periods](monitor_series.png)", "",
             "| period | applicants | status | score PSI | grade PSI | estimated AUC | "
             "measured AUC | default rate | columns at act |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for entry in series:  # a deployment's lender may have withheld its model section
        m = entry["model"] or {}
        outcomes = m.get("outcomes") or {}
        acts = [f"{p}.{c}" for p, e in entry["parties"].items()
                for c, v in e["columns"].items() if v["status"] == "act"]
        applicants = entry["period"]["applicants"]
        lines.append(f"| {_label(entry)} | {'-' if applicants is None else f'{applicants:,}'} | "
                     f"{entry['status']} | {_figure(m.get('score_psi'))} | "
                     f"{_figure(m.get('grade_psi'))} | "
                     f"{_figure(m.get('estimate', {}).get('auc'))} | "
                     f"{_figure(outcomes.get('auc'))} | {_figure(outcomes.get('default_rate'))} | "
                     f"{', '.join(acts) or '-'} |")
    return [*lines, ""]


def plot_series(report: dict[str, Any], path: Path) -> None:
    """Plot each column's index, the model's PSIs and AUCs over the periods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    x = list(range(len(series)))
    labels = [_label(e) for e in series]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    colours = dict(zip(report["parties"], ("tab:blue", "tab:purple", "tab:brown", "tab:olive",
                                           "tab:cyan", "tab:pink"), strict=False))
    for party, entry in report["parties"].items():
        for column in entry["columns"]:
            values = [e["parties"].get(party, {}).get("columns", {}).get(column, {})
                      .get("index", float("nan")) for e in series]
            left.plot(x, values, marker="o", linewidth=1, color=colours.get(party, "grey"),
                      label=party if column == next(iter(entry["columns"])) else None)
    nan = float("nan")
    models = [e["model"] or {} for e in series]  # a deployment's lender may withhold it
    for name, key in (("score PSI", "score_psi"), ("grade-mix PSI", "grade_psi")):
        left.plot(x, [m.get(key, nan) for m in models], marker="s", linewidth=2.5,
                  color="black", linestyle="-" if key == "score_psi" else ":", label=name)
    for threshold in (report["thresholds"]["watch"], report["thresholds"]["act"]):
        left.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
    left.set_xticks(x, labels)
    left.set_xlabel("period")
    left.set_ylabel("stability index against training")
    left.legend(fontsize=8)
    right.plot(x, [m.get("estimate", {}).get("auc", nan) for m in models], marker="o",
               label="estimated AUC (label-free)")
    measured = [(m.get("outcomes") or {}).get("auc", nan) for m in models]
    right.plot(x, measured, marker="s", label="measured AUC")
    trained = [m["training"]["auc"] for m in models if m]
    if trained:
        right.axhline(trained[0], color="grey", linestyle="--", linewidth=0.8,
                      label="training AUC")
    right.set_xticks(x, labels)
    right.set_xlabel("period")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def released_over(series: list[dict]) -> dict[str, dict]:
    """Return what each party released over a series' periods.

    Indices and counts summed; epsilon summed (charged per period), None where any period
    released exact counts.
    """
    released = {p: {kind: sum(e["released"].get(p, {}).get(kind, 0) for e in series)
                    for kind in ("indices", "counts")} for p in series[-1]["released"]}
    for p, figures in released.items():
        spent = [e["released"][p]["epsilon"] for e in series if p in e["released"]]
        figures["epsilon"] = None if None in spent else float(sum(spent))
    return released
