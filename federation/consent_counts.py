"""What a node tells the server of its consent counts, so a deployed results.json carries them.

A node applies its own consent records (:mod:`fl_client.consent_gate`) and answers the run's
``query.hello`` with its counts for the run's purpose, as JSON under :data:`CONSENT_KEY` of the
reply's config record; the server keeps them (``VerticalOutcome.consent``) and the coordinator
writes them to ``results.json`` ``dataset.consent``, as a simulation does (docs/consent.md).

Aggregate counts only, never an ID. What they tell by default (:data:`REVEALED`) the run tells
already: the rows a party uses are its set size, sent in the hello's ``rows`` and seen by the
lender in the alignment. What they would add (:data:`OPT_IN`: the rows it holds, how many of its
customers withdrew or have no record, its file's digest) leaves only under the node's own
``--release-consent-counts``, recorded in its lifetime ledger; else those keys are null.

>>> counts = {"purpose": "credit_training", "dpv": "https://w3id.org/dpv#ResearchAndDevelopment",
...           "recipient": "lender", "rows_used": 8, "consented": 8, "rows_held": 10,
...           "withdrawn": 1, "no_record": 1, "file_sha256": "ab"}
>>> sent = reply_counts(counts, release_all=False)
>>> received(sent, "bureau")["rows_used"], received(sent, "bureau")["withdrawn"]
(8, None)
>>> received(reply_counts(counts, release_all=True), "bureau")["withdrawn"]
1
"""

from __future__ import annotations

import json
from typing import Any

from credit_data.consent import PURPOSES
from credit_data.errors import ConfigError
from federation.releases import OPT_IN_FLAGS, Outside, Release

__all__ = ["CONSENT_KEY", "OPT_IN", "OPT_IN_FLAG", "OPT_IN_RELEASE", "REVEALED",
           "consent_released", "received", "reply_counts", "run_summary"]

CONSENT_KEY = "consent"
"""The key of a hello reply's config record that carries the node's counts (JSON)."""
REVEALED = ("purpose", "dpv", "recipient", "rows_used", "consented")
"""Always sent: the run's purpose, the lender served, and the rows used (its set size)."""
OPT_IN = ("rows_held", "withdrawn", "no_record", "file_sha256")
"""Sent only under the node's :data:`OPT_IN_FLAG`: what the set size does not tell."""
OPT_IN_FLAG = OPT_IN_FLAGS[Release.consent_counts]
"""The node flag that lets :data:`OPT_IN` leave (node config key ``release-consent-counts``)."""
OPT_IN_RELEASE = Release.consent_counts.value
"""How the node's lifetime ledger names that opt-in (an ``opt_in`` line per run)."""
_COUNTS = ("rows_used", "consented", "rows_held", "withdrawn", "no_record")


def reply_counts(counts: dict[str, Any], *, release_all: bool) -> str:
    """Return what a node sends of its ``counts`` (:func:`fl_client.consent_gate`'s)."""
    return json.dumps({key: counts.get(key) if release_all or key in REVEALED else None
                       for key in (*REVEALED, *OPT_IN)})


def received(text: str, party: str) -> dict[str, Any]:
    """Read a node's counts as the server must: known keys only, counts as whole numbers.

    >>> received('{"purpose": "credit_training", "rows_used": "8"}', "bureau")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: bureau's consent counts: 'rows_used' must be a count or ...
    """
    try:
        sent = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{party}'s consent counts are not JSON: {exc}") from exc
    if not isinstance(sent, dict) or sent.get("purpose") not in PURPOSES:
        raise ConfigError(f"{party}'s consent counts do not name a purpose of "
                          f"{list(PURPOSES)}")
    out: dict[str, Any] = {"records": True}
    for key in (*REVEALED, *OPT_IN):
        value = sent.get(key)
        if key in _COUNTS and value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError(f"{party}'s consent counts: {key!r} must be a count or null, "
                              f"got {value!r}")
        if key not in _COUNTS and value is not None and not isinstance(value, str):
            raise ConfigError(f"{party}'s consent counts: {key!r} must be text or null, "
                              f"got {value!r}")
        out[key] = value
    return out


def run_summary(counts: dict[str, dict[str, Any]], parties: tuple[str, ...] | list[str],
                purpose: str) -> dict[str, Any] | None:
    """Return ``results.json`` ``dataset.consent`` from what the nodes sent (None: nothing).

    A party that sent no counts has no consent records (``records: false``: all rows used).
    """
    if not counts:
        return None
    return {"purpose": purpose, "dpv": PURPOSES[purpose],
            "parties": {p: counts.get(p, {"records": False}) for p in parties}}


def consent_released(consent: dict[str, Any] | None) -> list[dict[str, str | None]]:
    """Return the parties whose consent counts go beyond their set sizes (``outside_epsilon``).

    ``consent`` is ``results.json`` ``dataset.consent``. The :data:`OPT_IN` keys (the rows a
    party holds, its withdrawals, its customers without a record, its file's digest) are exact,
    outside any epsilon; on a deployment they leave only under the node's :data:`OPT_IN_FLAG`.

    >>> consent_released({"parties": {"bureau": {"records": True, "withdrawn": 3},
    ...                               "social": {"records": True, "withdrawn": None}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'party': 'bureau', 'release': 'consent_counts', 'receiver': 'server',
      'opt_in': '--release-consent-counts'}]
    """
    parties = (consent or {}).get("parties", {})
    return [Outside(Release.consent_counts, party, "server", (
        "the rows it holds, its withdrawals and its customers without a consent record, as "
        "exact counts")).to_dict() for party, counts in parties.items()
        if counts.get("records") and any(counts.get(k) is not None for k in OPT_IN)]
