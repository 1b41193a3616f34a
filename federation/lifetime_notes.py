"""What the regulator's report checks in a deployed node's own lifetime-budget notes.

A deployed node notes its lifetime ledger on each audit line (:data:`NOTE_SPENT`, ``NOTE_CAP``,
``NOTE_RESETS`` under ``node``; :mod:`federation.lifetime_budget`). The note is the node's own
word; ``credit-fl audit report`` (:mod:`federation.usage_report`) does not take it on trust:

* a note whose spend is past its own cap is a failure (the node should have refused);
* a spend lower than the one noted before it, in one log (line after line) or from one run
  of the node to the next (runs that did not overlap, in time order), is a failure unless the
  ledger's count of resets grew in between (only the node's partner resets its budget);
* a spend below what the run's own replies reported so far on that line (:func:`run_spend` of
  their cumulative figures) is a failure: the ledger counts the run's spend, every run's;
* runs add up: from one run to the next (not overlapping, no reset between), the later run's
  last note is at least the earlier's last plus what the later run added to the ledger (its
  :func:`run_spend`; a resumed run, whose figures include the run it continues, adds only its
  growth over that run's: :func:`additions`), so two runs cannot both note one spend;
* a cap that rises or becomes none from one note to the next (in a log, or from one run to the
  next with no reset between) is a failure: the node's cap is its partner's, set with it;
* a deployed node's line (:data:`DEPLOYED`) without a note is counted as such, never read as a
  simulated party's (a simulated party keeps no lifetime ledger and its lines are unmarked).

Each failure names the node, the log, the line (1-based; ``seq`` + 1 in a log that verifies)
and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from federation.lifetime_budget import (
    DEPLOYED,
    NOTE_CAP,
    NOTE_RESETS,
    NOTE_SPENT,
    run_spend,
    spend_figures,
)

SLACK = 1e-9
"""Rounding the ledger's own comparisons allow (:mod:`federation.lifetime_budget`)."""
CONTINUES = "lifetime-run"
"""In a resumed run's directory at a deployed node (``deployment.client_app.LIFETIME_RUN``):
the run it continues, under whose name the ledger keeps both runs' spend."""


@dataclass(frozen=True)
class Note:
    """One noted audit line: where it is, when, and what the node noted."""

    log: str
    line: int
    time: str
    spent: float
    cap: float | None
    resets: int | None
    run: float = 0.0
    """The run's own spend so far (:func:`run_spend` of its replies' figures to this line)."""

    def where(self) -> str:
        """Name the line: ``<log> line <n>``."""
        return f"{self.log} line {self.line}"


def notes(log: str, entries: list[dict[str, Any]]) -> list[Note]:
    """Return a log's noted lines, in the log's order.

    >>> notes("a.jsonl", [{"seq": 0, "time": "t", "node": {"lifetime_epsilon": 1.5,
    ...                    "max_epsilon": "none", "lifetime_resets": 0}}])
    [Note(log='a.jsonl', line=1, time='t', spent=1.5, cap=None, resets=0, run=0.0)]
    """
    out = []
    figures: dict[str, float] = {}
    for e in entries:
        merge(figures, spend_figures(e.get("epsilon") or {}))
        note = e.get("node")
        if not (isinstance(note, dict) and _number(note.get(NOTE_SPENT))):
            continue
        cap, resets = note.get(NOTE_CAP), note.get(NOTE_RESETS)
        out.append(Note(log, int(e["seq"]) + 1, str(e.get("time", "")),
                        float(note[NOTE_SPENT]), float(cap) if _number(cap) else None,
                        int(resets) if _number(resets) else None, run_spend(figures)))
    return out


