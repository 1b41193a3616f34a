"""The federation's round loop, on Flower's Grid and Flower's strategies.

Per round: configure and send training, screen the replies (errors, refusals, timeouts, wrong
shapes, non-finite values are left out and recorded), stop with a clear error below
``federation.min_clients``, aggregate with the strategy, account privacy, and checkpoint.

The lenders evaluate each round's global model (AUC and a score summary only) in the next
round's training message, before they train from it: one message exchange per round instead of
two. The last round's model gets an evaluation message of its own.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from credit_data.errors import FederationError
from credit_data.federated_scaling import Schema, merge_moments
from credit_data.summary import sketch_from_summaries
from federation.model import shared_model
from federation.protocol import (
    CONFIG,
    EVALUATE_FIRST,
    EVALUATION,
    METRICS,
    REPORT,
    RUN_ENDS,
    SCORED,
    STATUS,
    TRAIN_ROWS,
    pooled_auc,
    read_report,
)
from fl_server.audited_grid import node_of
from fl_server.checkpoint import load_checkpoint, save_checkpoint
from fl_server.node_pins import AcceptedNodes, NodePins, PinnedNodes
from fl_server.screening import Exclusion, screen_replies
from fl_server.settings import ServerSettings
from fl_server.strategies import (
    CentralPlan,
    build_strategy,
    central_plan,
    load_strategy_state,
    strategy_state,
)
from models.metrics import ScoreSummary
from models.training import start_at_base_rate
from privacy.accounting import ACCOUNTANT, update_sensitivity
from privacy.ledger import PartySpend, PrivacyLedger
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism

log = logging.getLogger("credit_fl")

GlobalEvaluation = Callable[[dict[str, torch.Tensor], Schema], dict[str, float]]



@dataclass
class FederationOutcome:
    """What the server leaves behind for the runner."""

    state: dict[str, torch.Tensor] | None = None
    schema: Schema | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    ledger: PrivacyLedger | None = None
    exclusions: list[Exclusion] = field(default_factory=list)
    lender_evaluation: dict[str, dict[str, float]] = field(default_factory=dict)
    reports: dict[str, tuple[dict[str, ScoreSummary], dict[str, int]]] = field(
        default_factory=dict)
    """Each lender's report on the final model (:func:`federation.protocol.read_report`)."""
    completed_rounds: int = 0
    stopped_after: int | None = None
    error: BaseException | None = None
    model_id: str = ""  # carried by the bundle of the final model at the server and each lender
    refused_nodes: list[dict[str, Any]] = field(default_factory=list)
    """Nodes refused at discovery for claiming a pinned party (:mod:`fl_server.node_pins`)."""


def _number(record: Any, key: str) -> float:
    """Read a numeric metric from a reply's MetricRecord."""
    return float(cast(float, record[key]))


def wait_for_nodes(grid: Grid, n: int, timeout: float,
                   pins: PinnedNodes = ()) -> list[int]:
    """Return the ids of the connected nodes once there are ``n``; fail after ``timeout`` s.

    With ``pins``, wait also for every pinned node: another node claiming its party cannot
    stand in for it.
    """
    deadline = time.monotonic() + timeout
    while (len(nodes := sorted(grid.get_node_ids())) < n
           or (absent := [p for p, node in pins if node not in nodes])):
        if time.monotonic() > deadline:
            if len(nodes) < n:
                raise FederationError(f"only {len(nodes)} of {n} nodes connected within "
                                      f"{timeout:.0f} s (federation.connect_timeout)")
            raise FederationError(f"the pinned nodes of {absent} did not connect within "
                                  f"{timeout:.0f} s (federation.connect_timeout); "
                                  f"connected: {nodes}")
        time.sleep(0.2)
    return nodes


