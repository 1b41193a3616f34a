"""Scoring new applicants with a vertical model's bundles: five message rounds, routed blind.

1. ``score_hello`` (every node): each names its party and its bundle's model; the lender also
   blinds its applicants' IDs (one PSI request for every party).
2. ``score_answer`` (each passive party): the PSI answer, from the party's cached blinded set.
3. ``score_intersect`` (lender): which applicants each party knows; each party's share sealed.
4. ``score_embed`` (each passive party): the embeddings of the applicants it knows, sealed for
   the lender (:mod:`federation.sealed`).
5. ``score`` (lender): the scores, kept at the lender; the server gets counts.

The server sees blinded IDs, sealed messages (the embeddings among them) and counts: never an
ID, a feature value, an embedding or a score.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp import Grid

from credit_data.errors import ConfigError, FederationError
from credit_data.settings import LABEL_HOLDER
from federation.consent_counts import CONSENT_KEY, received
from federation.protocol import ARRAYS, CONFIG, METRICS, STATUS, ScoringMessage
from federation.run_settings import RunSettings
from federation.settings import Mode
from fl_server.horizontal_rounds import wait_for_nodes
from fl_server.node_pins import NodePins, PinnedNodes, pinned_nodes
from fl_server.vertical_rounds import Recorder, Router, Traffic

log = logging.getLogger("credit_fl")

MISSING_PARTY = ("error", "unknown")


@dataclass(frozen=True)
class ScoringServerSettings:
    """What the scoring coordinator needs: how many nodes, how long to wait, absent parties.

    ``pinned_nodes``: ``((party, node_id), ...)``, each party's registered node on a deployment
    (:mod:`fl_server.node_pins`); empty pins nothing, as in simulation.
    """

    n_nodes: int
    missing_party: str = "error"
    explain: bool = False  # reason codes: split_mlp two more rounds, a scorecard none
    round_timeout: float = 300.0
    connect_timeout: float = 180.0
    pinned_nodes: PinnedNodes = ()


def scoring_server_settings(run: RunSettings, *, pins: Mapping[str, int] | None = None
                            ) -> ScoringServerSettings:
    """Build the scoring server's settings from the run's (the same in simulation and deployment).

    Vertical: one node per party of ``federation.parties``, and one per blacklist holder;
    horizontal: one per lender. ``pins`` maps each party to its node ID on a deployment.
    """
    nodes = (run.partition.n_lenders if run.federation.mode is Mode.horizontal
             else len(run.federation.parties) + len(run.blacklists.holders))
    return ScoringServerSettings(n_nodes=nodes,
                                 missing_party=run.scoring.missing_party.value,
                                 explain=(run.explain.enabled and run.federation.mode is
                                          Mode.vertical and run.model.kind.value in (
                                              "split_mlp", "scorecard")),
                                 round_timeout=run.federation.round_timeout,
                                 connect_timeout=run.federation.connect_timeout,
                                 pinned_nodes=pinned_nodes(pins))


@dataclass
class ScoringOutcome(Traffic):
    """What the scoring server leaves behind: counts, never a score."""

    model_id: str = ""
    parties: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    applicants: int = 0
    alignment: dict[str, dict[str, Any]] = field(default_factory=dict)
    lender: dict[str, Any] = field(default_factory=dict)
    blacklists: dict[str, dict[str, Any]] = field(default_factory=dict)  # counts per holder
    lenders: dict[str, dict[str, Any]] = field(default_factory=dict)  # horizontal: per lender
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    explanation: dict[str, Any] = field(default_factory=dict)  # counts and global tables only
    seconds: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None
    refused_nodes: list[dict[str, Any]] = field(default_factory=list)
    """Nodes refused at hello for claiming a pinned party (:mod:`fl_server.node_pins`)."""
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each party's consent counts, as its node sent them (:mod:`federation.consent_counts`)."""


def absent_parties(absent: list[str]) -> str:
    """Say which parties that trained the model are absent, and what to do."""
    return (f"{absent} trained this model but are absent from the scoring federation; bring "
            "their nodes up, or set scoring.missing_party=unknown to score their applicants as "
            "unknown to them")


def _config(**values: Any) -> RecordDict:
    return RecordDict({CONFIG: ConfigRecord(values)})


def _info(content: RecordDict) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(str(content[CONFIG]["info"])))