def merge(figures: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """Merge cumulative figures into ``figures`` (the larger of each, as the ledger does)."""
    for name, value in more.items():
        figures[name] = max(figures.get(name, 0.0), float(value))
    return figures


def figures_to_last_note(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Return a log's cumulative figures up to its last noted line."""
    noted = [i for i, e in enumerate(entries) if isinstance(e.get("node"), dict)
             and _number(e["node"].get(NOTE_SPENT))]
    figures: dict[str, float] = {}
    for e in entries[:noted[-1] + 1] if noted else []:
        merge(figures, spend_figures(e.get("epsilon") or {}))
    return figures


def additions(runs: list[tuple[str, str | None, str, dict[str, float]]]) -> list[float | None]:
    """Return what each run added to its node's ledger (None: not known from these logs).

    ``runs``: (run name, the run it continues or None, first time, figures to its last note).
    A run adds its :func:`run_spend`; a resumed run, whose figures include those of the run it
    continues (the ledger keeps them under that run's name, the larger of each), adds its growth
    over the chain's figures given before it, unknown when none of that chain is given.

    >>> additions([("r1", None, "1", {"epsilon": 1.0}), ("r2", "r1", "2", {"epsilon": 1.5})])
    [1.0, 0.5]
    >>> additions([("r2", "r1", "2", {"epsilon": 1.5})])
    [None]
    """
    out: list[float | None] = []
    for name, continues, first, figures in runs:
        if continues is None:
            out.append(run_spend(figures))
            continue
        chain = [f for n, c, t, f in runs if continues in (n, c) and t < first and n != name]
        if not chain:
            out.append(None)
            continue
        before: dict[str, float] = {}
        for f in chain:
            merge(before, f)
        out.append(run_spend(merge(dict(before), figures)) - run_spend(before))
    return out


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def deployed(entries: list[dict[str, Any]]) -> bool:
    """Whether a deployed node wrote the log (its lines are marked :data:`DEPLOYED`)."""
    return any(e.get(DEPLOYED) is True for e in entries)


def unnoted(entries: list[dict[str, Any]]) -> list[int]:
    """Return the lines (1-based) a deployed node wrote without its lifetime note."""
    return [int(e["seq"]) + 1 for e in entries if e.get(DEPLOYED) is True and not (
        isinstance(e.get("node"), dict) and _number(e["node"].get(NOTE_SPENT)))]


def past_cap(party: str, noted: list[Note]) -> list[str]:
    """Return a problem for each note whose spend is past its own cap.

    >>> past_cap("bureau", [Note("a.jsonl", 3, "t", 9.5, 8.0, 0)])
    ['node bureau, a.jsonl line 3: notes a lifetime epsilon of 9.5, past its cap 8']
    """
    return [f"node {party}, {n.where()}: notes a lifetime epsilon of {n.spent:g}, past its "
            f"cap {n.cap:g}" for n in noted if n.cap is not None and n.spent > n.cap + SLACK]


def below_run(party: str, noted: list[Note]) -> list[str]:
    """Return a problem for each note below the run's own spend so far on its line.

    >>> below_run("bureau", [Note("a.jsonl", 2, "t", 0.0, 5.0, 0, run=4.0)])
    ... # doctest: +NORMALIZE_WHITESPACE
    ["node bureau, a.jsonl line 2: notes a lifetime epsilon of 0, below the 4 its run's own
      replies reported so far"]
    """
    return [f"node {party}, {n.where()}: notes a lifetime epsilon of {n.spent:g}, below the "
            f"{n.run:g} its run's own replies reported so far"
            for n in noted if n.spent < n.run - SLACK]


def _reset(before: Note, after: Note) -> bool:
    return before.resets is not None and after.resets is not None and after.resets > before.resets


def _cap_rose(party: str, before: Note, after: Note) -> str | None:
    if before.cap is None or _reset(before, after) or (
            after.cap is not None and after.cap <= before.cap + SLACK):
        return None
    return (f"node {party}: its cap rose from {before.cap:g} ({before.where()}) to "
            f"{'none' if after.cap is None else format(after.cap, 'g')} ({after.where()}) "
            f"with no reset noted")


def _went_down(party: str, before: Note, after: Note) -> str | None:
    if after.spent >= before.spent - SLACK:
        return None
    if _reset(before, after):
        return None  # the partner reset the budget in between
    return (f"node {party}: its lifetime epsilon went down from {before.spent:g} "
            f"({before.where()}) to {after.spent:g} ({after.where()}) with no reset noted "
            f"(resets {before.resets} then {after.resets})")


def went_down(party: str, runs: list[list[Note]]) -> list[tuple[str, str]]:
    """Return (log, problem) where a node's lifetime spend went down without a reset between.

    ``runs``: each run's notes (one log each). Within a run, line after line; across runs, from
    one run's last note to the next run's first, in time order, for runs that did not overlap
    (two runs at once interleave their notes; each is still checked on its own).

    >>> a = [Note("r1.jsonl", 1, "2026-01-01T00:00:00Z", 2.0, 8.0, 0)]
    >>> b = [Note("r2.jsonl", 1, "2026-01-02T00:00:00Z", 1.0, 8.0, 0)]
    >>> went_down("bureau", [b, a])  # doctest: +NORMALIZE_WHITESPACE
    [('r2.jsonl', 'node bureau: its lifetime epsilon went down from 2 (r1.jsonl line 1) to 1
      (r2.jsonl line 1) with no reset noted (resets 0 then 0)')]
    >>> went_down("bureau", [a, [Note("r2.jsonl", 1, "2026-01-02T00:00:00Z", 1.0, 8.0, 1)]])
    []
    """
    pairs = [pair for run in runs for pair in zip(run, run[1:], strict=False)]
    pairs += [(earlier[-1], later[0]) for earlier, later in _in_turn(runs)]
    return [(after.log, problem) for before, after in pairs
            for problem in (_went_down(party, before, after), _cap_rose(party, before, after))
            if problem is not None]


def _in_turn(runs: list[list[Note]]) -> list[tuple[list[Note], list[Note]]]:
    """Return each pair of noted runs one after the other that did not overlap."""
    ordered = sorted((run for run in runs if run), key=lambda run: (run[0].time, run[-1].time))
    return [(earlier, later) for earlier, later in zip(ordered, ordered[1:], strict=False)
            if earlier[-1].time < later[0].time]


def did_not_add_up(party: str, runs: list[list[Note]],
                   added: list[float | None]) -> list[tuple[str, str]]:
    """Return (log, problem) where a run's last note is short of the runs before it plus its own.

    ``added``: what each run added to the ledger (:func:`additions`; None: not checked). For
    each pair of runs one after the other (not overlapping, no reset noted between), the later
    run's last note must reach the earlier's last note plus what the later run added.

    >>> a = [Note("r1.jsonl", 1, "2026-01-01T00:00:00Z", 3.0, 5.0, 0, run=3.0)]
    >>> b = [Note("r2.jsonl", 2, "2026-01-02T00:00:00Z", 3.0, 5.0, 0, run=3.0)]
    >>> did_not_add_up("bureau", [a, b], [3.0, 3.0])  # doctest: +NORMALIZE_WHITESPACE
    [('r2.jsonl', 'node bureau: r2.jsonl line 2 notes a lifetime epsilon of 3, short of the 3
      noted before it (r1.jsonl line 1) plus the 3 its run spent (6)')]
    """
    spend = {id(run): add for run, add in zip(runs, added, strict=True)}
    out = []
    for earlier, later in _in_turn(runs):
        add, before, after = spend[id(later)], earlier[-1], later[-1]
        if add is None or _reset(before, after) or after.spent >= before.spent + add - SLACK:
            continue
        out.append((after.log, f"node {party}: {after.where()} notes a lifetime epsilon of "
                    f"{after.spent:g}, short of the {before.spent:g} noted before it "
                    f"({before.where()}) plus the {add:g} its run spent "
                    f"({before.spent + add:g})"))
    return out