def _agree_on_schema(grid: Grid, nodes: list[int], s: ServerSettings,
                     refused: list[dict[str, Any]] | None = None
                     ) -> tuple[Schema, dict[int, str], float | None, list[dict[str, Any]]]:
    """Ask each lender for aggregate statistics (noisy summaries under DP) and pool them.

    Returns the shared schema, the party of each node, the pooled default rate where the
    lenders sent label counts, and what each lender sent. A node that claims a pinned party
    it is not pinned to is left out and added to ``refused``.
    """
    pins, refused = NodePins(s.pinned_nodes), refused if refused is not None else []
    nodes = pins.addressed(nodes, refused)
    messages = [Message(RecordDict({CONFIG: ConfigRecord({"task": "moments"})}),
                        message_type=MessageType.QUERY, dst_node_id=n) for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=s.federation.connect_timeout))
    node_party, moments = {}, []
    for reply in replies:
        if reply.has_error():
            raise FederationError(f"node {reply.metadata.src_node_id} failed to send its "
                                  f"statistics: {reply.error.reason}")
        party = str(reply.content[STATUS]["party"])
        if pins.refuse(node_of(grid, reply), party, refused):  # the node it was sent to
            continue
        if "refused" in reply.content[STATUS]:
            raise FederationError(f"{party} refused: {reply.content[STATUS]['refused']!s}")
        node_party[reply.metadata.src_node_id] = party
        moments.append(json.loads(str(reply.content[CONFIG]["moments"])))
    if len(replies) < len(nodes):
        raise FederationError(f"{len(nodes) - len(replies)} nodes sent no statistics within "
                              "federation.connect_timeout")
    # pool in a fixed order: float sums in arrival order would differ from run to run
    moments = [m for _, m in sorted(zip(node_party.values(), moments, strict=True))]
    if all(m.get("summary") for m in moments):  # under DP: noisy summaries only
        sketch = sketch_from_summaries(moments, s.numeric, s.categorical)
        return Schema.from_sketch(sketch), node_party, sketch.base_rate, moments
    if any(m.get("summary") for m in moments):
        raise FederationError("some lenders sent noisy summaries and others exact statistics: "
                              "they disagree on the privacy settings")
    base_rate = None
    if all("labels" in m for m in moments):
        positives, labelled = (sum(m["labels"][i] for m in moments) for i in (0, 1))
        base_rate = positives / labelled if labelled else None
    return merge_moments(moments, s.numeric, s.categorical), node_party, base_rate, moments


def _record_privacy(ledger: PrivacyLedger, server_round: int, usable: list[Message],
                    node_party: dict[int, str], strategy: Any, s: ServerSettings,
                    central: CentralPlan | None) -> None:
    noise = "reproducible" if s.privacy.reproducible_noise else "os"
    if s.privacy.mechanism is PrivacyMechanism.dpsgd:
        for reply in usable:
            m = reply.content[METRICS]
            sigma, rate = _number(m, "noise_multiplier"), _number(m, "sample_rate")
            steps = int(_number(m, "total_steps"))
            z = _number(m, "summary_noise_multiplier")
            ledger.record(server_round, node_party[reply.metadata.src_node_id], PartySpend(
                epsilon=_number(m, "epsilon"), delta=_number(m, "delta"), mechanism="dpsgd",
                noise_multiplier=sigma, sample_rate=rate, steps=steps, accountant=ACCOUNTANT,
                history=([[z, 1.0, 1]] if z > 0 else []) + [[sigma, rate, steps]],
                selection_delta=_number(m, "selection_delta"), noise=noise))
    elif s.privacy.mechanism is PrivacyMechanism.central:
        assert central is not None
        spent = strategy.privacy_spent()
        releases = int(spent.num_releases)
        client, record = central.spend(releases)
        ledger.record(server_round, "server/client", PartySpend(
            epsilon=client, delta=central.delta, mechanism="central",
            noise_multiplier=central.noise_multiplier, sample_rate=1.0, steps=releases,
            accountant="rdp",
            sensitivity=update_sensitivity(clip=s.privacy.clipping_norm, unit="client"),
            history=[[central.noise_multiplier, 1.0, releases]], unit="client", noise=noise))
        ledger.record(server_round, "server/record", PartySpend(
            epsilon=record, delta=central.delta + central.selection_delta, mechanism="central",
            noise_multiplier=central.noise_multiplier / 2, sample_rate=1.0, steps=releases,
            accountant="rdp",
            sensitivity=update_sensitivity(clip=s.privacy.clipping_norm, unit="record"),
            history=[list(h) for h in central.prior]
            + [[central.noise_multiplier / 2, 1.0, releases]],
            selection_delta=central.selection_delta, unit="record", noise=noise))


