"""The privacy ledger of a run: what each party spent, round by round, recomputably.

It raises on any inconsistency (an epsilon that went down, a mechanism that changed): a wrong
privacy claim is worse than a crash.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

from credit_data.errors import PrivacyLedgerError
from privacy.accounting import NEIGHBOURING


@dataclass(frozen=True)
class PartySpend:
    """A party's cumulative spend, with the parameters to recompute it.

    DP-SGD: ``noise_multiplier``, ``sample_rate`` and ``steps`` of the subsampled Gaussian.
    Embedding noise: a Gaussian mechanism with ``noise_multiplier`` times ``sensitivity``
    of noise, composed over ``steps`` releases with no sampling (``sample_rate`` 1). Label DP by
    randomized response: ``flip_probability``; epsilon is ``log((1 - p) / p)``.

    ``history``, where set, is the whole RDP history the epsilon composes (for example a noisy
    summary ``(z, 1.0, 1)`` before DP-SGD's ``(noise_multiplier, sample_rate, steps)``), at
    ``delta - selection_delta``. ``unit`` says what one neighbouring dataset changes (``record``,
    ``client``, ``label``). ``noise`` is ``os`` (secret randomness at the node) or
    ``reproducible`` (derived from the public seed: no guarantee). ``neighbouring`` names the
    relation the epsilon is accounted under: every entry of a ledger uses the same one,
    :data:`~privacy.accounting.NEIGHBOURING` (add/remove of one record; ``sensitivity`` is
    that relation's).
    """

    epsilon: float
    delta: float
    mechanism: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    flip_probability: float | None = None
    sensitivity: float | None = None
    history: list[list[float]] | None = None
    selection_delta: float | None = None
    unit: str = "record"
    noise: str = "os"
    neighbouring: str = NEIGHBOURING


class PrivacyLedger:
    """Cumulative spend per party plus one history row per round and party.

    A run may use several mechanisms (vertical federation: label DP, DP-SGD, embedding noise);
    each entry then has a key of its own (``lender/label_dp``). The summary's headline
    ``epsilon`` is the largest party total (:func:`party_totals`: all of one party's mechanisms
    composed; ``largest_party`` names it), never one entry of a party that spends on several;
    central DP's two entries are one mechanism seen per client and per record, so there it is
    the larger entry (the record level).

    >>> ledger = PrivacyLedger("dpsgd")
    >>> ledger.record(1, "lender-0", PartySpend(1.0, 1e-5, "dpsgd", 1.1, 0.01, 100, "rdp"))
    >>> ledger.record(2, "lender-0", PartySpend(1.5, 1e-5, "dpsgd", 1.1, 0.01, 200, "rdp"))
    >>> ledger.summary()["epsilon"]
    1.5
    >>> ledger.record(3, "lender-0", PartySpend(1.2, 1e-5, "dpsgd", 1.1, 0.01, 300, "rdp"))
    Traceback (most recent call last):
    ...
    credit_data.errors.PrivacyLedgerError: epsilon of lender-0 would fall from 1.5 to 1.2 in round 3
    """

    def __init__(self, *mechanisms: str) -> None:
        if not mechanisms:
            raise ValueError("a privacy ledger needs at least one mechanism")
        self.mechanisms = mechanisms
        self.mechanism = "+".join(mechanisms)
        self.parties: dict[str, PartySpend] = {}
        self.history: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []

    def record(self, server_round: int, party: str, spend: PartySpend) -> None:
        """Record a party's cumulative spend after ``server_round``."""
        before = self.parties.get(party)
        if spend.neighbouring != NEIGHBOURING:
            raise PrivacyLedgerError(f"{party} accounts {spend.mechanism} under the "
                                     f"{spend.neighbouring} relation, the ledger composes "
                                     f"{NEIGHBOURING} only: two relations are not one epsilon")
        if spend.mechanism not in self.mechanisms:
            raise PrivacyLedgerError(f"{party} reports mechanism {spend.mechanism}, the run uses "
                                     f"{self.mechanism}")
        if before is not None and spend.epsilon < before.epsilon - 1e-12:
            raise PrivacyLedgerError(f"epsilon of {party} would fall from {before.epsilon} to "
                                     f"{spend.epsilon} in round {server_round}")
        if before is not None and spend.steps < before.steps:
            raise PrivacyLedgerError(f"steps of {party} would fall from {before.steps} to "
                                     f"{spend.steps} in round {server_round}")
        self.parties[party] = spend
        self.history.append({"round": server_round, "party": party, "epsilon": spend.epsilon,
                             "steps": spend.steps})

    def refuse(self, server_round: int, party: str, reason: str) -> None:
        """Record that a party refused a round to stay within its budget."""
        self.refusals.append({"round": server_round, "party": party, "reason": reason})

    def summary(self) -> dict[str, Any]:
        """Summarise as results.json's ``privacy`` block: the largest party total, never a mean.

        >>> from privacy.accounting import epsilon_of
        >>> dpsgd = epsilon_of([(1.0, 0.1, 10)], delta=1e-5)  # the lender's and the bureau's
        >>> ledger = PrivacyLedger("label_dp", "dpsgd")
        >>> ledger.record(1, "lender/label_dp", PartySpend(3.0, 0.0, "label_dp", 0.0, 1.0, 1,
        ...                                                "randomized response"))
        >>> for party in ("lender", "bureau"):
        ...     ledger.record(1, f"{party}/dpsgd",
        ...                   PartySpend(dpsgd, 1e-5, "dpsgd", 1.0, 0.1, 10, "rdp"))
        >>> s = ledger.summary()
        >>> s["largest_party"], s["epsilon"] == 3.0 + dpsgd, s["by_mechanism"]["label_dp"]
        ('lender', True, 3.0)
        """
        parties = {p: asdict(s) for p, s in sorted(self.parties.items())}
        out: dict[str, Any] = {
            "mechanism": self.mechanism,
            "neighbouring": NEIGHBOURING,
            "guarantee": all(s.noise == "os" for s in self.parties.values()),
            "epsilon": max((s.epsilon for s in self.parties.values()), default=0.0),
            "delta": max((s.delta for s in self.parties.values()), default=0.0),
            "parties": parties,
            "history": copy.deepcopy(self.history),
            "refusals": copy.deepcopy(self.refusals),
        }
        if len(self.mechanisms) > 1:
            out["by_mechanism"] = {m: max((s.epsilon for s in self.parties.values()
                                           if s.mechanism == m), default=0.0)
                                   for m in self.mechanisms}
        if "central" not in self.mechanisms and self.parties:
            totals = party_totals(self.parties)
            largest = max(totals, key=lambda p: totals[p]["epsilon"])
            out["party_totals"] = totals
            out["largest_party"] = largest
            out["epsilon"] = totals[largest]["epsilon"]
            out["delta"] = max(t["delta"] for t in totals.values())
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the ledger after a resume."""
        return {"mechanism": self.mechanism, **self.summary()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ledger saved by :meth:`state_dict`."""
        if state["mechanism"] != self.mechanism:
            raise PrivacyLedgerError(f"checkpoint ledger uses {state['mechanism']}, this run "
                                     f"{self.mechanism}")
        if state.get("neighbouring") != NEIGHBOURING:
            raise PrivacyLedgerError(f"checkpoint ledger is accounted under "
                                     f"{state.get('neighbouring') or 'an unnamed relation'}, "
                                     f"this run under {NEIGHBOURING}: its epsilons do not compose "
                                     "with this run's")
        self.parties = {p: PartySpend(**s) for p, s in state["parties"].items()}
        self.history = copy.deepcopy(state["history"])
        self.refusals = copy.deepcopy(state["refusals"])


def party_totals(parties: dict[str, PartySpend]) -> dict[str, dict[str, Any]]:
    """Each party's epsilon for one of its records over all its mechanisms.

    Entries are grouped by party (``lender/label_dp`` and ``lender/dpsgd`` are the lender's;
    a horizontal lender's one entry is its own). The Gaussian mechanisms of a party (its noisy
    summary counted once, DP-SGD's steps, its embedding releases) compose in RDP; label DP's
    pure epsilon adds on top (basic composition). A release from an encoder trained with DP-SGD
    depends on both, so neither entry alone bounds it. A party with one entry totals that
    entry, as recorded.
    """
    from privacy.accounting import epsilon_of

    grouped: dict[str, list[PartySpend]] = {}
    for key, spend in parties.items():
        grouped.setdefault(key.split("/")[0], []).append(spend)
    out: dict[str, dict[str, Any]] = {}
    for party, spends in sorted(grouped.items()):
        if len(spends) == 1:
            out[party] = {"epsilon": spends[0].epsilon, "delta": spends[0].delta,
                          "mechanisms": [spends[0].mechanism]}
            continue
        stretches: list[tuple[float, float, int]] = []
        summary: tuple[float, float, int] | None = None
        pure, delta, selection = 0.0, 0.0, 0.0
        for spend in spends:
            if spend.mechanism == "label_dp":
                pure += spend.epsilon
                continue
            history = [tuple(h) for h in (spend.history or [[spend.noise_multiplier,
                                                             spend.sample_rate, spend.steps]])]
            if spend.selection_delta:  # the first stretch is the party's one noisy summary
                summary, history = history[0], history[1:]  # type: ignore[assignment]
            stretches += history  # type: ignore[arg-type]
            selection = max(selection, spend.selection_delta or 0.0)
            delta = max(delta, spend.delta - (spend.selection_delta or 0.0))
        if summary is not None:
            stretches.insert(0, summary)
        epsilon = (epsilon_of([(float(a), float(b), int(c)) for a, b, c in stretches], delta=delta)
                   if stretches else 0.0)
        out[party] = {"epsilon": epsilon + pure, "delta": delta + selection,
                      "mechanisms": sorted(s.mechanism for s in spends)}
    return out
