"""``credit-fl rerate <run dir> <period> [rerate.<key>=<value> ...] [data overrides]``.

Re-rates the borrowers already on the book: scores them as every party observes them in
``<period>`` and in the period before, through the same parties and bundles (batch scoring,
each party's blinded set from its cache), and writes, to ``rerate.out`` (default
``<run dir>/rerating/<date>_<time>``), whole or not at all:

* ``rerating.csv``: each borrower's previous and new points and grade, the change, the
  watch list's triggers (``reasons``) and, when the model explains its scores, the new score's
  reason codes (``reason_1`` ..);
* ``migration.csv``: the grade migration matrix (rows: previous grade, columns: new grade);
* ``rerate.json`` and ``report.md``: the matrix, the watch list's size and share by reason.

A borrower is put on the watch list by any trigger (each configurable): a drop of at least
``rerate.drop_points`` points (40), a fall of at least ``rerate.grade_fall`` grades (2), a
new 30-day delinquency at the bureau (``rerate.delinquency=true``), or a listed identity: on a
blacklist holder's list when the book is scored again (``rerate.listed=true``; a model trained
with ``blacklists.holders`` asks them at scoring). The two periods are scored in two requests,
the new one with the run's reason codes (``explain``). The book is synthetic
(:func:`credit_data.periods.book`, with ``data.shift``); with ``data=csv`` the period's party
files are the overrides, and the previous period's are ``rerate.previous=<dir>`` (one
``<party>.csv`` each, read as the overrides say) or, without it, the run's own files.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError, CreditFLError, DataError
from credit_data.settings import LABEL_HOLDER, Shift, Source
from credit_data.tables import Population
from credit_fl.monitoring import check_period_columns, check_run_dir, frames_of, scorecard_of
from experiments.options import take_options
from federation.storage import write_atomic

if TYPE_CHECKING:
    from federation.run_settings import RunSettings

USAGE = ("usage: credit-fl rerate <run dir> <period> [rerate.drop_points=40] "
         "[rerate.grade_fall=2] [rerate.delinquency=true] [rerate.listed=true] "
         "[rerate.out=<dir>] [data.shift=downturn | data=csv data.parties.<party>.path=<file> "
         "... [rerate.previous=<dir>]]")
TRIGGERS = ("points_drop", "grade_fall", "new_delinquency", "listed")
DELINQUENCY = ("bureau", "delinq_30d_24m")
"""The bureau's column whose rise is a new delinquency."""


@dataclass(frozen=True)
class RerateSettings:
    """The watch list's triggers and where the rerating goes (the defaults are these)."""

    drop_points: float = 40.0
    grade_fall: int = 2
    delinquency: bool = True
    listed: bool = True
    out: str | None = None
    previous: str | None = None


def split_args(args: list[str]) -> tuple[RerateSettings, list[str]]:
    """Take the ``rerate.*`` options out of ``args``; the rest are the run's overrides."""
    return take_options(args, "rerate", RerateSettings)


def _books(run_dir: Path, settings: Any, period: int,
           options: RerateSettings) -> tuple[Any, Population, Population]:
    """Return the previous period's settings and the book as observed then and in ``period``.

    Synthetic: :func:`credit_data.periods.book` of both periods. Files: the overrides' files
    are ``period``; the previous period's are ``rerate.previous`` (``<party>.csv`` each) or the
    run's own. Every file is read and checked here, before anything is written.
    """
    from credit_data.periods import book
    from credit_fl.batch_scoring import load_applicants
    from credit_fl.config import settings_of

    data = settings.data
    if data.source is Source.synthetic:
        before = book(data.n_customers, settings.seed, data.synthetic, period=period - 1,
                      shift=Shift.none)
        now = book(data.n_customers, settings.seed, data.synthetic, period=period,
                   shift=data.shift)
        return settings, before, now
    if data.source is not Source.files:
        raise ConfigError(f"rerate: data.source={data.source.value} is not a book; give "
                          "data=csv with the period's party files")
    if options.previous is not None:
        folder = Path(options.previous)
        if not folder.is_dir():
            raise ConfigError(f"rerate.previous={folder}: not a directory (it holds the "
                              "previous period's <party>.csv files)")
        parties = {p: dataclasses.replace(c, path=str(folder / f"{p}.csv"))
                   for p, c in data.parties.items()}
        earlier = dataclasses.replace(settings, data=dataclasses.replace(data, parties=parties))
    else:  # the run's own files, read with this command's other settings (consent, lists)
        own = settings_of(run_dir).data
        if own.source is not Source.files:
            raise ConfigError("rerate with data=csv: the run was trained on "
                              f"{own.source.value} data, so the previous period has no files; "
                              "give them with rerate.previous=<dir>")
        earlier = dataclasses.replace(settings, data=dataclasses.replace(
            data, parties=own.parties))
    return earlier, load_applicants(earlier), load_applicants(settings)