def _check_central_budget(central: CentralPlan, strategy: Any, s: ServerSettings) -> None:
    """Refuse, before it is released, an aggregate that would pass the record-level cap."""
    done = int(strategy.privacy_spent().num_releases)
    _, after = central.spend(done + 1)
    if after > s.privacy.cap() * (1 + 1e-9):
        raise FederationError(f"central DP: aggregate {done + 1} would take the record-level "
                              f"epsilon to {after:.3f}, past privacy.max_epsilon "
                              f"{s.privacy.cap():.3f}")


def _pool_lender_scores(replies: Iterable[Message], node_party: dict[int, str],
                        prefix: str = "") -> tuple[float, dict[str, dict[str, float]]]:
    """Pool the lenders' test summaries into one AUC; keep each lender's own AUC.

    ``prefix`` picks the evaluation out of a training reply (:data:`SCORED`). A lender whose
    summary is malformed is left out of the pooled AUC (and logged).
    """
    summaries = []
    per_lender = {}
    for reply in replies:
        if reply.has_error() or METRICS not in reply.content.metric_records:
            continue
        m = reply.content[METRICS]
        if prefix + "auc" not in m:
            continue
        party = node_party[reply.metadata.src_node_id]
        try:
            summaries.append(ScoreSummary.from_record(
                reply.content.config_records[EVALUATION], ""))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: its test summary is left out of the pooled AUC: %s", party, exc)
        per_lender[party] = {"auc": _number(m, prefix + "auc"),
                             "test_rows": int(_number(m, prefix + "num-examples"))}
    return pooled_auc(summaries), per_lender


def messages_to(messages: Iterable[Message]) -> list[int]:
    """Return the destination node of each message."""
    return [m.metadata.dst_node_id for m in messages]


def _evaluate_at_lenders(grid: Grid, strategy: Any, server_round: int, arrays: ArrayRecord,
                         schema: Schema, node_party: dict[int, str], timeout: float,
                         out: FederationOutcome) -> None:
    """Send the final model to the lenders in an evaluation message of its own.

    Each lender scores it and returns its report: score summaries, no row.
    """
    out.model_id = uuid.uuid4().hex
    config = ConfigRecord({"schema": schema.to_json(), REPORT: True, "model_id": out.model_id,
                           RUN_ENDS: out.stopped_after is None})
    messages = list(strategy.configure_evaluate(server_round, arrays, config, grid))
    replies = sorted(grid.send_and_receive(messages, timeout=timeout),  # the lenders' order
                     key=lambda reply: node_party.get(node_of(grid, reply), ""))
    _record_lender_scores(out, *_pool_lender_scores(replies, node_party))
    private = out.ledger is not None
    for reply in replies:
        if not reply.has_error() and REPORT in reply.content.config_records:
            party = node_party[reply.metadata.src_node_id]
            try:
                out.reports[party] = read_report(reply.content.config_records[REPORT], private)
            except ValueError as exc:
                raise FederationError(f"{party}'s report on the final model: {exc}") from exc
    for node in messages_to(messages):
        party = node_party[node]
        if party not in out.reports:  # left out of the metrics, and said so
            out.exclusions.append(Exclusion(server_round, party,
                                            "sent no report on the final model"))
            log.warning("%s sent no report on the final model; the metrics leave it out",
                        party)


@dataclass
class _Rounds:
    """What every round of one run shares (:func:`run_federation`)."""

    grid: Grid
    s: ServerSettings
    schema: Schema
    node_party: dict[int, str]
    sampled: Grid  # the nodes the strategy samples: with pins, only those accepted
    strategy: Any
    central: Any  # central DP's plan, or None
    server_noise: NoiseSource
    out: FederationOutcome
    train_rows: int = 0  # the union's training rows, from the lenders' (noisy) statistics


