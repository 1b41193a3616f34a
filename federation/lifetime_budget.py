"""A node's lifetime privacy budget on one dataset: every run's spend, kept on the node's disk.

A partner's ``--max-epsilon`` bounds what its rows give away over the node's whole life on that
data, not per run: three runs at epsilon 0.9 against a cap of 1.0 must not all pass. The node
keeps one ledger per dataset, ``<state-dir>/budget/<fingerprint>.jsonl``, where the fingerprint
is the SHA-256 of the data file's bytes (the same file moved or copied keeps its ledger; a
changed file is another dataset). The ledger is an authenticated log
(:mod:`federation.audit_log`): one line each time a run's spend grows, verified at every read,
so a ledger whose lines were edited, reordered, removed from the middle or emptied stops the
node instead of giving it a fresh budget. It guards against the coordinator and against
accidents, not against the node's operator: lines cut off the end, a deleted file or a backup
put back are not detected (the operator can reset the budget anyway).

How a run's spend adds up (basic composition, an upper bound): within a run, each mechanism's
figure is cumulative (the node's accountant composes its steps), and a noisy summary is
composed into the DP-SGD figure that follows it, so the run counts the larger of the two; the
run's other figures add (label DP, embedding noise). Across runs the spends add. Only the
partner resets the ledger (:mod:`deployment.budget`); a reset is a line of the ledger too, so
the history stays.
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
COMPOSED_INTO = {"summary_epsilon": "epsilon"}
"""A figure whose mechanism the other figure's accountant already composes: counted as one."""


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
    """One node's ledger on one dataset, and its cap (None: recorded, not capped)."""

    path: Path
    dataset: str
    cap: float | None

    @classmethod
    def of(cls, state_dir: Path, data_path: Path, cap: float | None) -> LifetimeBudget:
        """Return the ledger in the node's state directory for the data file ``data_path``."""
        fingerprint = dataset_fingerprint(data_path)
        return cls(state_dir / BUDGET_DIR / f"{fingerprint[:32]}.jsonl", fingerprint, cap)

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
        out: dict[str, dict[str, float]] = {}
        for entry in self._entries():
            if entry["event"] == "reset":
                out = {}
            elif entry["event"] == "spend":
                out[str(entry["run"])] = {k: float(v) for k, v in entry["figures"].items()}
        return out

    def spent(self, *, besides: str | None = None) -> float:
        """Epsilon spent on this dataset by every run (but ``besides``) since the last reset."""
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
                AuditLog(self.path).append("spend", run=run, figures=merged,
                                           lifetime_epsilon=total, dataset=self.dataset)
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
                AuditLog(self.path).append("spend", run=run, figures=merged,
                                           lifetime_epsilon=total, dataset=self.dataset)
        return True, total

    def reset(self, reason: str) -> None:
        """Start the budget again (the partner's decision; the history stays in the ledger)."""
        with self._locked():
            AuditLog(self.path).append("reset", reason=reason, spent_before=self.spent(),
                                       dataset=self.dataset)
