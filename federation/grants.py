"""A partner's grant: which purposes and which lenders its node serves, and until when.

A node's operator names its grant in its own config (``--grant``, ``--grant-purposes``,
``--grant-lenders``, ``--grant-expires``; docs/consent.md); the coordinator cannot change it.
Every message of a run outside the grant (another purpose, another lender, after the expiry)
is refused, naming the grant, and the refusal lands in the node's audit log. Purposes are
those of :mod:`credit_data.consent`; a run's purpose is :func:`run_purpose`'s.

>>> grant = Grant.parse("bureau-2026", "credit_training,credit_scoring", "acme-bank",
...                     "2026-12-31T00:00:00Z")
>>> now = datetime(2026, 6, 1, tzinfo=UTC)
>>> grant_refusal(grant, party="bureau", purpose="credit_scoring", lender="acme-bank", now=now)
>>> print(grant_refusal(grant, party="bureau", purpose="fraud_check", lender="acme-bank",
...                     now=now))  # doctest: +NORMALIZE_WHITESPACE
bureau: purpose 'fraud_check' is outside this node's grant 'bureau-2026'
(purposes: credit_training, credit_scoring); refused
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from credit_data.consent import FRAUD_CHECK, MONITORING, PURPOSES, SCORING, TRAINING
from credit_data.errors import ConfigError


@dataclass(frozen=True)
class Grant:
    """What a node serves: ``purposes`` and ``lenders`` (empty: any), until ``expires``."""

    name: str
    purposes: tuple[str, ...] = ()
    lenders: tuple[str, ...] = ()
    expires: datetime | None = None

    @classmethod
    def parse(cls, name: str, purposes: str = "", lenders: str = "",
              expires: str = "") -> Grant:
        """Read a grant from the node's config (comma-separated lists, an ISO 8601 expiry).

        >>> Grant.parse("g", "credit_marketing")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        credit_data.errors.ConfigError: node config: 'grant-purposes' names unknown purpose ...
        """
        if not name:
            raise ConfigError("node config: 'grant' must name the grant (its agreement's ID)")
        wanted = tuple(p.strip() for p in purposes.split(",") if p.strip())
        bad = [p for p in wanted if p not in PURPOSES]
        if bad:
            raise ConfigError(f"node config: 'grant-purposes' names unknown purpose {bad[0]!r}; "
                              f"the purposes are {list(PURPOSES)}")
        until = None
        if expires:
            try:
                until = datetime.fromisoformat(expires.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ConfigError(f"node config: 'grant-expires' must be an ISO 8601 time, got "
                                  f"{expires!r}") from exc
            if until.tzinfo is None:
                until = until.replace(tzinfo=UTC)
        return cls(name, wanted, tuple(x.strip() for x in lenders.split(",") if x.strip()),
                   until)


def run_purpose(task: str, holder: bool) -> str:
    """Return the purpose a run serves at a node: a holder's lookups, scoring or training.

    >>> run_purpose("serve", False), run_purpose("train", True), run_purpose("monitor", False)
    ('credit_scoring', 'fraud_check', 'monitoring')
    """
    if holder:
        return FRAUD_CHECK
    if task == "monitor":
        return MONITORING
    return SCORING if task in ("score", "serve") else TRAINING


def grant_refusal(grant: Grant | None, *, party: str, purpose: str, lender: str,
                  now: datetime) -> str | None:
    """Return why the node refuses a run outside its grant (None: inside it, or no grant)."""
    if grant is None:
        return None
    if grant.expires is not None and now >= grant.expires:
        return (f"{party}: this node's grant '{grant.name}' expired at "
                f"{grant.expires.isoformat()}; refused")
    if grant.purposes and purpose not in grant.purposes:
        return (f"{party}: purpose '{purpose}' is outside this node's grant '{grant.name}' "
                f"(purposes: {', '.join(grant.purposes)}); refused")
    if grant.lenders and lender not in grant.lenders:
        return (f"{party}: lender '{lender}' is outside this node's grant '{grant.name}' "
                f"(lenders: {', '.join(grant.lenders)}); refused")
    return None