def hello(grid: Grid, router: Router, out: ScoringOutcome, s: ScoringServerSettings, *,
          serve: bool = False) -> tuple[ConfigRecord, tuple[str, ...], tuple[str, ...]]:
    """Check every node's bundle against the lender's model; return the lender's hello.

    Returns the lender's config (its blinded request, or with ``serve`` its channel key for a
    scoring service), the passive parties present and the blacklist holders present.
    """
    pins = NodePins(s.pinned_nodes)
    nodes = pins.addressed(wait_for_nodes(grid, s.n_nodes, s.connect_timeout, s.pinned_nodes),
                           out.refused_nodes)
    router.node = {f"node {n}": n for n in nodes}
    replies = router.send(ScoringMessage.HELLO, {f"node {n}": _config(serve=1) if serve
                                                 else RecordDict() for n in nodes})
    router.node = {}
    hellos: dict[str, RecordDict] = {}
    for name, content in replies.items():
        party = str(content[STATUS]["party"])
        if pins.refuse(int(name.removeprefix("node ")), party, out.refused_nodes):
            out.communication.pop(name, None)  # traffic is counted per party
            continue
        if party in hellos:
            raise FederationError(f"two nodes both say they are '{party}'")
        hellos[party] = content
        router.node[party] = int(name.removeprefix("node "))
        counts = content.config_records.get(CONFIG, ConfigRecord()).get(CONSENT_KEY)
        if counts:
            try:
                out.consent[party] = received(str(counts), party)
            except ConfigError as exc:
                raise FederationError(f"score_hello: {exc}") from exc
        if name in out.communication:
            out.communication[party] = out.communication.pop(name)
    if LABEL_HOLDER not in hellos:
        raise FederationError(f"no node is the '{LABEL_HOLDER}': scoring needs the lender's "
                              "bundle and applicants")
    lender = _info(hellos[LABEL_HOLDER])
    out.model_id = lender["model_id"]
    holders = tuple(h for h in lender.get("blacklists", []) if h in hellos)
    for party, content in hellos.items():
        if party in holders:  # a holder holds a list, not a bundle
            continue
        model = _info(content)["model_id"]
        if model != out.model_id:
            raise FederationError(f"{party}'s bundle is of model {model}, the lender's of model "
                                  f"{out.model_id}: bundles of different training runs cannot "
                                  "score together (fingerprint mismatch)")
    expected = tuple(lender["passive"])
    out.absent = [p for p in (*expected, *lender.get("blacklists", [])) if p not in hellos]
    if out.absent and s.missing_party == "error":
        raise FederationError(absent_parties(out.absent))
    for party in out.absent:
        log.warning("%s is absent: every applicant is scored as unknown to it", party)
    out.parties = [LABEL_HOLDER, *[p for p in expected if p in hellos]]
    out.applicants = int(lender["rows"])
    present = tuple(p for p in expected if p in hellos)
    return cast(ConfigRecord, hellos[LABEL_HOLDER][CONFIG]), present, holders


def run_scoring(grid: Grid, s: ScoringServerSettings,
                recorder: Recorder | None = None) -> ScoringOutcome:
    """Route one scoring request through the lender and the parties; return its counts."""
    if s.missing_party not in MISSING_PARTY:
        raise FederationError(f"scoring.missing_party must be one of {MISSING_PARTY}, got "
                              f"'{s.missing_party}'")
    out = ScoringOutcome()
    router = Router(grid, out, s.round_timeout, recorder)
    start = time.perf_counter()
    request, passive, holders = hello(grid, router, out, s)
    out.seconds["hello"] = time.perf_counter() - start
    embeddings: dict[str, Any] = {}
    if passive or holders:  # a holder answers beside the parties: no round of its own
        embeddings = _align(router, out, s, request, passive, holders)
    _score(router, out, s, passive, embeddings)
    out.seconds["total"] = time.perf_counter() - start
    return out