def run_federation(grid: Grid, s: ServerSettings,
                   evaluate_global: GlobalEvaluation | None = None) -> FederationOutcome:
    """Run every round; return the final model, history, ledger and exclusions."""
    out = FederationOutcome()
    f = s.federation
    nodes = wait_for_nodes(grid, s.n_clients, f.connect_timeout, s.pinned_nodes)
    schema, node_party, base_rate, summaries = _agree_on_schema(grid, nodes, s,
                                                                out.refused_nodes)
    out.schema = schema
    torch.manual_seed(s.seed)
    model = shared_model(s.model, schema)
    if base_rate is not None:
        start_at_base_rate(model, base_rate)
    central = (central_plan(s.privacy, f.rounds, summaries)
               if s.privacy.mechanism is PrivacyMechanism.central else None)
    run = _Rounds(
        grid, s, schema, node_party,
        sampled=cast(Grid, AcceptedNodes(grid, node_party)) if s.pinned_nodes else grid,
        strategy=build_strategy(f, s.privacy, s.n_clients, central), central=central,
        # the server's own secret: central DP's noise (Flower draws it from numpy's global
        # generator, which is seeded from this key right before each aggregation)
        server_noise=(NoiseSource.reproducible(s.seed, "server") if s.privacy.reproducible_noise
                      else NoiseSource.fresh()),
        out=out, train_rows=max(round(sum(float(m.get("rows", 0)) for m in summaries)), 0))
    out.ledger = (None if s.privacy.mechanism is PrivacyMechanism.off
                  else PrivacyLedger(s.privacy.mechanism.value))
    arrays, first_round = ArrayRecord(model.state_dict()), 1
    if s.resume_dir is not None:
        arrays, first_round = _resume(run, Path(s.resume_dir))
    for server_round in range(first_round, f.rounds + 1):
        arrays = _one_round(run, server_round, arrays, evaluate_global)
        if f.stop_after == server_round:
            out.stopped_after = server_round
            log.warning("stopping after round %d (federation.stop_after)", server_round)
            break
    if out.history:  # the final model's evaluation and the lenders' reports
        _evaluate_at_lenders(run.sampled, run.strategy, out.completed_rounds, arrays, schema,
                             node_party, f.round_timeout, out)
    return out


def _resume(run: _Rounds, resume_dir: Path) -> tuple[ArrayRecord, int]:
    """Restore the model, strategy, ledger and history of a checkpoint; its next round."""
    ckpt, central, out = load_checkpoint(resume_dir), run.central, run.out
    if ckpt["schema"] != run.schema.to_json():
        raise FederationError(f"resume={resume_dir}: the lenders' data changed since the "
                              "checkpoint (the shared schema differs)")
    if central is not None and ckpt.get("central") != central.to_json():
        raise FederationError(
            f"resume={resume_dir}: central DP's plan changed since the checkpoint "
            f"({ckpt.get('central')} then, {central.to_json()} now: federation.rounds, the "
            "budget or the lenders' data differ); the noise of the rounds already run "
            "would no longer match the ledger")
    load_strategy_state(run.strategy, ckpt["strategy"])
    if out.ledger is not None:
        out.ledger.load_state_dict(ckpt["ledger"])
    out.history = ckpt["history"]
    out.exclusions = [Exclusion(**e) for e in ckpt["exclusions"]]
    log.info("resuming from round %d of %s", int(ckpt["round"]), resume_dir)
    return ArrayRecord(ckpt["state"]), int(ckpt["round"]) + 1


