"""The vertical ClientApp: thin handlers over :mod:`fl_client.vertical_task`.

One app serves every party; a node's role follows from its own settings (the lender holds the
labels). Message types: ``query.hello``, ``query.psi_request`` / ``query.psi_intersect``
(lender), ``query.psi_setup`` / ``query.psi_answer`` / ``query.psi_receive`` (passive
parties), ``train.embed``
(passive), ``train.head`` (lender), ``evaluate.final`` (both).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from credit_data.errors import AlignmentError
from credit_data.ids import id_shape, to_json
from credit_data.settings import LABEL_HOLDER
from credit_data.vertical import NodeRows
from federation.alignment import KEY_BYTES
from federation.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    REPORT,
    RUN_ENDS,
    STATUS,
    VERTICAL_FIELDS,
    VerticalMessage,
    report_record,
)
from federation.query_ledger import Purpose
from federation.settings import ListMode
from fl_client.audit_log_mod import AUDIT_NOTE, audit_log_mod, role_guard_mod
from fl_client.list_lookup import holder_answer, lender_hits, lookup_key, with_hits
from fl_client.node_noise import forget_key_mod, node_noise
from fl_client.node_store import at_epoch_start, kept_copy, load_state, save_state
from fl_client.party_bundle import write_lender_bundle, write_passive_bundle
from fl_client.sealed_exchange import (
    embeddings_kind,
    final_kind,
    open_from_parties,
    open_gradients,
    resend_gradients,
    seal_for_lender,
    seal_gradients,
)
from fl_client.settings import ClientSettings
from fl_client.vertical_task import BudgetRefusal, LenderNode, NodeState, PassiveNode

VerticalSource = Callable[[Context], tuple[ClientSettings, NodeRows]]
Handler = Callable[[VerticalSource, Message, Context], Message]


def arrays(values: dict[str, np.ndarray]) -> ArrayRecord:
    """Pack named numpy arrays."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})


def unpack(record: ArrayRecord | None) -> dict[str, np.ndarray]:
    """Unpack named numpy arrays."""
    return {} if record is None else {k: v.numpy() for k, v in record.items()}


def _reply(msg: Message, party: str, metrics: dict[str, float] | None = None,
           values: dict[str, np.ndarray] | None = None,
           config: dict[str, Any] | None = None) -> Message:
    content = RecordDict({STATUS: ConfigRecord({"party": party})})
    if metrics:
        content[METRICS] = MetricRecord({k: float(v) for k, v in metrics.items()})
    if values is not None:
        content[ARRAYS] = arrays(values)
    if config:
        content[CONFIG] = ConfigRecord(config)
    return Message(content, reply_to=msg)


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get(CONFIG, ConfigRecord())


def _passive(config: ConfigRecord) -> tuple[str, ...]:
    return tuple(str(p) for p in cast(list[str], config["passive"]))


def _ends_run(msg: Message) -> bool:
    """Whether ``msg`` is the final model's message of a run that ends there (not stopped)."""
    return (msg.metadata.message_type == str(VerticalMessage.FINAL) and not msg.has_error()
            and _config(msg).get(RUN_ENDS) is True)