def _align(router: Router, out: ScoringOutcome, s: ScoringServerSettings,
           request: ConfigRecord, passive: tuple[str, ...], holders: tuple[str, ...]
           ) -> dict[str, Any]:
    """Route the PSI answers (and the holders' lookup), the intersection, then the embeddings.

    Returns what the lender receives to score: each party's sealed embeddings (and, when it
    explains, its sealed path or codes).
    """
    step = time.perf_counter()
    answers = router.send(
        {p: str(ScoringMessage.ANSWER) for p in passive}
        | dict.fromkeys(holders, str(ScoringMessage.LIST_ANSWER)),
        {p: _config(request=request["request"], key=request["key"],
                    lender_rows=out.applicants) for p in passive}
        | {h: _config(request=request["request"], key=request["key"],
                      asked=out.applicants, purpose="scoring") for h in holders})
    forward: dict[str, Any] = {"passive": list(passive)} if passive else {}
    if holders:  # Flower's ConfigRecord cannot size an empty list
        forward["holders"] = list(holders)
    for p in passive:
        for key in ("setup", "response", "key"):
            forward[f"{p}.{key}"] = answers[p][CONFIG][key]
    for h in holders:
        for key in ("setup", "response", "signature"):
            forward[f"{h}.{key}"] = answers[h][CONFIG][key]
    inter = router.send(ScoringMessage.INTERSECT, {LABEL_HOLDER: _config(**forward)})
    out.seconds["alignment"] = time.perf_counter() - step
    counts, sealed = inter[LABEL_HOLDER][METRICS], inter[LABEL_HOLDER][CONFIG]
    for h in holders:
        said = answers[h][METRICS]
        out.blacklists[h] = {"asked": int(cast(float, said["asked"])),
                             "listed": int(cast(float, counts[f"{h}.listed"])),
                             "max_queries": int(cast(float, said["max_queries"]))}
    if not passive:
        return {}
    step = time.perf_counter()
    embedded = router.send(ScoringMessage.EMBED, {p: _config(
        sealed=sealed[f"{p}.sealed"], **({"explain": 1} if s.explain else {}))
        for p in passive})
    out.seconds["embeddings"] = time.perf_counter() - step
    embeddings: dict[str, Any] = {}
    for p in passive:
        embeddings |= _embedded(out, p, embedded[p], answers[p].metric_records[METRICS],
                                int(cast(float, counts[f"{p}.known"])))
    return embeddings


def _embedded(out: ScoringOutcome, p: str, content: RecordDict, said: MetricRecord,
              known: int) -> dict[str, Any]:
    """Check and count party ``p``'s embeddings; return them (and its path), sealed, by name.

    ``said``: its answer's metrics, the IDs it answered as its query ledger counts them.
    """
    info = _info(content)
    if info["rows"] != known:
        raise FederationError(f"scoring: the lender found {known} applicants {p} "
                              f"knows, {p} embedded {info['rows']}")
    out.alignment[p] = {"applicants": out.applicants, "known": known,
                        "setup_cached": bool(said["setup_cached"]),
                        "unknown_categories": info["unknown_categories"],
                        "asked": int(cast(float, said["asked"])),
                        "queries_month": int(cast(float, said["queries_month"]))}
    if "outside_epsilon" in info:
        out.privacy.setdefault(p, {})["outside_epsilon"] = info["outside_epsilon"]
    if "epsilon_per_new_applicant" in info:
        out.privacy[p] = {k: v for k, v in info.items()
                          if k not in ("rows", "unknown_categories", "outside_epsilon")}
    embeddings = {p: content[ARRAYS]["embeddings"]}
    if info.get("explains") is False:  # its own choice: its share is one factor
        out.explanation.setdefault("columns_withheld", []).append(p)
    for name in content[ARRAYS]:  # a party that explains: its path or its scorecard codes,
        if name.startswith("explain."):  # sealed, for the lender
            embeddings[f"{p}.{name}"] = content[ARRAYS][name]
    if "global" in info:  # a scorecard party's global table, computed there
        out.explanation.setdefault("global", {})[p] = info["global"]
    return embeddings


def _score(router: Router, out: ScoringOutcome, s: ScoringServerSettings,
           passive: tuple[str, ...], embeddings: dict[str, Any]) -> None:
    """Have the lender score (and explain); keep its counts, then route the explanation."""
    step = time.perf_counter()
    config: dict[str, Any] = {"passive": list(passive)} if passive else {}
    if s.explain:
        config["explain"] = 1
    scored = router.send(ScoringMessage.SCORE, {LABEL_HOLDER: RecordDict({
        CONFIG: ConfigRecord(config), ARRAYS: ArrayRecord(embeddings)})})[LABEL_HOLDER]
    out.seconds["score"] = time.perf_counter() - step
    out.lender = _info(scored)
    said = out.lender.pop("explanation", {})  # a scorecard's, or no party split its share
    tables = {**said.pop("global", {}), **out.explanation.get("global", {})}  # lender first
    out.explanation |= said | ({"global": tables} if tables else {})
    if s.explain and ARRAYS in scored:
        explain(router, out, scored)


