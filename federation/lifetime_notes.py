"""What the regulator's report checks in a deployed node's own lifetime-budget notes.

A deployed node notes its lifetime ledger on each audit line (:data:`NOTE_SPENT`, ``NOTE_CAP``,
``NOTE_RESETS`` under ``node``; :mod:`federation.lifetime_budget`). The note is the node's own
word; ``credit-fl audit report`` (:mod:`federation.usage_report`) does not take it on trust:

* a note whose spend is past its own cap is a failure (the node should have refused);
* a spend lower than the one noted before it, in one log (line after line) or from one run
  of the node to the next (runs that did not overlap, in time order), is a failure unless the
  ledger's count of resets grew in between (only the node's partner resets its budget);
* a deployed node's line (:data:`DEPLOYED`) without a note is counted as such, never read as a
  simulated party's (a simulated party keeps no lifetime ledger and its lines are unmarked).

Each failure names the node, the log, the line (1-based; ``seq`` + 1 in a log that verifies)
and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from federation.lifetime_budget import DEPLOYED, NOTE_CAP, NOTE_RESETS, NOTE_SPENT

SLACK = 1e-9
"""Rounding the ledger's own comparisons allow (:mod:`federation.lifetime_budget`)."""


@dataclass(frozen=True)
class Note:
    """One noted audit line: where it is, when, and what the node noted."""

    log: str
    line: int
    time: str
    spent: float
    cap: float | None
    resets: int | None

    def where(self) -> str:
        """Name the line: ``<log> line <n>``."""
        return f"{self.log} line {self.line}"


def notes(log: str, entries: list[dict[str, Any]]) -> list[Note]:
    """Return a log's noted lines, in the log's order.

    >>> notes("a.jsonl", [{"seq": 0, "time": "t", "node": {"lifetime_epsilon": 1.5,
    ...                    "max_epsilon": "none", "lifetime_resets": 0}}])
    [Note(log='a.jsonl', line=1, time='t', spent=1.5, cap=None, resets=0)]
    """
    out = []
    for e in entries:
        note = e.get("node")
        if not (isinstance(note, dict) and _number(note.get(NOTE_SPENT))):
            continue
        cap, resets = note.get(NOTE_CAP), note.get(NOTE_RESETS)
        out.append(Note(log, int(e["seq"]) + 1, str(e.get("time", "")),
                        float(note[NOTE_SPENT]), float(cap) if _number(cap) else None,
                        int(resets) if _number(resets) else None))
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


def _went_down(party: str, before: Note, after: Note) -> str | None:
    if after.spent >= before.spent - SLACK:
        return None
    if before.resets is not None and after.resets is not None and after.resets > before.resets:
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
    ordered = sorted((run for run in runs if run), key=lambda run: (run[0].time, run[-1].time))
    pairs += [(earlier[-1], later[0]) for earlier, later in zip(ordered, ordered[1:],
                                                                strict=False)
              if earlier[-1].time < later[0].time]
    return [(after.log, problem) for before, after in pairs
            if (problem := _went_down(party, before, after)) is not None]
