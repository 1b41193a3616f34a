"""The vertical federation's message loop. The server only routes.

It never holds a feature, a label or an ID: it passes the PSI messages (blinded values and a
sealed intersection), then, per exchange, the passive parties' embeddings to the lender and the
lender's per-record gradients back, each sealed end to end between the two nodes
(:mod:`federation.sealed`: bytes the server cannot open, bound to their exchange), and it keeps
count of the messages and bytes each party sends and receives. Its checkpoint holds nothing per
record. Early stopping is the lender's call (it alone can score validation rows).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from credit_data.errors import ConfigError
from credit_data.ids import describe
from credit_data.settings import LABEL_HOLDER
from federation.consent_counts import CONSENT_KEY, received
from federation.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    REPORT,
    RUN_ENDS,
    SCORING_FIELDS,
    STATUS,
    VERTICAL_FIELDS,
    Fields,
    VerticalMessage,
    read_report,
)
from fl_server.audited_grid import explain, node_of, stopped_answering
from fl_server.checkpoint import load_checkpoint, save_checkpoint
from fl_server.horizontal_rounds import FederationError, wait_for_nodes
from fl_server.node_pins import NodePins
from fl_server.settings import ServerSettings
from models.metrics import ScoreSummary
from privacy.accounting import ACCOUNTANT
from privacy.ledger import PartySpend, PrivacyLedger

log = logging.getLogger("credit_fl")

Recorder = Callable[[str, int, RecordDict], None]
"""Called with ("out" | "in", node id, content) for every message the server routes."""


@dataclass
class Traffic:
    """Messages, bytes and seconds per party and per message type."""

    communication: dict[str, dict[str, int]] = field(default_factory=dict)
    message_rounds: int = 0
    seconds_by_kind: dict[str, float] = field(default_factory=dict)
    compute_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class VerticalOutcome(Traffic):
    """What the server leaves behind for the runner."""

    parties: dict[str, int] = field(default_factory=dict)
    columns: dict[str, int] = field(default_factory=dict)
    id_shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each party's consent counts, as its node sent them (:mod:`federation.consent_counts`)."""
    warnings: list[str] = field(default_factory=list)
    alignment: dict[str, dict[str, int]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    ledger: PrivacyLedger | None = None
    final: dict[str, float] = field(default_factory=dict)
    report: dict[str, ScoreSummary] = field(default_factory=dict)
    split_rows: dict[str, int] = field(default_factory=dict)
    epochs: int = 0
    stopped_after: int | None = None
    resumed_after: int | None = None
    error: BaseException | None = None
    model_id: str = ""  # carried by every party's bundle of the trained model
    blacklists: dict[str, dict[str, Any]] = field(default_factory=dict)  # counts per holder
    refused_nodes: list[dict[str, Any]] = field(default_factory=list)
    """Nodes refused at hello for claiming a pinned party (:mod:`fl_server.node_pins`)."""


def _size(content: RecordDict) -> int:
    return int(sum(record.count_bytes() for record in content.values()))


class Router:
    """Sends messages, checks replies, counts traffic per party."""

    def __init__(self, grid: Grid, out: Traffic, timeout: float,
                 recorder: Recorder | None) -> None:
        self.grid, self.out, self.timeout, self.recorder = grid, out, timeout, recorder
        self.node: dict[str, int] = {}

    def _count(self, party: str, key: str, content: RecordDict) -> None:
        c = self.out.communication.setdefault(party, {"messages_in": 0, "bytes_in": 0,
                                                      "messages_out": 0, "bytes_out": 0})
        c[f"messages_{key}"] += 1
        c[f"bytes_{key}"] += _size(content)

    def send(self, kind: str | dict[str, str],
             content: dict[str, RecordDict]) -> dict[str, RecordDict]:
        """Send ``content[party]`` to each party in one round; return each reply's content.

        ``kind`` is the message type, or one per party.
        """
        messages = []
        for party, body in content.items():
            _check_fields(str(kind if isinstance(kind, str) else kind[party]), body)
            node = self.node[party]
            messages.append(Message(body, dst_node_id=node, message_type=str(
                kind if isinstance(kind, str) else kind[party])))
            self._count(party, "in", body)  # what the party receives
            if self.recorder is not None:
                self.recorder("out", node, body)
        start = time.perf_counter()
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        self.out.message_rounds += 1
        name = str(kind) if isinstance(kind, str) else "+".join(sorted(set(kind.values())))
        self.out.seconds_by_kind[name] = (self.out.seconds_by_kind.get(name, 0.0)
                                          + time.perf_counter() - start)
        by_node = {v: k for k, v in self.node.items()}
        got: dict[str, RecordDict] = {}
        for reply in replies:
            node = node_of(self.grid, reply)
            party = by_node.get(node, f"node {node}")
            if reply.has_error():
                gone = stopped_answering(name, party, node, reply.error.reason or "")
                raise FederationError(gone or f"{name}: {party} failed: "
                                      f"{explain(reply.error.reason or '')}")
            if self.recorder is not None:
                self.recorder("in", reply.metadata.src_node_id, reply.content)
            self._count(party, "out", reply.content)
            refused = reply.content.config_records.get(CONFIG, ConfigRecord()).get("refused")
            if refused:
                raise FederationError(f"{name}: {party} refused: {refused!s}")
            got[party] = reply.content
            metrics = reply.content.metric_records.get(METRICS)
            compute = metrics.get("compute_s") if metrics is not None else None
            if compute is not None:
                self.out.compute_seconds[party] = (self.out.compute_seconds.get(party, 0.0)
                                                   + float(cast(float, compute)))
        missing = sorted(set(content) - set(got))
        if missing:
            what = kind if isinstance(kind, str) else kind[missing[0]]
            raise FederationError(f"{what}: no reply from {missing} within "
                                  f"{self.timeout:.0f} s (federation.round_timeout)")
        return got


def _check_fields(kind: str, body: RecordDict) -> None:
    """Refuse to send a vertical or scoring message whose config differs from its declaration."""
    fields = DECLARED.get(kind)
    if fields is not None:
        config = body.config_records.get(CONFIG, ConfigRecord())
        problem = fields.problem(kind, config)
        if problem is not None:
            raise FederationError(f"the server built a message its nodes refuse: {problem}")


DECLARED: dict[str, Fields] = {str(m): f for m, f in (*VERTICAL_FIELDS.items(),
                                                      *SCORING_FIELDS.items())}
"""Every message type the Router sends, and its declared fields."""


def _config(**values: Any) -> RecordDict:
    return RecordDict({CONFIG: ConfigRecord(values)})


def _identify(grid: Grid, router: Router, s: ServerSettings) -> tuple[str, ...]:
    vout = cast(VerticalOutcome, router.out)
    pins = NodePins(s.pinned_nodes)
    nodes = pins.addressed(wait_for_nodes(grid, s.n_clients, s.federation.connect_timeout,
                                          s.pinned_nodes), vout.refused_nodes)
    messages = [Message(RecordDict(), dst_node_id=n, message_type=str(VerticalMessage.HELLO))
                for n in nodes]
    for reply in grid.send_and_receive(messages, timeout=s.federation.connect_timeout):
        if reply.has_error():
            raise FederationError(f"node {node_of(grid, reply)} did not say which party "
                                  f"it is: {explain(reply.error.reason or '')}")
        party = str(reply.content[STATUS]["party"])
        if pins.refuse(node_of(grid, reply), party, vout.refused_nodes):
            continue  # a second node claiming a pinned party: named, and the run goes on
        refused = reply.content[STATUS].get("refused")
        if refused:
            raise FederationError(f"hello: {party} refused: {refused!s}")
        if party in router.node:
            raise FederationError(f"two nodes both say they are '{party}'")
        router.node[party] = reply.metadata.src_node_id
        if party in s.blacklists.holders:
            vout.blacklists[party] = {"list_size": int(cast(float,
                                                           reply.content[METRICS]["rows"]))}
            continue
        vout.parties[party] = int(cast(float, reply.content[METRICS]["rows"]))
        vout.columns[party] = int(cast(float, reply.content[METRICS]["columns"]))
        shape = reply.content.config_records.get(CONFIG, ConfigRecord()).get("id_shape")
        vout.id_shapes[party] = json.loads(str(shape)) if shape else {}
        counts = reply.content.config_records.get(CONFIG, ConfigRecord()).get(CONSENT_KEY)
        if counts:
            try:
                vout.consent[party] = received(str(counts), party)
            except ConfigError as exc:
                raise FederationError(f"hello: {exc}") from exc
    if LABEL_HOLDER not in router.node:
        raise FederationError(f"no node is the '{LABEL_HOLDER}' (the label holder)")
    absent = [h for h in s.blacklists.holders if h not in router.node]
    if absent:
        raise FederationError(f"blacklists.holders: no node says it is {absent}; connected: "
                              f"{sorted(router.node)}")
    return tuple(p for p in s.parties if p != LABEL_HOLDER and p in router.node)


def _align(router: Router, passive: tuple[str, ...],
           holders: tuple[str, ...] = (), list_mode: str = "lookup") -> None:
    """Private set intersection between the lender and each party, routed blind.

    Each blacklist holder answers the lender's blinded request too (a ``cardinality`` holder
    a second request, blinded apart) in the parties' answer round: its lookup costs no
    message round of its own, and the holder gets nothing sealed back.
    """
    vout = cast(VerticalOutcome, router.out)
    lender_rows = vout.parties[LABEL_HOLDER]
    first, answers = _blind_and_answer(router, passive, holders, list_mode, lender_rows)
    for h in holders:
        said = answers[h][METRICS]  # the holder's own cap and mode (a deployed node's flags)
        vout.blacklists[h] |= {"asked": int(cast(float, said["asked"])),
                               "max_queries": int(cast(float, said["max_queries"])),
                               "mode": "cardinality" if said["cardinality"] else "lookup"}
    forward = _intersect_config(first, answers, passive, holders, list_mode)
    inter = router.send(VerticalMessage.PSI_INTERSECT, {LABEL_HOLDER: _config(**forward)})
    counts = inter[LABEL_HOLDER][METRICS]
    for h in holders:
        vout.blacklists[h]["listed"] = int(cast(float, counts[f"{h}.listed"]))
        log.info("blacklist: %d of the lender's %d applicants are on %s's list",
                 vout.blacklists[h]["listed"], lender_rows, h)
    sealed = inter[LABEL_HOLDER][CONFIG]
    received = router.send(VerticalMessage.PSI_RECEIVE, {p: _config(sealed=sealed[f"{p}.sealed"])
                                                 for p in passive})
    for p in passive:
        n = int(cast(float, counts[f"{p}.intersection"]))
        got = int(cast(float, received[p][METRICS]["intersection"]))
        if got != n:
            raise FederationError(f"alignment with {p}: the lender found {n} shared customers, "
                                  f"{p} received {got}")
        vout.alignment[p] = {"lender_rows": lender_rows,
                             "party_rows": vout.parties[p],
                             "intersection": n,
                             "setup_cached": bool(first[p][METRICS].get("setup_cached")),
                             "asked": int(cast(float, answers[p][METRICS]["asked"]))}
        log.info("alignment: %s knows %d of the lender's %d applicants", p, n, lender_rows)
        _check_overlap(vout, p, n, lender_rows)


def _blind_and_answer(router: Router, passive: tuple[str, ...], holders: tuple[str, ...],
                      list_mode: str, lender_rows: int
                      ) -> tuple[dict[str, RecordDict], dict[str, RecordDict]]:
    """Run the first two alignment rounds; return each node's reply to each.

    First the parties blind their own sets while the lender blinds its applicants; then each
    party and each blacklist holder answers the lender's blinded request.
    """
    kinds = {LABEL_HOLDER: str(VerticalMessage.PSI_REQUEST)} | dict.fromkeys(
        passive, str(VerticalMessage.PSI_SETUP))
    first = router.send(kinds,
                        {LABEL_HOLDER: _config(passive=list(passive), list_mode=list_mode,
                                               **({"holders": list(holders)} if holders
                                                  else {}))}
                        | {p: _config(lender_rows=lender_rows) for p in passive})
    request = first[LABEL_HOLDER][CONFIG]
    # a cardinality lookup asks with a request of its own, signed like the first
    asking = (request["list_request"], request["list_key"]) if "list_request" in request else (
        request["request"], request["key"])
    answers = router.send(
        {p: str(VerticalMessage.PSI_ANSWER) for p in passive}
        | dict.fromkeys(holders, str(VerticalMessage.LIST_ANSWER)),
        {p: _config(request=request["request"], key=request["key"]) for p in passive}
        | {h: _config(request=asking[0], key=asking[1], asked=lender_rows,
                      purpose="training") for h in holders})
    return first, answers


def _intersect_config(first: dict[str, RecordDict], answers: dict[str, RecordDict],
                      passive: tuple[str, ...],
                      holders: tuple[str, ...], list_mode: str) -> dict[str, Any]:
    """Return what the lender needs to intersect: each party's setup and answer, each list's."""
    forward: dict[str, Any] = {"passive": list(passive), "list_mode": list_mode}
    if holders:  # Flower's ConfigRecord cannot size an empty list
        forward["holders"] = list(holders)
    for p in passive:
        forward[f"{p}.setup"] = first[p][CONFIG]["setup"]
        for key in ("response", "key"):
            forward[f"{p}.{key}"] = answers[p][CONFIG][key]
    for h in holders:
        for key in ("setup", "response", "signature"):
            forward[f"{h}.{key}"] = answers[h][CONFIG][key]
    return forward


MIN_OVERLAP = 0.05
"""Below this share of the lender's applicants a party's overlap is worth a warning."""


def _format(shape: dict[str, Any]) -> tuple[Any, ...]:
    """Return what of an ID shape must agree between parties (a length only if fixed)."""
    fixed = shape.get("min_length") == shape.get("max_length")
    return (shape.get("kind"), shape.get("leading_zeros"), shape.get("case"),
            shape.get("min_length") if fixed else None)


def _check_overlap(out: VerticalOutcome, party: str, n: int, lender_rows: int) -> None:
    """Refuse an alignment with no shared customer; warn about a tiny one.

    Both messages name the parties and compare the shapes of their IDs (never an ID): leading
    zeros or case at one party and not at the other are the usual cause.
    """
    shapes = ""
    if out.id_shapes.get(LABEL_HOLDER) and out.id_shapes.get(party):
        shapes = (f" IDs at the {LABEL_HOLDER}: {describe(out.id_shapes[LABEL_HOLDER])}; at "
                  f"{party}: {describe(out.id_shapes[party])}.")
        if _format(out.id_shapes[LABEL_HOLDER]) != _format(out.id_shapes[party]):
            shapes += (" The shapes differ: IDs must match exactly (the same leading zeros, "
                       "the same case, numbers written the same way).")
    if n == 0:
        raise FederationError(
            f"alignment: {party} shares none of the {LABEL_HOLDER}'s {lender_rows:,} "
            f"applicants ({party} holds {out.parties[party]:,} customers).{shapes}")
    if n < MIN_OVERLAP * lender_rows:
        warning = (f"alignment: {party} knows only {n:,} of the {LABEL_HOLDER}'s "
                   f"{lender_rows:,} applicants ({n / lender_rows:.1%}); its columns can add "
                   f"little.{shapes}")
        log.warning(warning)
        out.warnings.append(warning)


def _composed(summary_multiplier: float, stretch: tuple[float, float, int]
              ) -> list[list[float]]:
    """Return a party's RDP history: its noisy summary (if any), then the mechanism's stretch."""
    history = [[summary_multiplier, 1.0, 1]] if summary_multiplier > 0 else []
    return history + ([list(stretch)] if stretch[2] else [])


def _record_privacy(ledger: PrivacyLedger, epoch: int, party: str, metrics: Any,
                    noise: str) -> None:
    m = {k: float(cast(float, v)) for k, v in metrics.items()}
    if "label_epsilon" in m:
        ledger.record(epoch, f"{party}/label_dp", PartySpend(
            epsilon=m["label_epsilon"], delta=0.0, mechanism="label_dp", noise_multiplier=0.0,
            sample_rate=1.0, steps=1, accountant="randomized response",
            flip_probability=m["label_flip_probability"], unit="label", noise=noise))
    if "dpsgd_epsilon" in m:
        ledger.record(epoch, f"{party}/dpsgd", PartySpend(
            epsilon=m["dpsgd_epsilon"], delta=m["dpsgd_delta"], mechanism="dpsgd",
            noise_multiplier=m["dpsgd_noise_multiplier"], sample_rate=m["dpsgd_sample_rate"],
            steps=int(m["dpsgd_steps"]), accountant=ACCOUNTANT,
            history=_composed(m.get("dpsgd_summary_noise_multiplier", 0.0), (
                m["dpsgd_noise_multiplier"], m["dpsgd_sample_rate"], int(m["dpsgd_steps"]))),
            selection_delta=m.get("dpsgd_selection_delta"), noise=noise))
    if "embedding_epsilon" in m:
        ledger.record(epoch, f"{party}/embedding_noise", PartySpend(
            epsilon=m["embedding_epsilon"], delta=m["embedding_delta"],
            mechanism="embedding_noise", noise_multiplier=m["embedding_noise_multiplier"],
            sample_rate=1.0, steps=int(m["embedding_releases"]), accountant=ACCOUNTANT,
            sensitivity=m["embedding_sensitivity"],
            history=_composed(m.get("embedding_summary_noise_multiplier", 0.0), (
                m["embedding_noise_multiplier"], 1.0, int(m["embedding_releases"]))),
            selection_delta=m.get("embedding_selection_delta"), noise=noise))


def _checkpoint(out: VerticalOutcome, s: ServerSettings, epoch: int,
                prev: list[int] | None) -> None:
    """Keep where the server stands after ``epoch``: the nodes keep their own state.

    Nothing per record: the epoch's last gradients stay with the lender, which seals them
    again for a resumed run (:func:`_resend`).
    """
    state = {k: v for k, v in out.__dict__.items() if k not in ("ledger", "error")}
    save_checkpoint(Path(s.run_dir), {
        "mode": "vertical", "epoch": epoch, "prev": prev, "parties": list(s.parties),
        "outcome": state, "ledger": out.ledger.state_dict() if out.ledger is not None else None,
        "privacy": repr(s.privacy), "exchanges_per_epoch": s.federation.exchanges_per_epoch,
        "local_steps": s.federation.local_steps})


def _resume(out: VerticalOutcome, s: ServerSettings) -> tuple[int, list[int] | None]:
    """Continue from an earlier run's checkpoint: its outcome so far, its last exchange."""
    assert s.resume_dir is not None
    ckpt = load_checkpoint(Path(s.resume_dir))
    if ckpt.get("mode") != "vertical":
        raise FederationError(f"resume={s.resume_dir}: not a vertical run's checkpoint")
    for what, then, now in (("parties", ckpt["parties"], list(s.parties)),
                            ("privacy settings", ckpt["privacy"], repr(s.privacy)),
                            ("federation.exchanges_per_epoch", ckpt["exchanges_per_epoch"],
                             s.federation.exchanges_per_epoch),
                            ("federation.local_steps", ckpt.get("local_steps", 1),
                             s.federation.local_steps)):
        if then != now:
            raise FederationError(f"resume={s.resume_dir}: the {what} changed since the "
                                  f"checkpoint ({then} then, {now} now)")
    for key, value in ckpt["outcome"].items():
        if key not in ("parties", "columns", "id_shapes", "consent",
                       "refused_nodes"):  # said again
            setattr(out, key, value)
    if out.ledger is not None and ckpt["ledger"] is not None:
        out.ledger.load_state_dict(ckpt["ledger"])
    out.resumed_after = int(ckpt["epoch"])
    log.info("resuming after epoch %d of %s (alignment kept)", ckpt["epoch"], s.resume_dir)
    return int(ckpt["epoch"]), ckpt["prev"]


def _resend(router: Router, passive: tuple[str, ...], prev: list[int] | None
            ) -> dict[str, Any]:
    """Have the lender seal the gradients of the checkpoint's last exchange again."""
    if not prev:
        return {}
    sealed = router.send(VerticalMessage.RESEND, {LABEL_HOLDER: _config(
        epoch=prev[0], chunk=prev[1], passive=list(passive))})[LABEL_HOLDER][ARRAYS]
    return {p: sealed[f"{p}.grads"] for p in passive}


@dataclass
class _Training:
    """What the exchanges of one vertical run share (:func:`run_vertical_federation`)."""

    router: Router
    passive: list[str]
    s: ServerSettings
    out: VerticalOutcome
    grads: dict[str, Any] = field(default_factory=dict)  # each party's last gradients, sealed
    prev: list[int] | None = None  # the (epoch, chunk) those gradients belong to
    best_known: int = 0  # the lender's best epoch so far

    @property
    def noise(self) -> str:
        return "reproducible" if self.s.privacy.reproducible_noise else "os"


def run_vertical_federation(grid: Grid, s: ServerSettings,
                            recorder: Recorder | None = None) -> VerticalOutcome:
    """Align, train exchange by exchange until the lender stops, then score."""
    out = VerticalOutcome()
    router = Router(grid, out, s.federation.round_timeout, recorder)
    passive = _identify(grid, router, s)
    if not passive:
        raise FederationError("vertical federation needs at least one party besides the "
                              f"lender; connected: {sorted(router.node)}")
    mechanisms = s.privacy.vertical_mechanisms()
    out.ledger = PrivacyLedger(*mechanisms) if mechanisms else None
    t = _Training(router, list(passive), s, out)
    epoch = 0
    if s.resume_dir is not None:  # the nodes kept their alignment: it is not redone
        epoch, t.prev = _resume(out, s)
        t.grads = _resend(router, passive, t.prev)
    else:
        start = time.perf_counter()
        _align(router, passive, s.blacklists.holders, s.blacklists.mode.value)
        out.history.append({"step": "alignment", "seconds": time.perf_counter() - start})
    while _epoch(t, epoch + 1):
        epoch += 1
        if s.federation.stop_after == epoch:
            out.stopped_after = epoch
            log.warning("stopping after epoch %d (federation.stop_after); continue with "
                        "resume=%s", epoch, s.run_dir)
            break
    _score_final(t)
    return out


def _epoch(t: _Training, epoch: int) -> bool:
    """Run one epoch's exchanges (after the last, one more only to score validation).

    Return whether training goes on: False when the lender said stop.
    """
    start = time.perf_counter()
    last = epoch > t.s.train_epochs
    for chunk in (range(t.s.federation.exchanges_per_epoch) if not last else [-1]):
        if not _exchange(t, epoch, chunk):
            return False
    t.out.epochs = epoch
    t.out.history[-1]["seconds"] = time.perf_counter() - start
    if not last:
        _checkpoint(t.out, t.s, epoch, t.prev)
    return True


def _exchange(t: _Training, epoch: int, chunk: int) -> bool:
    """One exchange: the parties' embeddings, the lender's head step, the gradients back.

    Return False when the lender said stop.
    """
    out, passive = t.out, t.passive
    val_epoch = epoch - 1 if chunk in (0, -1) else 0
    config: dict[str, Any] = {"epoch": epoch, "chunk": chunk, "val_epoch": val_epoch}
    if t.prev:
        config["prev"] = t.prev
    embed = {}
    for p in passive:
        body = RecordDict({CONFIG: ConfigRecord(config)})
        if p in t.grads:
            body[ARRAYS] = ArrayRecord({"grads": t.grads[p]})
        embed[p] = body
    embedded = t.router.send(VerticalMessage.EMBED, embed)
    values: dict[str, Any] = {}
    for p in passive:
        record = embedded[p].array_records[ARRAYS]
        values[f"{p}.train"] = record["train"]
        if "val" in record:
            values[f"{p}.val"] = record["val"]
    head = t.router.send(VerticalMessage.HEAD, {LABEL_HOLDER: RecordDict({
        CONFIG: ConfigRecord({"epoch": epoch, "chunk": chunk, "val_epoch": val_epoch,
                              "passive": list(passive)}),
        ARRAYS: ArrayRecord(values)})})[LABEL_HOLDER]
    metrics = head[METRICS]
    if "best_epoch" in metrics:
        t.best_known = int(cast(float, metrics["best_epoch"]))
    if val_epoch:
        row = next(r for r in out.history if r.get("epoch") == val_epoch)
        row["val_auc"] = float(cast(float, metrics["val_auc"]))
        log.info("epoch %d  val_auc %.4f", val_epoch, row["val_auc"])
    if out.ledger is not None:
        _record_privacy(out.ledger, epoch, LABEL_HOLDER, metrics, t.noise)
        for p in passive:
            if METRICS in embedded[p]:
                _record_privacy(out.ledger, epoch, p, embedded[p][METRICS], t.noise)
    if "stop" in metrics:
        return False
    t.grads = {p: head[ARRAYS][f"{p}.grads"] for p in passive}
    t.prev = [epoch, chunk]
    if chunk == 0:
        out.history.append({"epoch": epoch})
    if "train_loss" in metrics:  # the lender keeps it at home under DP
        row = out.history[-1]
        row["train_loss"] = (row.get("train_loss", 0.0) + float(cast(float, metrics[
            "train_loss"])) / t.s.federation.exchanges_per_epoch)
    return True


def _score_final(t: _Training) -> None:
    """Send the best epoch's model to every party; the lender scores and reports on it."""
    out, passive, best = t.out, t.passive, t.best_known
    out.model_id = uuid.uuid4().hex  # every party's bundle of this model carries it
    ends = out.stopped_after is None  # a stopped run's nodes keep their keys to resume
    finals = t.router.send(VerticalMessage.FINAL, {p: _config(
        best_epoch=best, model_id=out.model_id, **{RUN_ENDS: ends}) for p in passive})
    values = {f"{p}.{name}": finals[p][ARRAYS][name] for p in passive
              for name in ("train", "val", "test")}
    scored = t.router.send(VerticalMessage.FINAL, {LABEL_HOLDER: RecordDict({
        CONFIG: ConfigRecord({"best_epoch": best, "passive": list(passive),
                              "model_id": out.model_id, RUN_ENDS: ends}),
        ARRAYS: ArrayRecord(values)})})[LABEL_HOLDER]
    out.final = {k: float(cast(float, v)) for k, v in scored[METRICS].items()}
    try:
        out.report, out.split_rows = read_report(scored[REPORT], out.ledger is not None)
    except (KeyError, ValueError) as exc:
        raise FederationError(f"{LABEL_HOLDER}'s report on the final model: {exc}") from exc
