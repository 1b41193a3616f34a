"""What a node told one lender about which IDs it knows: one ledger per lender, capped.

Every path that answers a lender's IDs tells the lender which of them the node knows (and,
for a party, then sends their embeddings): the training alignment, batch scoring's alignment,
a scoring service's evaluations and a blacklist lookup. Membership is a release outside every
epsilon, so each of these paths charges the IDs it answers, before it answers, to one ledger
per lender at the node: ``<dir>/queries.json`` in the node's state directory (never a run's),
counted per UTC day and calendar month and per purpose (:class:`Purpose`). A request that
would pass a cap (:class:`QueryCaps`) is refused whole, naming the cap, the flag that sets it
and the spend, and nothing of it is answered.

Applications (scoring, a service) are capped per day and per month; training alignments, which
ask about the lender's historic applicants at once, per month and apart, so that a training
table does not open the monthly cap of applications to a sweep (:meth:`QueryCaps.of_node`).

>>> caps = QueryCaps.of_node(applications=100, training_rows=None)
>>> caps.per_month, caps.per_day, caps.training_per_month
(200, 20, 200)
>>> ledger = QueryLedger(None, "bureau", caps)
>>> now = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
>>> ledger.charge("lender", 15, Purpose.scoring, now).day_total
15
>>> ledger.charge("lender", 6, Purpose.service, now)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
federation.query_ledger.QueryLimit: bureau refuses: lender asked 15 IDs of applications on ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from credit_data.errors import AlignmentError, ConfigError
from federation.storage import write_atomic

__all__ = ["NODE_KEYS", "QUERY_MULTIPLE", "TRAINING_MULTIPLE", "Purpose", "QueryCaps",
           "QueryLedger", "QueryLimit", "QuerySpend"]

LEDGER_FILE = "queries.json"
QUERY_MULTIPLE = 2
"""Default monthly cap of applications' IDs: this many times the lender's declared monthly
applications (each applicant scored twice: a decision and a review, or a retry)."""
DAY_SHARE = 10
"""Default daily cap: the monthly cap over this (three times an average day's share: a busy
day passes, a sweep needs ten days to spend a month's cap)."""
TRAINING_MULTIPLE = 2
"""Default monthly cap of training alignments' IDs: this many times the lender's declared
training table (a run and one retry a month)."""
NODE_KEYS = ("lender-applications", "lender-training-rows", "max-queries",
             "max-queries-per-day")
"""A node's query flags, as its ``--node-config`` keys (:meth:`QueryCaps.of_node`)."""
RUN_CAP = "blacklists.max_queries"
"""The run config's cap: it may lower a node's caps, never raise them (in simulation: the cap)."""


class QueryLimit(AlignmentError):
    """A node refuses a request that would take a lender past one of its query caps."""


class Purpose(StrEnum):
    """Why the lender's IDs are answered: which cap they count against."""

    training = "training"  # a training alignment and a training run's lookup
    scoring = "scoring"  # a batch scoring run: its alignment and lookup
    service = "service"  # a scoring service's evaluations and lookups


APPLICATIONS = (Purpose.scoring, Purpose.service)
_LEGACY = "before"
"""An older ledger's monthly count (lookups and service evaluations): counted as applications."""


@dataclass(frozen=True)
class QueryCaps:
    """IDs one lender may have answered: applications per UTC day and month, training a month.

    Each cap carries the flag (or config key) that sets it, for the refusal to name.
    """

    per_day: int
    per_month: int
    training_per_month: int
    day_flag: str = RUN_CAP
    month_flag: str = RUN_CAP
    training_flag: str = RUN_CAP

    @classmethod
    def of_run(cls, max_queries: int) -> QueryCaps:
        """Return a simulation's caps: the run's ``blacklists.max_queries`` for each."""
        return cls(max_queries, max_queries, max_queries)

    @classmethod
    def of_node(cls, *, applications: int | None, training_rows: int | None,
                per_month: int | None = None, per_day: int | None = None) -> QueryCaps:
        """Return a node's caps from its flags (a node that declares nothing answers nothing).

        ``applications``: the lender's declared applications a month (``--lender-applications``,
        from the partner's agreement with it); ``training_rows``: its declared training table
        (``--lender-training-rows``; without it a training alignment counts against the
        monthly cap of applications); ``per_month`` and ``per_day`` (``--max-queries``,
        ``--max-queries-per-day``) set the caps outright.

        >>> QueryCaps.of_node(applications=None, training_rows=None).per_month
        0
        >>> QueryCaps.of_node(applications=10_000, training_rows=50_000, per_day=900)
        ... # doctest: +NORMALIZE_WHITESPACE
        QueryCaps(per_day=900, per_month=20000, training_per_month=100000,
                  day_flag='--max-queries-per-day', month_flag='--lender-applications',
                  training_flag='--lender-training-rows')
        """
        if per_month is not None:
            month, month_flag = per_month, "--max-queries"
        else:
            month, month_flag = QUERY_MULTIPLE * (applications or 0), "--lender-applications"
        day, day_flag = ((per_day, "--max-queries-per-day") if per_day is not None
                         else (math.ceil(month / DAY_SHARE), month_flag))
        training, training_flag = ((TRAINING_MULTIPLE * training_rows, "--lender-training-rows")
                                   if training_rows is not None else (month, month_flag))
        return cls(day, month, training, day_flag, month_flag, training_flag)

    def lowered(self, max_queries: int) -> QueryCaps:
        """Return these caps, each lowered to the run's ``blacklists.max_queries`` if above it."""
        def lower(cap: int, flag: str) -> tuple[int, str]:
            return (cap, flag) if cap <= max_queries else (max_queries, RUN_CAP)

        (day, day_flag), (month, month_flag), (training, training_flag) = (
            lower(self.per_day, self.day_flag), lower(self.per_month, self.month_flag),
            lower(self.training_per_month, self.training_flag))
        return QueryCaps(day, month, training, day_flag, month_flag, training_flag)


def check_count(value: object, key: str) -> int | None:
    """Return a node config's count (None when unset); refuse anything but a positive integer.

    >>> check_count(5, "max-queries"), check_count(None, "max-queries")
    (5, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"node config: '{key}' must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class QuerySpend:
    """One charge: what it asked, and the lender's totals after it against the caps.

    Training counts a month only (``day_total`` and ``cap_day`` are None).
    """

    lender: str
    purpose: Purpose
    asked: int
    month_total: int
    cap_month: int
    day_total: int | None = None
    cap_day: int | None = None

    def metrics(self) -> dict[str, float]:
        """Return the figures a node reports with its answer: what it released, its spend."""
        out = {"asked": float(self.asked), "queries_month": float(self.month_total),
               "max_queries": float(self.cap_month)}
        if self.day_total is not None and self.cap_day is not None:
            out |= {"queries_day": float(self.day_total),
                    "max_queries_per_day": float(self.cap_day)}
        return out


def _counts(value: object) -> dict[str, int]:
    if isinstance(value, int):  # an older ledger: one count a month
        return {_LEGACY: value}
    return {str(k): int(v) for k, v in (value or {}).items()}  # type: ignore[attr-defined]


@dataclass
class QueryLedger:
    """The IDs a node answered each lender, kept in ``<directory>/queries.json``.

    ``directory=None`` keeps the count in memory only (a unit test's node).
    """

    directory: Path | None
    node: str
    caps: QueryCaps

    def _path(self) -> Path | None:
        return None if self.directory is None else self.directory / LEDGER_FILE

    def _read(self) -> dict[str, dict[str, object]]:
        path = self._path()
        if path is None:
            return self.__dict__.setdefault("_memory", {})
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AlignmentError(f"{path}: the node's query ledger is not valid JSON ({exc}); "
                                 "refusing to answer without it") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the ledger's lock: two answers at once cannot both read the old count."""
        path = self._path()
        if path is None:
            yield
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path.parent / ".queries.lock", "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def spent(self, lender: str, now: dt.datetime | None = None
              ) -> dict[str, dict[str, int]]:
        """Return the lender's counts per purpose for the day and the month of ``now``."""
        day, month = _periods(now)
        entry = self._read().get(lender, {})
        return {"day": _counts(entry.get(day)), "month": _counts(entry.get(month))}

    def charge(self, lender: str, n: int, purpose: Purpose,
               now: dt.datetime | None = None) -> QuerySpend:
        """Count ``n`` IDs answered to ``lender``; refuse (:class:`QueryLimit`) past a cap.

        Read, check and write happen under the lock; a refused request is not counted.
        """
        day, month = _periods(now)
        with self._locked():
            book = self._read()
            entry = book.setdefault(lender, {})
            by_day, by_month = _counts(entry.get(day)), _counts(entry.get(month))
            day_total, month_total = self._check(lender, n, purpose, by_day, by_month, day, month)
            by_day[purpose] = by_day.get(purpose, 0) + n
            by_month[purpose] = by_month.get(purpose, 0) + n
            entry[day], entry[month] = by_day, by_month
            path = self._path()
            if path is not None:
                write_atomic(path, json.dumps(book, indent=1, sort_keys=True), mode=0o600)
        c = self.caps
        if purpose is Purpose.training:
            return QuerySpend(lender, purpose, n, month_total + n, c.training_per_month)
        return QuerySpend(lender, purpose, n, month_total + n, c.per_month, day_total + n,
                          c.per_day)

    def _check(self, lender: str, n: int, purpose: Purpose, by_day: dict[str, int],
               by_month: dict[str, int], day: str, month: str) -> tuple[int, int]:
        """Refuse ``n`` more IDs past a cap; return the day's and the month's totals before."""
        c = self.caps
        if purpose is Purpose.training:
            spent = by_month.get(purpose, 0)
            limits = [(spent, c.training_per_month, c.training_flag, "for training", "in",
                       month, "month")]
            day_total = by_day.get(purpose, 0)
        else:
            day_total = sum(v for k, v in by_day.items() if k != Purpose.training)
            spent = sum(v for k, v in by_month.items() if k != Purpose.training)
            limits = [(day_total, c.per_day, c.day_flag, "of applications", "on", day, "day"),
                      (spent, c.per_month, c.month_flag, "of applications", "in", month,
                       "month")]
        for before, cap, flag, what, on, period, span in limits:
            if before + n > cap:
                raise QueryLimit(
                    f"{self.node} refuses: {lender} asked {before} IDs {what} {on} {period} and "
                    f"now asks {n} more ({purpose.value}), past this node's cap of {cap} IDs a "
                    f"{span} ({flag}); nothing was answered: ask fewer IDs or wait for the next "
                    f"{span}")
        return day_total, spent


def _periods(now: dt.datetime | None) -> tuple[str, str]:
    """Return the ledger's day and month of ``now`` (UTC): ``2026-12-05``, ``2026-12``."""
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return at.strftime("%Y-%m-%d"), at.strftime("%Y-%m")