def watch_list(previous: pd.DataFrame, current: pd.DataFrame, grades: tuple[str, ...],
               new_delinquency: pd.Series | None, options: RerateSettings) -> pd.DataFrame:
    """Join the two periods' scores by borrower; add the change and the watch list's reasons.

    A borrower ``current`` marks on a holder's list (``on_list_<holder>``) is ``listed``; the
    new score's reason codes (``reason_<i>``, ``reason_<i>_points``) are kept.

    >>> before = pd.DataFrame({"id": ["a", "b"], "points": [600.0, 600.0], "grade": ["C", "C"]})
    >>> after = pd.DataFrame({"id": ["a", "b"], "points": [550.0, 598.0], "grade": ["E", "C"],
    ...                       "on_list_consortium": [0, 1], "reason_1": ["bureau.utilization",
    ...                       "lender.income"]})
    >>> table = watch_list(before, after, ("A", "B", "C", "D", "E"), None, RerateSettings())
    >>> table["reasons"].tolist(), table["reason_1"].tolist()
    (['points_drop;grade_fall', 'listed'], ['bureau.utilization', 'lender.income'])
    """
    lists = [c for c in current.columns if c.startswith("on_list_")]
    codes = [c for c in current.columns
             if c.startswith("reason_") and not c.endswith("_text")]
    both = previous[["id", "points", "grade"]].merge(
        current[["id", "points", "grade", *lists, *codes]], on="id",
        suffixes=("_previous", ""))
    rank = {g: i for i, g in enumerate(grades)}
    both["change"] = both["points"] - both["points_previous"]
    fall = (both["grade"].map(rank) - both["grade_previous"].map(rank)).astype(int)
    both["grades_fallen"] = fall
    reasons: list[list[str]] = [[] for _ in range(len(both))]
    for i in np.flatnonzero(-both["change"].to_numpy() >= options.drop_points):
        reasons[i].append("points_drop")
    for i in np.flatnonzero(fall.to_numpy() >= options.grade_fall):
        reasons[i].append("grade_fall")
    if options.delinquency and new_delinquency is not None:
        flagged = new_delinquency.reindex(both["id"]).fillna(False).to_numpy(dtype=bool)
        for i in np.flatnonzero(flagged):
            reasons[i].append("new_delinquency")
    if options.listed and lists:
        for i in np.flatnonzero(both[lists].to_numpy(dtype=bool).any(axis=1)):
            reasons[i].append("listed")
    both["reasons"] = [";".join(r) for r in reasons]
    return both[[c for c in both.columns if c not in codes] + codes]


def _new_delinquency(before: Population, now: Population) -> pd.Series | None:
    party, column = DELINQUENCY
    if party not in before.tables or party not in now.tables:
        return None
    old = before.tables[party].frame[column]
    new = now.tables[party].frame[column].reindex(old.index)
    return (new > old).rename("new_delinquency")


def _watched_codes(table: pd.DataFrame, top: int = 5) -> dict[str, int]:
    """Return the watch list's most frequent first reason codes (none without codes)."""
    if "reason_1" not in table:
        return {}
    first = table.loc[table["reasons"] != "", "reason_1"].astype(str)
    counts = first[first != ""].value_counts().head(top)
    return {str(k): int(v) for k, v in counts.items()}


