"""A resumed run's claim on the run it continues, at one node: binding once it has spent there.

A run is continued once (no forks): two continuations of one point would each spend the node's
privacy budget, and the node's lifetime ledger, which counts a chain of resumed runs under its
first run with cumulative figures, would charge the two as one. A continuation claims the run
it continues at its first message (``<earlier run>/resumed-by``: its name). The claim binds once
the node has recorded spend for the continuation (``<its run>/resume-spent``). A continuation
that spent nothing at the node (refused by the node's budget, or stopped by another party before
it trained) holds nothing: a later resume of the same run takes the claim over, and the
continuation it replaced is refused from then on. A refused resume leaves the run resumable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from credit_data.errors import ConfigError
from federation.lifetime_budget import LifetimeBudget
from federation.storage import write_atomic

log = logging.getLogger("credit_fl")

RESUMED_BY = "resumed-by"
"""In a run's directory once a later run continues it: that run's name."""
SPENT = "resume-spent"
"""In a resumed run's directory once the node recorded spend for it: its claim binds."""
LOCK = ".resumed-by.lock"
MARKERS = (RESUMED_BY, SPENT, LOCK)
"""Files of the claim, never carried into a resumed run's copy of a directory."""


@dataclass(frozen=True)
class Continuation:
    """Run ``name`` (directory ``run_dir``) continuing the node's run in ``earlier``."""

    earlier: Path
    run_dir: Path
    name: str
    resume: str  # as the coordinator gave it, for messages

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.earlier / LOCK).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def holder(self) -> str | None:
        """Return the run that holds the claim on the earlier run (None: no run yet)."""
        path = self.earlier / RESUMED_BY
        return path.read_text().strip() if path.is_file() else None

    def claim(self) -> None:
        """Claim the earlier run; take over a claim whose run spent nothing at this node.

        Raises :class:`ConfigError` when a run that spent here holds it: a run is continued
        once.
        """
        with self._locked():
            holder = self.holder()
            if holder is not None and holder != self.name:
                if (self.earlier.parent / holder / SPENT).is_file():
                    raise ConfigError(f"resume={self.resume}: run '{self.earlier.name}' was "
                                      f"already continued by run '{holder}', which spent "
                                      "privacy budget at this node; a run is continued once")
                log.warning("run '%s' takes over the continuation of run '%s' from run '%s', "
                            "which spent nothing at this node", self.name, self.earlier.name,
                            holder)
            write_atomic(self.earlier / RESUMED_BY, self.name, mode=0o600)

    def check(self) -> None:
        """Raise :class:`ConfigError` if a later resume took this run's claim over."""
        holder = self.holder()
        if holder != self.name:
            raise ConfigError(f"resume={self.resume}: run '{self.name}' no longer continues run "
                              f"'{self.earlier.name}' at this node: run '{holder}' took the "
                              "continuation over before this one spent anything here")

    def record_spend(self, budget: LifetimeBudget, spender: str,
                     figures: dict[str, float]) -> tuple[bool, float]:
        """Record a reply's ``figures`` in the lifetime ledger while holding the claim.

        Returns :meth:`LifetimeBudget.check_and_record`'s (recorded, total). Spend that grows
        the ledger makes the claim binding. Raises :class:`ConfigError` (nothing recorded) if
        the claim was taken over.
        """
        with self._locked():
            self.check()
            before = budget.runs().get(spender)
            recorded, total = budget.check_and_record(spender, figures)
            if recorded and budget.runs().get(spender) != before:
                write_atomic(self.run_dir / SPENT, json.dumps({"continues": self.earlier.name,
                                                               "lifetime_epsilon": total}))
        return recorded, total
