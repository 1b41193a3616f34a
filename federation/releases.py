"""What a party's rows give away outside any epsilon, and when a node refuses to give it.

One function decides, for training and for scoring alike, whether a node takes part
(:func:`refusal`), over the list of a party's per-record releases that no epsilon covers
(:func:`outside_epsilon`):

* **opted in** by the node's own config, capped or not: exact (un-noised) embeddings a passive
  party sends the lender (``--release-exact-embeddings``), the per-record gradients a lender
  sends each party (``--release-record-gradients``);
* **refused by a capped node** (``--max-epsilon`` a number), taken by an uncapped one: a run
  with no differential privacy for the party, central DP (the server noises an update after
  seeing it);
* **counted**: membership of the lender's IDs a node answers, charged to its query ledger
  (:mod:`federation.query_ledger`), and the intersection the lender sends each party, its own
  request.

A simulation is not a node (``opted=None``): nothing is refused for want of an opt-in, and
``results.json`` states every release (``outside_epsilon``). A capped simulated party still
refuses what it cannot account.

>>> from privacy.settings import PrivacyMechanism, PrivacySettings
>>> preset = PrivacySettings(mechanism=PrivacyMechanism.dpsgd, label_epsilon=3.0)
>>> [o.release.value for o in outside_epsilon(preset, "bureau", Mode.vertical)]
['exact_embeddings', 'membership']
>>> why = refusal(outside_epsilon(preset, "bureau", Mode.vertical), capped=True,
...               opted=frozenset())
>>> why.endswith("outside any epsilon; this node sends it only with its own "
...              "--release-exact-embeddings")
True
>>> refusal(outside_epsilon(preset, "bureau", Mode.vertical), capped=True,
...         opted=frozenset({Release.exact_embeddings})) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from credit_data.settings import LABEL_HOLDER
from federation.settings import Mode
from privacy.settings import PrivacyMechanism, PrivacySettings

__all__ = ["OPT_IN_FLAGS", "OPT_IN_KEYS", "Outside", "Release", "opted_in", "outside_epsilon",
           "refusal", "run_outside_epsilon"]


class Release(StrEnum):
    """A kind of release outside every epsilon: per record, or counts a node opts into."""

    exact_embeddings = "exact_embeddings"
    record_gradients = "record_gradients"
    no_dp = "rows_without_dp"
    central = "update_before_central_dp"
    membership = "membership"
    intersection = "intersection"
    explanations = "explanations"
    monitoring_counts = "monitoring_counts"
    consent_counts = "consent_counts"


OPT_IN_FLAGS = {Release.exact_embeddings: "--release-exact-embeddings",
                Release.record_gradients: "--release-record-gradients",
                Release.explanations: "--release-explanations",
                Release.monitoring_counts: "--release-monitoring",
                Release.consent_counts: "--release-consent-counts"}
"""The node flag that lets each opt-in release leave."""
OPT_IN_KEYS = {flag.removeprefix("--"): release for release, flag in OPT_IN_FLAGS.items()}
"""The same, as ``--node-config`` keys (true or false)."""
CAPPED_REFUSES = (Release.no_dp, Release.central)
"""Releases a capped node refuses whatever it opted into; an uncapped node takes them."""


@dataclass(frozen=True)
class Outside:
    """One per-record release outside every epsilon: what, who receives it, why."""

    release: Release
    party: str
    receiver: str
    why: str

    @property
    def flag(self) -> str | None:
        """The node flag that opts into it (None: it cannot be opted into)."""
        return OPT_IN_FLAGS.get(self.release)

    def to_dict(self) -> dict[str, str | None]:
        """Return the release as ``results.json`` states it."""
        return {"party": self.party, "release": self.release.value,
                "receiver": self.receiver, "opt_in": self.flag}


def _training(privacy: PrivacySettings, party: str, mode: Mode) -> list[Outside]:
    """Return a training run's releases outside any epsilon at ``party`` (not a holder)."""
    out: list[Outside] = []
    if privacy.mechanism is PrivacyMechanism.central:
        out.append(Outside(Release.central, party, "server", (
            "central DP is applied by the server, after it has seen the node's update; the "
            "node accounts no epsilon of its own")))
    elif privacy.mechanism is not PrivacyMechanism.dpsgd and not (
            mode is Mode.vertical and (privacy.label_epsilon if party == LABEL_HOLDER
                                       else privacy.embedding_epsilon) is not None):
        out.append(Outside(Release.no_dp, party, "server" if mode is Mode.horizontal
                           else "the other parties",
                           "the run has no differential privacy for this party"))
    if mode is not Mode.vertical:
        return out
    if party == LABEL_HOLDER:
        out.append(Outside(Release.record_gradients, party, "each passive party", (
            "the run sends each party the gradient of the loss for each of its aligned "
            "customers' embeddings, every exchange: label DP bounds what they say of the true "
            "labels, no epsilon what they say of the lender's features")))
        out.append(Outside(Release.intersection, party, "each passive party",
                           "each party learns which of its customers are the lender's "
                           "applicants (the lender's own request)"))
        return out
    if privacy.embedding_epsilon is None:
        out.append(Outside(Release.exact_embeddings, party, LABEL_HOLDER, (
            "the run sends the lender the exact embedding of every aligned customer, every "
            "exchange and at the end, without embedding noise (privacy.embedding_epsilon): "
            "DP-SGD bounds the encoder's weights, not each embedding, a deterministic function "
            "of its row")))
    return out