def _hello(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    return _reply(msg, settings.party, {"rows": len(rows.ids),
                                        "columns": rows.source_columns},
                  config={"id_shape": to_json(id_shape(rows.ids))})


def _psi_request(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    state = load_state(settings, context)
    config = _config(msg)
    node = LenderNode(settings, rows, _passive(config), node_noise(context, settings))
    # list holders answer the same request: a fresh key keeps them from linking applicants
    request, key = node.request(state, cached=not config.get("holders"))
    out: dict[str, Any] = {"request": request, "key": key}
    if config.get("holders"):
        second = lookup_key(settings, rows.ids, ListMode(str(config["list_mode"])), request,
                            key[:KEY_BYTES], state.keys)
        if second is not None:
            out["list_request"], out["list_key"] = second
    save_state(settings, context, state)
    return _reply(msg, settings.party, {"rows": len(rows.ids)}, config=out)


def _psi_setup(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    before = load_state(settings, context)
    if before.dp_steps or before.releases:
        # a fresh state would start this run's accountant again at zero
        return _reply(msg, settings.party, config={"refused": (
            f"{settings.party}: this run already trained at this node; a new alignment "
            "needs a new run")})
    state = NodeState()  # a new alignment starts a new federation at this node
    setup, cached = PassiveNode(settings, rows, node_noise(context, settings)).setup(
        state, int(cast(int, _config(msg)["lender_rows"])))
    save_state(settings, context, state)
    return _reply(msg, settings.party, {"rows": len(rows.ids), "setup_cached": float(cached)},
                  config={"setup": setup})


def _psi_answer(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    config, state = _config(msg), load_state(settings, context)
    try:
        response, key, spend = PassiveNode(settings, rows, node_noise(context, settings)
                                           ).answer(state, cast(bytes, config["request"]),
                                                    cast(bytes, config["key"]))
    except AlignmentError as refusal:  # past its query cap, asked twice: nothing answered
        return _reply(msg, settings.party, config={"refused": str(refusal)})
    save_state(settings, context, state)
    context.state.config_records[AUDIT_NOTE] = ConfigRecord(
        {"lookup": "training alignment", "asked": spend.asked})
    return _reply(msg, settings.party, spend.metrics(),
                  config={"response": response, "key": key})


def _list_answer(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    config, state = _config(msg), load_state(settings, context)
    try:
        setup, response, signature, metrics = holder_answer(
            settings, rows.ids, cast(bytes, config["request"]),
            int(cast(int, config["asked"])), cast(bytes, config["key"]), state.keys,
            purpose=Purpose.training)
    except AlignmentError as refusal:  # past max_queries, unsigned, the other mode, again
        return _reply(msg, settings.party, config={"refused": str(refusal)})
    save_state(settings, context, state)
    context.state.config_records[AUDIT_NOTE] = ConfigRecord(
        {"lookup": str(config.get("purpose", "")), "asked": int(metrics["asked"])})
    return _reply(msg, settings.party, metrics, config={
        "setup": setup, "response": response, "signature": signature})


def _psi_intersect(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    config = _config(msg)
    passive = _passive(config)
    state = load_state(settings, context)
    node = LenderNode(settings, rows, passive, node_noise(context, settings))
    sealed = node.intersect(state, {party: (
        cast(bytes, config[f"{party}.setup"]), cast(bytes, config[f"{party}.response"]),
        cast(bytes, config[f"{party}.key"])) for party in passive})
    metrics: dict[str, float] = {}
    for party in passive:
        metrics.update({f"{party}.lender_rows": float(len(rows.ids)),
                        f"{party}.intersection": float(state.masks[party].sum())})
    holders = [str(h) for h in cast(list[str], config.get("holders", []))]
    hits = lender_hits(settings, rows.ids, ListMode(str(config.get("list_mode", "lookup"))),
                       state.keys, {h: (cast(bytes, config[f"{h}.setup"]),
                                        cast(bytes, config[f"{h}.response"]),
                                        cast(bytes, config[f"{h}.signature"]))
                                    for h in holders})
    state.keys.pop("list", None)
    for holder, hit in hits.items():
        if isinstance(hit, np.ndarray):
            state.listed[holder] = hit
        metrics[f"{holder}.listed"] = float(np.sum(hit))
    if hits:  # the lender's side of each lookup, in its own audit log: counts only
        note: dict[str, int | str] = {"lookup": "training", "asked": len(rows.ids)}
        note |= {f"{h}.listed": int(np.sum(hit)) for h, hit in hits.items()}
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(cast(Any, note))
    save_state(settings, context, state)
    return _reply(msg, settings.party, metrics,
                  config={f"{p}.sealed": s for p, s in sealed.items()})


def _psi_receive(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    state = load_state(settings, context)
    n = PassiveNode(settings, rows, node_noise(context, settings)).receive(
        state, cast(bytes, _config(msg)["sealed"]))
    save_state(settings, context, state)
    return _reply(msg, settings.party, {"intersection": float(n), "rows": len(rows.ids)})


def _train_embed(source: VerticalSource, msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    settings, rows = source(context)
    config, state = _config(msg), load_state(settings, context)
    sealed = unpack(msg.content.array_records.get(ARRAYS)).get("grads")
    said = cast(list[int], config["prev"]) if "prev" in config else None
    prev = (int(said[0]), int(said[1])) if said else None
    epoch, chunk = int(cast(int, config["epoch"])), int(cast(int, config["chunk"]))
    state = at_epoch_start(settings, state, epoch, chunk)
    try:
        node = PassiveNode(settings, rows, node_noise(context, settings))
        train, val, metrics = node.exchange(
            state, epoch=epoch, chunk=chunk, prev=prev,
            grads=open_gradients(settings, state, sealed, prev),
            val_epoch=int(cast(int, config["val_epoch"])))
    except (BudgetRefusal, AlignmentError) as refusal:
        return _reply(msg, settings.party, config={"refused": str(refusal)})
    state.last = [epoch, chunk]
    save_state(settings, context, state)
    values = {"train": train} | ({"val": val} if val is not None else {})
    metrics["compute_s"] = time.perf_counter() - start
    return _reply(msg, settings.party, metrics, seal_for_lender(
        settings, state, {k: embeddings_kind(k) for k in values}, (epoch, chunk), values))


def _train_head(source: VerticalSource, msg: Message, context: Context) -> Message:
    start = time.perf_counter()
    settings, rows = source(context)
    config, state = _config(msg), load_state(settings, context)
    rows = with_hits(rows, state.listed)
    passive = _passive(config)
    values = unpack(msg.content.array_records.get(ARRAYS))  # each party's, sealed
    validates = bool(passive) and f"{passive[0]}.val" in values
    node = LenderNode(settings, rows, passive, node_noise(context, settings))
    if node.flip > 0:  # the lender's own audit log shows the flips stay the same
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(
            {"label_flips_sha256": node.flip_digest()})
    epoch, chunk = int(cast(int, config["epoch"])), int(cast(int, config["chunk"]))
    state = at_epoch_start(settings, state, epoch, chunk)
    try:
        opened = {split: open_from_parties(
            settings, state, embeddings_kind(split), (epoch, chunk),
            {p: values[f"{p}.{split}"] for p in passive})
            for split in ("train", "val") if split == "train" or validates}
        grads, metrics = node.exchange(
            state, epoch=epoch, chunk=chunk, embeddings=opened["train"],
            val=opened.get("val"), val_epoch=int(cast(int, config["val_epoch"])))
    except (BudgetRefusal, AlignmentError) as refusal:
        return _reply(msg, settings.party, config={"refused": str(refusal)})
    sealed = seal_gradients(settings, state, epoch, chunk, grads)
    state.last = [epoch, chunk]
    save_state(settings, context, state)
    metrics["compute_s"] = time.perf_counter() - start
    return _reply(msg, settings.party, metrics, sealed)


def _resend(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, _ = source(context)
    config = _config(msg)
    try:
        if settings.party != LABEL_HOLDER:
            raise AlignmentError(f"{settings.party} sends no gradients; refused")
        kept = kept_copy(settings)
        sealed = resend_gradients(
            settings, [load_state(settings, context), *([kept] if kept else [])],
            int(cast(int, config["epoch"])), int(cast(int, config["chunk"])),
            _passive(config))
    except AlignmentError as refusal:
        return _reply(msg, settings.party, config={"refused": str(refusal)})
    return _reply(msg, settings.party, values=sealed)


def _final(source: VerticalSource, msg: Message, context: Context) -> Message:
    settings, rows = source(context)
    config, state = _config(msg), load_state(settings, context)
    best = int(cast(int, config["best_epoch"]))
    if settings.party != LABEL_HOLDER:
        node = PassiveNode(settings, rows, node_noise(context, settings))
        try:
            embeddings = node.final(state, best)
        except BudgetRefusal as refusal:
            return _reply(msg, settings.party, config={"refused": str(refusal)})
        if settings.state_dir:
            node.write_leakage(state, Path(settings.state_dir) / settings.party)
            if settings.inversion_attack:
                node.write_released(state, embeddings,
                                    Path(settings.state_dir) / settings.party)
        # what the node has spent, on its last reply too (its audit log, its budget)
        spent = node.embedding_spend(state) if node.noisy else {}
        version, encoder = node.final_encoder(state, best)
        write_passive_bundle(settings, rows, str(config.get("model_id", "")),
                             encoder.state_dict(), encoder_version=version,
                             noise_std=node.scoring_noise_std(), privacy=spent)
        return _reply(msg, settings.party, spent, values=seal_for_lender(
            settings, state, {s: final_kind(s) for s in embeddings}, (best,), embeddings))
    passive = _passive(config)
    rows = with_hits(rows, state.listed)
    values = unpack(msg.content.array_records.get(ARRAYS))
    out_dir = Path(settings.state_dir) / settings.party if settings.state_dir else None
    lender = LenderNode(settings, rows, passive, node_noise(context, settings))
    opened = {s: open_from_parties(settings, state, final_kind(s), (best,),
                                   {p: values[f"{p}.{s}"] for p in passive})
              for s in ("train", "val", "test")}
    metrics, report, split_rows = lender.final(
        state, {p: {s: opened[s][p] for s in opened} for p in passive}, out_dir)
    write_lender_bundle(settings, rows, str(config.get("model_id", "")),
                        lender.best_model(state).state_dict(), passive=passive,
                        calibration=lender.calibration, metrics=metrics,
                        privacy=lender.spend(state), holders=tuple(state.listed))
    reply = _reply(msg, settings.party, metrics)
    reply.content[REPORT] = ConfigRecord(report_record(report, split_rows))
    return reply


HANDLERS: dict[VerticalMessage, Handler] = {
    VerticalMessage.HELLO: _hello,
    VerticalMessage.PSI_REQUEST: _psi_request,
    VerticalMessage.PSI_SETUP: _psi_setup,
    VerticalMessage.PSI_ANSWER: _psi_answer,
    VerticalMessage.LIST_ANSWER: _list_answer,
    VerticalMessage.PSI_INTERSECT: _psi_intersect,
    VerticalMessage.PSI_RECEIVE: _psi_receive,
    VerticalMessage.EMBED: _train_embed,
    VerticalMessage.HEAD: _train_head,
    VerticalMessage.RESEND: _resend,
    VerticalMessage.FINAL: _final,
}
"""Each message type's handler: ``handler(source, msg, context)``."""


def make_vertical_client_app(source: VerticalSource, mods: tuple[Mod, ...] = ()) -> ClientApp:
    """Build the ClientApp over a source of (settings, rows) for the node in ``context``.

    ``mods`` run inside the audit log's mod (a deployed node's lifetime budget). Each message
    type's handler is a function of this module (:data:`HANDLERS`).
    """
    app = ClientApp(mods=[forget_key_mod(lambda context: source(context)[0], _ends_run),
                          audit_log_mod(lambda context: source(context)[0]),
                          role_guard_mod(lambda context: source(context)[0]), *mods])
    for message, handler in HANDLERS.items():
        register = {"query": app.query, "train": app.train, "evaluate": app.evaluate}[
            message.value.split(".", 1)[0]]
        register(message.action)(_bound(handler, source))
    return app


def _bound(handler: Handler, source: VerticalSource) -> Callable[[Message, Context], Message]:
    def handle(msg: Message, context: Context) -> Message:
        kind = msg.metadata.message_type
        problem = VERTICAL_FIELDS[VerticalMessage(kind)].problem(kind, _config(msg))
        if problem is not None:  # a field missing or one this node does not know: nothing run
            # named from the node's own config where it has one (a deployed node: reading its
            # source would claim a resumed run's state, read its data, log its consent)
            party = context.node_config.get("party") or source(context)[0].party
            return _reply(msg, str(party), config={"refused": problem})
        return handler(source, msg, context)
    return handle