def explain(router: Router, out: ScoringOutcome, scored: RecordDict) -> None:
    """Route the explanation's two rounds: each party's columns, then the lender's reasons.

    The lender's reply to ``score`` holds, sealed, each explaining party's gradients along its
    path; each party answers with its columns' points, sealed, and its global table; the
    lender ranks every applicant's reasons and keeps them. The server sees sealed bytes,
    column names and the parties' global tables.
    """
    step = time.perf_counter()
    sealed = scored[ARRAYS] if ARRAYS in scored else ArrayRecord()
    parties = [name.removesuffix(".gradients") for name in sealed if name.endswith(".gradients")]
    columns: dict[str, Any] = {}
    config: dict[str, Any] = {}
    if parties:
        replies = router.send(ScoringMessage.EXPLAIN, {p: RecordDict({ARRAYS: ArrayRecord(
            {"gradients": sealed[f"{p}.gradients"]})}) for p in parties})
        for p, content in replies.items():
            columns[f"{p}.columns"] = content[ARRAYS]["columns"]
            config[f"{p}.names"] = list(cast(list[str], content[CONFIG]["names"]))
            info = _info(content)
            out.explanation.setdefault("global", {})[p] = info["global"]
            out.explanation.setdefault("explained", {})[p] = info["explained"]
            out.privacy.setdefault(p, {}).setdefault("outside_epsilon", [])
            out.privacy[p]["outside_epsilon"] = sorted({*out.privacy[p]["outside_epsilon"],
                                                        *info["outside_epsilon"]})
    config["passive"] = [p.removesuffix(".names") for p in config if p.endswith(".names")]
    if not config["passive"]:
        config.pop("passive")
    reasons = router.send(ScoringMessage.REASONS, {LABEL_HOLDER: RecordDict({
        CONFIG: ConfigRecord(config), ARRAYS: ArrayRecord(columns)})})[LABEL_HOLDER]
    lender = _info(reasons)
    out.explanation |= {k: v for k, v in lender.items() if k != "global"}
    out.explanation.setdefault("global", {})["lender"] = lender["global"]["lender"]
    out.seconds["explanation"] = time.perf_counter() - step


def run_own_scoring(grid: Grid, s: ScoringServerSettings,
                    recorder: Recorder | None = None) -> ScoringOutcome:
    """Have every lender of a horizontal model score its own applicants: one message round.

    Each lender scores with the global model it kept; the scores stay at the lender and the
    server gets each lender's counts (rows, grades, unseen categories). Bundles of different
    training runs are refused.
    """
    out = ScoringOutcome()
    router = Router(grid, out, s.round_timeout, recorder)
    start = time.perf_counter()
    pins = NodePins(s.pinned_nodes)
    nodes = pins.addressed(wait_for_nodes(grid, s.n_nodes, s.connect_timeout, s.pinned_nodes),
                           out.refused_nodes)
    router.node = {f"node {n}": n for n in nodes}
    replies = router.send(ScoringMessage.OWN, {f"node {n}": RecordDict() for n in nodes})
    for name, content in replies.items():
        party = str(content[STATUS]["party"])
        if pins.refuse(int(name.removeprefix("node ")), party, out.refused_nodes):
            continue  # its counts are left out
        if party in out.lenders:
            raise FederationError(f"two nodes both say they are '{party}'")
        out.lenders[party] = _info(content)
    models = {counts["model_id"] for counts in out.lenders.values()}
    if len(models) != 1:
        raise FederationError(f"the lenders' bundles are of different models {sorted(models)}: "
                              "bundles of different training runs cannot score together")
    out.model_id = models.pop()
    out.parties = sorted(out.lenders)
    out.applicants = sum(int(c["rows"]) for c in out.lenders.values())
    grades: dict[str, int] = {}
    for counts in out.lenders.values():
        for grade, n in counts["grades"].items():
            grades[grade] = grades.get(grade, 0) + int(n)
    out.lender = {"grades": dict(sorted(grades.items())), "known": {}}
    out.seconds["total"] = time.perf_counter() - start
    return out