def _membership(party: str) -> Outside:
    return Outside(Release.membership, party, LABEL_HOLDER,
                   "the lender learns which of the IDs it asks this node knows (charged to "
                   "the node's query ledger, capped per day and month)")


def outside_epsilon(privacy: PrivacySettings, party: str, mode: Mode, *,
                    holders: tuple[str, ...] = (), scoring: bool = False,
                    embedding_noise: bool | None = None) -> tuple[Outside, ...]:
    """Return ``party``'s per-record releases outside every epsilon, in a run or in scoring.

    ``privacy``: the run's (in scoring: ignored); ``holders``: the run's blacklist holders (a
    holder answers lookups only); ``scoring``: scoring applicants with a trained model, whose
    embeddings carry noise or not (``embedding_noise``: the bundle's).
    """
    if party in holders:
        return (_membership(party),)
    if not scoring:
        out = _training(privacy, party, mode)
        if mode is Mode.vertical and party != LABEL_HOLDER:
            out.append(_membership(party))
        return tuple(out)
    if mode is not Mode.vertical:
        return ()
    if party == LABEL_HOLDER:
        return (Outside(Release.intersection, party, "each passive party",
                        "each party learns which of its customers are the applicants scored"),)
    exact = () if embedding_noise else (Outside(Release.exact_embeddings, party, LABEL_HOLDER, (
        "scoring would send the lender the exact embeddings of the applicants it knows: the "
        "model's embeddings carry no noise (it was trained without "
        "privacy.embedding_epsilon)")),)
    return (*exact, _membership(party))


def refusal(outside: tuple[Outside, ...], *, capped: bool,
            opted: frozenset[Release] | None) -> str | None:
    """Say why a node refuses to take part (None: it may), from its releases outside epsilon.

    ``capped``: the node caps its epsilon; ``opted``: the releases its own config opts into
    (None: not a node, a simulation, where only a capped party refuses).
    """
    for o in outside:
        if o.flag is not None:
            if opted is not None and o.release not in opted:
                return (f"{o.party}: {o.why}, which leaves outside any epsilon; this node "
                        f"sends it only with its own {o.flag}")
            if opted is None and capped:
                return (f"{o.party}: {o.why}, which leaves outside any epsilon; a party that "
                        "caps its epsilon (privacy.max_epsilon) refuses it")
        elif o.release in CAPPED_REFUSES and capped:
            return (f"{o.party}: this node caps its epsilon (--max-epsilon) and refuses a run "
                    f"that releases its rows outside any epsilon: {o.why}")
    return None


def run_outside_epsilon(privacy: PrivacySettings, parties: list[str], mode: Mode,
                        holders: tuple[str, ...] = ()) -> list[dict[str, str | None]]:
    """Return every party's releases outside any epsilon in a run, as ``results.json`` says.

    >>> [r["release"] for r in run_outside_epsilon(PrivacySettings(), ["lender-0"],
    ...                                            Mode.horizontal)]
    ['rows_without_dp']
    """
    return [o.to_dict() for party in (*parties, *holders)
            for o in outside_epsilon(privacy.for_party(party), party, mode, holders=holders)]


def opted_in(outside: tuple[Outside, ...]) -> list[str]:
    """Return the opt-in releases among ``outside`` (what a node records it let out)."""
    return sorted({o.release.value for o in outside if o.flag is not None})