def _one_round(run: _Rounds, server_round: int, arrays: ArrayRecord,
               evaluate_global: GlobalEvaluation | None) -> ArrayRecord:
    """Send the model, screen the replies, aggregate, account, record and checkpoint."""
    start, out, f = time.perf_counter(), run.out, run.s.federation
    # the lenders score the model they get (the last round's) before training from it
    score_previous = bool(out.history)
    sent = list(run.strategy.configure_train(server_round, arrays, ConfigRecord(
        {"schema": run.schema.to_json(), EVALUATE_FIRST: score_previous,
         TRAIN_ROWS: run.train_rows}), run.sampled))
    # in a fixed order (the lenders'), not as they arrive: the aggregate's sums come out
    # the same on every engine and every run
    replies = sorted(run.grid.send_and_receive(sent, timeout=f.round_timeout),
                     key=lambda reply: run.node_party.get(node_of(run.grid, reply), ""))
    if score_previous:
        _record_lender_scores(out, *_pool_lender_scores(replies, run.node_party, SCORED))
    usable = _usable_replies(run, server_round, sent, replies, arrays)
    if run.central is not None:
        _check_central_budget(run.central, run.strategy, run.s)
        run.server_noise.seed_numpy_global("central", server_round)
    new_arrays, _ = run.strategy.aggregate_train(server_round, usable)
    if new_arrays is None:
        raise FederationError(f"round {server_round}: the strategy returned no model")
    if out.ledger is not None:
        _record_privacy(out.ledger, server_round, usable, run.node_party, run.strategy, run.s,
                        run.central)
    state = new_arrays.to_torch_state_dict()
    row = _round_row(run, server_round, usable, state, evaluate_global)
    row["seconds"] = time.perf_counter() - start
    out.history.append(row)
    out.state, out.completed_rounds = state, server_round
    save_checkpoint(Path(run.s.run_dir), {
        "round": server_round, "state": state, "strategy": strategy_state(run.strategy),
        "ledger": out.ledger.state_dict() if out.ledger is not None else None,
        "history": out.history, "exclusions": [asdict(e) for e in out.exclusions],
        "schema": run.schema.to_json(), "settings": repr(run.s),
        "central": run.central.to_json() if run.central is not None else None})
    return new_arrays


def _usable_replies(run: _Rounds, server_round: int, sent: list[Message],
                    replies: list[Message], arrays: ArrayRecord) -> list[Message]:
    """Return the replies that pass screening; record the rest (refusals in the ledger)."""
    out, f = run.out, run.s.federation
    usable, excluded = screen_replies(server_round, sent, replies, arrays, run.node_party,
                                      lambda reply: node_of(run.grid, reply))
    out.exclusions += excluded
    for e in excluded:
        log.warning("round %d: %s left out: %s", server_round, e.party, e.reason)
        if e.refused and out.ledger is not None:
            out.ledger.refuse(server_round, e.party, e.reason)
    if len(usable) < f.min_clients:
        raise FederationError(
            f"round {server_round}: {len(usable)} usable replies, below "
            f"federation.min_clients={f.min_clients}; left out: "
            + "; ".join(f"{e.party} ({e.reason})" for e in excluded))
    return usable


def _round_row(run: _Rounds, server_round: int, usable: list[Message],
               state: dict[str, torch.Tensor],
               evaluate_global: GlobalEvaluation | None) -> dict[str, Any]:
    """Return the round's line of the history (and log it)."""
    row: dict[str, Any] = {"round": server_round, "clients": len(usable)}
    if all("train_loss" in r.content[METRICS] for r in usable):  # not sent under DP
        weights = [_number(r.content[METRICS], "num-examples") for r in usable]
        losses = [_number(r.content[METRICS], "train_loss") for r in usable]
        row["train_loss"] = float(np.average(losses, weights=weights))
    if evaluate_global is not None:
        row.update(evaluate_global(state, run.schema))
    if run.out.ledger is not None:
        row["epsilon"] = run.out.ledger.summary()["epsilon"]
    log.info("round %d/%d  clients %d%s%s%s", server_round, run.s.federation.rounds,
             len(usable),
             f"  train_loss {row['train_loss']:.4f}" if "train_loss" in row else "",
             f"  val_auc {row['val_auc']:.4f}" if "val_auc" in row else "",
             f"  epsilon {row['epsilon']:.3f}" if "epsilon" in row else "")
    return row


def _record_lender_scores(out: FederationOutcome, pooled: float,
                          per_lender: dict[str, dict[str, float]]) -> None:
    """Fill the last round's row with the lenders' evaluation of its model."""
    row = out.history[-1]
    row["pooled_auc"] = pooled
    out.lender_evaluation = per_lender
    log.info("round %d  lenders' pooled test AUC %.4f", row["round"], pooled)
