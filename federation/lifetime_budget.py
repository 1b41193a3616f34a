"""A node's lifetime privacy budget: every run's spend, kept on the node's disk.

A partner's ``--max-epsilon`` bounds what its rows give away over the node's whole life, not
per run and not per data file: three runs at epsilon 0.9 against a cap of 1.0 must not all
pass, and appending a customer to the file must not give the customers already in it a fresh
budget. The node keeps one ledger, ``<state-dir>/budget/node.jsonl``, whatever its data file:
every run at the node counts against the one cap. Each run's epsilon bounds what it gave away
about any one customer of the file it read, so the sum over the node's runs bounds every
customer's spend (basic composition, an upper bound; a customer new to the file is charged for
runs it was not in, the price of not keeping a list of who was in which run). Each spend line
names the data file's SHA-256, for the partner's record; it decides nothing. Only the partner
starts afresh (:mod:`deployment.budget` ``reset --reason``).

Ledgers of an older version, one per data file (``<state-dir>/budget/<sha256>.jsonl``), are
migrated at the first read: verified, their runs' spend since their last reset written into the
node's ledger (a ``migrated`` line naming the file), the file renamed ``*.jsonl.migrated``.

The ledger is an authenticated log (:mod:`federation.audit_log`): one line each time a run's
spend grows, verified at every read, so a ledger whose lines were edited, reordered, removed
from the middle or emptied stops the node instead of giving it a fresh budget. It guards
against the coordinator and against accidents, not against the node's operator: lines cut off
the end, a deleted file or a backup put back are not detected (the operator can reset the
budget anyway).

How a run's spend adds up (basic composition, an upper bound): within a run, each mechanism's
figure is cumulative (the node's accountant composes its steps), and a noisy summary is
composed into the DP-SGD figure that follows it, so the run counts the larger of the two; the
run's other figures add (label DP, embedding noise). Across runs the spends add. A reset is a
line of the ledger too, so the history stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credit_data.errors import PrivacyLedgerError
from federation.audit_log import AuditLog, parse_line, verify

BUDGET_DIR = "budget"
NODE_LEDGER = "node.jsonl"
MIGRATED_SUFFIX = ".migrated"
COMPOSED_INTO = {"summary_epsilon": "epsilon"}
"""A figure whose mechanism the other figure's accountant already composes: counted as one."""
NOTE_SPENT, NOTE_CAP, NOTE_RESETS = "lifetime_epsilon", "max_epsilon", "lifetime_resets"
"""On a deployed node's audit lines (its own note, never sent): the ledger's spend since its
last reset after the message, the node's cap (``none``: its partner chose no cap) and how many
resets the ledger holds (a spend lower than an earlier line's is a reset only if this grew)."""
DEPLOYED = "deployed"
"""On every audit line a deployed node writes (``true``), noted or not: a line without the note
is then a deployed node's unnoted line, never read as a simulated party's."""


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes (cached while its size and modification time stay)."""
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def run_spend(figures: dict[str, float]) -> float:
    """Return the epsilon a run spent, from its cumulative figures per mechanism.

    >>> run_spend({"summary_epsilon": 0.3, "epsilon": 0.9})
    0.9
    >>> run_spend({"label_epsilon": 1.0, "dpsgd_epsilon": 0.5})
    1.5
    """
    groups: dict[str, float] = {}
    for name, value in figures.items():
        group = COMPOSED_INTO.get(name, name)
        groups[group] = max(groups.get(group, 0.0), float(value))
    return float(sum(groups.values()))


def spend_figures(reported: dict[str, float]) -> dict[str, float]:
    """Return the cumulative epsilon figures a reply reports (names ending in ``epsilon``).

    >>> spend_figures({"epsilon": 0.5, "noise_multiplier": 1.1, "dpsgd_epsilon": 0.2})
    {'epsilon': 0.5, 'dpsgd_epsilon': 0.2}
    """
    return {k: float(v) for k, v in reported.items() if k.endswith("epsilon")}


@dataclass(frozen=True)
class LifetimeBudget:
    """One node's ledger over all its runs, and its cap (None: recorded, not capped).

    ``dataset`` is the SHA-256 of the data file the node reads now (None: not given), written
    on each spend line for the partner's record.
    """

    path: Path
    cap: float | None
    dataset: str | None = None

    @classmethod
    def of(cls, state_dir: Path, cap: float | None, *,
           data_path: Path | None = None) -> LifetimeBudget:
        """Return the node's ledger in its state directory (older per-file ledgers migrated)."""
        budget = cls(state_dir / BUDGET_DIR / NODE_LEDGER, cap,
                     None if data_path is None else dataset_fingerprint(data_path))
        budget.migrate()
        return budget

    def legacy(self) -> list[Path]:
        """Return the per-file ledgers of an older version not migrated yet."""
        folder = self.path.parent
        return sorted(p for p in folder.glob("*.jsonl") if p != self.path) if folder.is_dir() \
            else []

    def migrate(self) -> None:
        """Write each older per-file ledger's spend into the node's ledger, once.

        A per-file ledger that fails verification stops the node, as the node's own would.
        """
        if not self.legacy():
            return
        with self._locked():
            done = {str(e.get("source")) for e in self._entries() if e["event"] == "migrated"}
            for old in self.legacy():
                if old.name not in done:
                    ledger = LifetimeBudget(old, None)
                    AuditLog(self.path).append("migrated", source=old.name, runs=ledger.runs(),
                                               spent=ledger.spent())
                old.rename(old.with_name(old.name + MIGRATED_SUFFIX))

    def _entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        verdict = verify(self.path)
        if not verdict.ok:
            raise PrivacyLedgerError(
                f"{self.path}: the node's lifetime privacy ledger fails verification "
                f"({verdict}); the node spends nothing until its operator checks it "
                "(python -m deployment.budget show)")
        return [parse_line(t) for t in self.path.read_text(encoding="utf-8").splitlines()]

    def runs(self) -> dict[str, dict[str, float]]:
        """Each run's cumulative figures since the last reset."""
        return self._runs(self._entries())

    @staticmethod
    def _runs(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for entry in entries:
            if entry["event"] == "reset":
                out = {}
            elif entry["event"] == "spend":
                out[str(entry["run"])] = {k: float(v) for k, v in entry["figures"].items()}
            elif entry["event"] == "migrated":  # a run in two older ledgers: both count
                for run, figures in entry["runs"].items():
                    kept = out.setdefault(str(run), {})
                    for name, value in figures.items():
                        kept[name] = kept.get(name, 0.0) + float(value)
        return out

    def standing(self) -> tuple[float, int]:
        """Return the spend of every run since the last reset, and how many resets there were.

        One read of the ledger: what a deployed node notes on each audit line.
        """
        entries = self._entries()
        return (float(sum(run_spend(f) for f in self._runs(entries).values())),
                sum(e["event"] == "reset" for e in entries))

    def spent(self, *, besides: str | None = None) -> float:
        """Epsilon spent at the node by every run (but ``besides``) since the last reset."""
        return float(sum(run_spend(f) for run, f in self.runs().items() if run != besides))

    def left(self, run: str) -> float | None:
        """Return what run ``run`` may still spend (None without a cap)."""
        return None if self.cap is None else self.cap - self.spent(besides=run)

    def would_spend(self, run: str, figures: dict[str, float]) -> tuple[float, dict[str, float]]:
        """Return the lifetime total and the run's figures after a reply reporting ``figures``."""
        runs = self.runs()
        merged = dict(runs.get(run, {}))
        for name, value in figures.items():
            merged[name] = max(merged.get(name, 0.0), float(value))
        others = sum(run_spend(f) for r, f in runs.items() if r != run)
        return float(others + run_spend(merged)), merged

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the ledger's lock: two runs at the node read and write it one after the other."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_suffix(".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record(self, run: str, figures: dict[str, float]) -> float:
        """Record a reply's figures for ``run``; return the lifetime total."""
        with self._locked():
            total, merged = self.would_spend(run, figures)
            if merged != self.runs().get(run, {}):
                self._append_spend(run, merged, total)
        return total

    def check_and_record(self, run: str, figures: dict[str, float]) -> tuple[bool, float]:
        """Record ``figures`` if the total stays within the cap; return (recorded, total).

        The check and the write happen under the lock, so two runs cannot both pass it.
        """
        with self._locked():
            total, merged = self.would_spend(run, figures)
            if self.cap is not None and total > self.cap + 1e-9:
                return False, total
            if merged != self.runs().get(run, {}):
                self._append_spend(run, merged, total)
        return True, total

    def _append_spend(self, run: str, figures: dict[str, float], total: float) -> None:
        data = {} if self.dataset is None else {"dataset": self.dataset}
        AuditLog(self.path).append("spend", run=run, figures=figures, lifetime_epsilon=total,
                                   **data)

    def record_opt_in(self, run: str, releases: list[str], flags: list[str]) -> None:
        """Record, once per run, what the node let leave outside any epsilon by its flags.

        ``releases`` (:class:`federation.releases.Release` values) and the ``flags`` that opted
        into them: a line of the ledger, so the partner sees when its node used an opt-in.
        """
        with self._locked():
            if releases not in (e.get("releases") for e in self._entries()
                                if e["event"] == "opt_in" and e.get("run") == run):
                AuditLog(self.path).append("opt_in", run=run, releases=releases, flags=flags)

    def opt_ins(self) -> dict[str, list[str]]:
        """Return each run's releases outside any epsilon its node opted into (all history)."""
        out: dict[str, list[str]] = {}
        for entry in self._entries():
            if entry["event"] == "opt_in":
                kept = out.setdefault(str(entry["run"]), [])
                kept += [str(r) for r in entry["releases"] if r not in kept]
        return out

    def reset(self, reason: str) -> None:
        """Start the budget again (the partner's decision; the history stays in the ledger)."""
        with self._locked():
            AuditLog(self.path).append("reset", reason=reason, spent_before=self.spent())