def rerate_run(run_dir: Path, period: int, args: list[str]) -> tuple[Path, dict[str, Any]]:
    """Re-rate the book of ``run_dir``'s model in ``period``; return the directory, report."""
    from credit_fl.config import settings_of
    from federation.run_settings import Engine
    from models.bundle import read_manifest

    start = time.perf_counter()
    options, overrides = split_args(args)
    if period < 2:
        raise ConfigError(f"rerate: the period must be 2 or later (1 is the training "
                          f"population), got {period}")
    run_dir = run_dir.resolve()
    model = check_run_dir(run_dir)
    # the run's own explain settings: the new period's scores carry their reason codes
    settings = dataclasses.replace(settings_of(run_dir, *overrides), verbose=False,
                                   engine=Engine.in_process)
    out = Path(options.out) if options.out else (
        run_dir / "rerating" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    if out.exists():
        raise ConfigError(f"rerate.out={out} exists; name a new directory")
    earlier, before, now = _books(run_dir, settings, period, options)
    for population in (before, now):
        check_period_columns(run_dir, model["bundles"], population)
    card = scorecard_of(read_manifest(run_dir / model["bundles"][LABEL_HOLDER]))
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        scored, consent = _score_both(run_dir, earlier, settings, before, now, stage)
        table = watch_list(scored["previous"], scored["current"], card.grades,
                           _new_delinquency(before, now), options)
        if table.empty:
            raise DataError("rerate: no borrower of the previous period is in this period "
                            "(the IDs of the two periods do not meet)")
        migration = pd.crosstab(table["grade_previous"], table["grade"]).reindex(
            index=list(card.grades), columns=list(card.grades), fill_value=0)
        report = {
            "run": str(run_dir), "period": period, "shift": settings.data.shift.value,
            "borrowers": len(table), "triggers": dataclasses.asdict(options) | {
                "out": None, "previous": None},
            "watch_list": _watch_summary(table),
            "mean_change": float(table["change"].mean()),
            "consent": consent if any(consent.values()) else None,
            "migration": {g: {h: int(migration.loc[g, h]) for h in card.grades}
                          for g in card.grades},
            "wall_seconds": time.perf_counter() - start}
        write_atomic(stage / "rerating.csv", table.to_csv(index=False, float_format="%.6g"))
        write_atomic(stage / "migration.csv", migration.to_csv())
        write_atomic(stage / "rerate.json", json.dumps(report, indent=2) + "\n")
        write_atomic(stage / "report.md", render(report))
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out, report



def _score_both(run_dir: Path, earlier: RunSettings, settings: RunSettings,
                before: Population, now: Population, stage: Path
                ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Score the previous period (no reasons) and this one; return the scores and consent.

    Two requests: each borrower's ID as it is (list holders answer it), reasons for now.
    """
    from credit_fl.batch_scoring import score_bundles

    id_column = settings.data.id_column
    scored, consent = {}, {}
    for name, run, population in (
            ("previous", dataclasses.replace(earlier, explain=dataclasses.replace(
                earlier.explain, enabled=False)), before), ("current", settings, now)):
        scored[name], scoring = score_bundles(run_dir, run, stage / f"scoring-{name}",
                                              frames=frames_of(population, id_column))
        consent[name] = scoring.get("consent")  # credit_scoring, as scoring.json's
        shutil.rmtree(stage / f"scoring-{name}", ignore_errors=True)
    return scored, consent


def _watch_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Return the watch list's counts: borrowers, share, by trigger, first reason codes."""
    watched = table["reasons"] != ""
    return {"borrowers": int(watched.sum()),
            "share": float(watched.mean()),
            "by_reason": {r: int(table["reasons"].str.contains(r).sum()) for r in TRIGGERS},
            "first_reason_codes": _watched_codes(table)}

def render(report: dict[str, Any]) -> str:
    """Render report.md: the watch list and the migration matrix."""
    w = report["watch_list"]
    grades = list(report["migration"])
    lines = [f"# Re-rating the book of {report['run']}", "",
             f"Period {report['period']} (shift {report['shift']}): {report['borrowers']:,} "
             f"borrowers, mean change {report['mean_change']:+.1f} points; watch list "
             f"{w['borrowers']:,} ({w['share']:.1%}): "
             + ", ".join(f"{r} {n:,}" for r, n in w["by_reason"].items()) + ".", ""]
    if w["first_reason_codes"]:
        lines += ["The watch list's most frequent first reason code (the new score's most "
                  "adverse factor, computed where its column lives): "
                  + ", ".join(f"`{c}` {n:,}" for c, n in w["first_reason_codes"].items())
                  + ".", ""]
    lines += ["## Grade migration (rows: previous grade)", "",
              "| from \\ to | " + " | ".join(grades) + " |",
              "|---|" + "---:|" * len(grades)]
    for g in grades:
        lines.append(f"| {g} | " + " | ".join(f"{report['migration'][g][h]:,}" for h in grades)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Re-rate a run's book in a period; exit 2 on bad input."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] in ("-h", "--help"):
        print(__doc__)
        print(USAGE)
        return 0 if args and args[0] in ("-h", "--help") else 2
    import logging

    from experiments.console import quiet_console

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    quiet_console()
    try:
        period = int(args[1])
    except ValueError:
        print(f"error: <period> must be a whole number, got '{args[1]}'", file=sys.stderr)
        return 2
    try:
        out, _ = rerate_run(Path(args[0]), period, args[2:])
    except CreditFLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text())
    print(f"Re-rating: {out / 'rerating.csv'}")
    return 0


__all__ = ["RerateSettings", "main", "rerate_run", "split_args", "watch_list"]

if __name__ == "__main__":
    sys.exit(main())
