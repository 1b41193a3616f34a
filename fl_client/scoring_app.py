"""The scoring ClientApp: thin handlers over :mod:`fl_client.scoring_task`.

Every node loads its own bundle and its own rows; the lender keeps the scores on its own disk
(``<state dir>/lender/scores.csv``) and sends the server counts. Every answered message is in
the node's audit log with the purpose ``scoring``. A bad bundle or bad rows are refused in the
reply, naming the culprit; the server stops the request there. Each message type's handler is a
function of this module (:data:`HANDLERS`); a message whose config differs from its declaration
(:data:`federation.protocol.SCORING_FIELDS`) is refused, naming the field, before it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from credit_data.errors import AlignmentError, BudgetRefusal, CreditFLError, DataError
from credit_data.settings import LABEL_HOLDER
from federation.explanation import PURPOSE as EXPLANATION
from federation.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    SCORING_FIELDS,
    STATUS,
    ScoringMessage,
    unpack_blobs,
)
from federation.query_ledger import Purpose
from federation.storage import write_atomic
from fl_client.audit_log_mod import AUDIT_NOTE, audit_log_mod, role_guard_mod
from fl_client.explanation import (
    lender_gradients,
    lender_reasons,
    party_columns,
    party_path,
)
from fl_client.list_lookup import holder_answer, is_holder
from fl_client.node_store import load_state, save_state
from fl_client.one_bundle_scoring import score_own_applicants
from fl_client.scorecard_explanation import is_scorecard, lender_codes, party_codes
from fl_client.scoring_service import SERVED, STOP, ServedLender, ServedParty
from fl_client.scoring_task import (
    SCORES_FILE,
    ScoringInput,
    ScoringLender,
    ScoringParty,
    once,
)
from fl_client.sealed_exchange import SCORING, open_from_parties, seal_for_lender
from fl_client.settings import ClientSettings
from fl_client.vertical_app import arrays, unpack

if TYPE_CHECKING:
    from fl_client.vertical_task import NodeState

ScoringSource = Callable[[Context], tuple[ClientSettings, ScoringInput]]
Handler = Callable[[Message, Context, ClientSettings, ScoringInput], Message]
REFUSED = (CreditFLError, BudgetRefusal, AlignmentError)


def _reply(msg: Message, party: str, *, info: dict[str, Any] | None = None,
           metrics: dict[str, float] | None = None, config: dict[str, Any] | None = None,
           values: dict[str, Any] | None = None) -> Message:
    content = RecordDict({STATUS: ConfigRecord({"party": party})})
    record = dict(config or {})
    if info is not None:
        record["info"] = json.dumps(info)
    if record:
        content[CONFIG] = ConfigRecord(record)
    if metrics:
        content[METRICS] = MetricRecord(cast(dict[str, Any], metrics))
    if values is not None:
        content[ARRAYS] = arrays(values)
    return Message(content, reply_to=msg)


def _spent(info: dict[str, Any]) -> dict[str, float] | None:
    """Return a noisy release's marginal epsilon, for the node's audit log and lifetime budget."""
    if "epsilon_per_new_applicant" not in info:
        return None
    return {"scoring_epsilon": float(info["epsilon_per_new_applicant"])}


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records.get(CONFIG, ConfigRecord())


def _hello(msg: Message, context: Context, settings: ClientSettings,
           data: ScoringInput) -> Message:
    if is_holder(settings):
        return _reply(msg, settings.party, info={"role": "holder", "rows": data.table.n_rows})
    if settings.party != LABEL_HOLDER:
        node = ScoringParty(settings, data)
        return _reply(msg, settings.party, info=node.hello() | {"rows": len(node.ids)})
    state = load_state(settings, context)
    if _config(msg).get("serve"):  # a scoring service: the lender's channel key only
        served, key = ServedLender(settings, data, data.applicants).hello(state)
        save_state(settings, context, state)
        return _reply(msg, settings.party, info=served, config={"key": key})
    lender = ScoringLender(settings, data)
    request, key = lender.request(state)
    save_state(settings, context, state)
    return _reply(msg, settings.party, info=lender.hello() | {
        "rows": len(lender.ids), "passive": list(lender.passive),
        "blacklists": lender.holders},
        config={"request": request, "key": key})


def _answer(msg: Message, context: Context, settings: ClientSettings,
            data: ScoringInput) -> Message:
    config, state = _config(msg), load_state(settings, context)
    node = ScoringParty(settings, data)
    setup, response, key, cached = node.answer(
        state, cast(bytes, config["request"]), cast(bytes, config["key"]),
        int(cast(int, config["lender_rows"])))
    save_state(settings, context, state)
    assert node.spend is not None
    context.state.config_records[AUDIT_NOTE] = ConfigRecord(
        {"lookup": "scoring alignment", "asked": node.spend.asked})
    return _reply(msg, settings.party, metrics={"setup_cached": float(cached),
                                                **node.spend.metrics()},
                  config={"setup": setup, "response": response, "key": key})


def _list_answer(msg: Message, context: Context, settings: ClientSettings,
                 data: ScoringInput) -> Message:
    config, state = _config(msg), load_state(settings, context)
    setup, response, signature, metrics = holder_answer(
        settings, [str(i) for i in data.table.frame.index], cast(bytes, config["request"]),
        int(cast(int, config["asked"])), cast(bytes, config["key"]), state.keys,
        purpose=Purpose.service if config.get("served") else Purpose.scoring,
        per_request=bool(config.get("served")))
    save_state(settings, context, state)
    context.state.config_records[AUDIT_NOTE] = ConfigRecord(
        {"lookup": str(config.get("purpose", "")), "asked": int(metrics["asked"])})
    return _reply(msg, settings.party, metrics=metrics,
                  config={"setup": setup, "response": response, "signature": signature})


def _intersect(msg: Message, context: Context, settings: ClientSettings,
               data: ScoringInput) -> Message:
    config, state = _config(msg), load_state(settings, context)
    passive = [str(p) for p in cast(list[str], config.get("passive", []))]
    holders = [str(h) for h in cast(list[str], config.get("holders", []))]
    sealed = ScoringLender(settings, data).intersect(state, {p: (
        cast(bytes, config[f"{p}.setup"]), cast(bytes, config[f"{p}.response"]),
        cast(bytes, config[f"{p}.key"])) for p in passive}, {h: (
            cast(bytes, config[f"{h}.setup"]), cast(bytes, config[f"{h}.response"]),
            cast(bytes, config[f"{h}.signature"])) for h in holders})
    save_state(settings, context, state)
    metrics = {f"{p}.known": float(state.masks[p].sum()) for p in passive}
    metrics |= {f"{h}.listed": float(state.listed[h].sum()) for h in holders}
    if holders:  # the lender's side of each lookup, in its own audit log: counts only
        note: dict[str, int | str] = {"lookup": "scoring", "asked": len(data.table.frame)}
        note |= {f"{h}.listed": int(state.listed[h].sum()) for h in holders}
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(cast(Any, note))
    return _reply(msg, settings.party, metrics=metrics,
                  config={f"{p}.sealed": s for p, s in sealed.items()})


def _embed(msg: Message, context: Context, settings: ClientSettings,
           data: ScoringInput) -> Message:
    state = load_state(settings, context)
    node = ScoringParty(settings, data)
    values, info = node.embed(state, cast(bytes, _config(msg)["sealed"]))
    sealed = seal_for_lender(settings, state, {"embeddings": SCORING}, (0,),
                             {"embeddings": values})
    if _config(msg).get("explain"):
        sealed |= _party_explanation(node, context, settings, data, state, info)
    save_state(settings, context, state)
    return _reply(msg, settings.party, info=info, metrics=_spent(info), values=sealed)


def _party_explanation(node: ScoringParty, context: Context, settings: ClientSettings,
                       data: ScoringInput, state: NodeState, info: dict[str, Any]
                       ) -> dict[str, np.ndarray]:
    """Return a party's sealed codes (a scorecard) or path (a split network), if it explains.

    Adds what it says to ``info``; an explanation released is counted in the node's own audit
    line.
    """
    if is_scorecard(node.bundle):  # its top codes beside the embeddings
        codes, said = party_codes(node.bundle, data.table, settings, state)
        info["explains"] = bool(codes)
        if codes:
            info["global"] = said["global"]
            info["outside_epsilon"] = sorted({*info.get("outside_epsilon", []),
                                              *said["outside_epsilon"]})
            context.state.config_records[AUDIT_NOTE] = ConfigRecord(
                {"purpose": EXPLANATION, "explanation": "scorecard codes",
                 "explained": int(said["explained"])})
        return {f"explain.{k}": v for k, v in codes.items()}
    path = party_path(node.bundle, data.table, settings, state)
    info["explains"] = bool(path)
    if path:
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(
            {"explanation": "path", "explained": int(info["rows"])})
    return {f"explain.{k}": v for k, v in path.items()}


def _score(msg: Message, context: Context, settings: ClientSettings,
           data: ScoringInput) -> Message:
    state = load_state(settings, context)
    received = unpack(msg.content.array_records.get(ARRAYS))
    paths: dict[str, dict[str, np.ndarray]] = {}
    for name, blob in received.items():  # "<party>.explain.<kind>": a path or codes
        if ".explain." in name:
            party, _, kind = name.partition(".explain.")
            paths.setdefault(party, {})[kind] = blob
    embeddings = open_from_parties(settings, state, SCORING, (0,), {
        p: b for p, b in received.items() if ".explain." not in p})
    lender = ScoringLender(settings, data)
    table, counts = lender.score(state, embeddings)
    sealed: dict[str, np.ndarray] = {}
    if _config(msg).get("explain"):
        table, sealed = _lender_explanation(lender, context, settings, data, state, table,
                                            counts, embeddings, paths)
    save_state(settings, context, state)
    if settings.state_dir:  # the scores stay at the lender
        write_atomic(Path(settings.state_dir) / settings.party / SCORES_FILE,
                     table.to_csv(index=False, float_format="%.10g"), mode=0o600)
    return _reply(msg, settings.party, info=counts, values=sealed if sealed else None)


def _lender_explanation(lender: ScoringLender, context: Context, settings: ClientSettings,
                        data: ScoringInput, state: NodeState, table: pd.DataFrame,
                        counts: dict[str, Any], embeddings: dict[str, np.ndarray],
                        paths: dict[str, dict[str, np.ndarray]]
                        ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Rank a scorecard's reasons now, or seal the head's gradients for each party's path.

    Returns the scores table (with the reasons when ranked here) and the sealed gradients;
    the reasons' counts go in ``counts["explanation"]``.
    """
    if is_scorecard(lender.bundle):  # ranked here and now
        once(state, settings.party, "reasons")
        reasons, counts["explanation"] = lender_codes(
            lender.bundle, data.table, settings, state, lender.holders, embeddings, paths)
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(
            {"purpose": EXPLANATION, "explained": int(counts["explanation"]["explained"])})
        return pd.concat([table, reasons], axis=1), {}
    sealed = {f"{p}.gradients": g for p, g in lender_gradients(
        lender.bundle, data.table, settings, state, lender.holders, embeddings,
        paths).items()}
    if not sealed:  # no party splits its share: the reasons now, no more rounds
        once(state, settings.party, "reasons")
        reasons, counts["explanation"] = lender_reasons(
            lender.bundle, data.table, settings, state, lender.holders, {})
        table = pd.concat([table, reasons], axis=1)
    return table, sealed


def _explain_columns(msg: Message, context: Context, settings: ClientSettings,
                     data: ScoringInput) -> Message:
    state = load_state(settings, context)
    config = _config(msg)
    gradients = (np.frombuffer(cast(bytes, config["gradients"]), dtype=np.uint8)
                 if "gradients" in config  # a scoring service's: in the config
                 else unpack(msg.content.array_records.get(ARRAYS))["gradients"])
    if config.get("served"):  # a scoring service's request (once per request)
        sealed, names, info = ServedParty(settings, data).columns(state, gradients)
        save_state(settings, context, state)
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(
            {"explained": int(info["explained"])})
        return _reply(msg, settings.party, info=info, config={
            "names": names, "columns": sealed["columns"].tobytes()})
    elif SERVED in state.keys:  # the batch path's counter would split a request once more
        raise BudgetRefusal(f"{settings.party}: a batch 'explain' at a node whose scoring "
                            "service has started is refused: its requests' columns are split "
                            "once each, through the service")
    else:
        node = ScoringParty(settings, data)
        once(state, settings.party, "explain")
        sealed, names, info = party_columns(node.bundle, data.table, settings, state,
                                            gradients)
    save_state(settings, context, state)
    context.state.config_records[AUDIT_NOTE] = ConfigRecord(
        {"explained": int(info["explained"])})
    return _reply(msg, settings.party, info=info, config={"names": names}, values=sealed)


def _explain_reasons(msg: Message, context: Context, settings: ClientSettings,
                     data: ScoringInput) -> Message:
    state = load_state(settings, context)
    config, received = _config(msg), unpack(msg.content.array_records.get(ARRAYS))
    received |= {f"{p}.columns": np.frombuffer(cast(bytes, config[f"{p}.columns"]), np.uint8)
                 for p in cast(list[str], config.get("explaining", []))}  # a service's
    columns = {str(p): (received[f"{p}.columns"], [str(n) for n in cast(
        list[str], config[f"{p}.names"])]) for p in cast(list[str], config.get("passive", []))}
    if config.get("served"):  # a scoring service's request: joins that request's scores
        counts = ServedLender(settings, data, data.applicants).reasons(state, columns)
        save_state(settings, context, state)
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(
            {"purpose": EXPLANATION, "explained": int(counts["explained"])})
        return _reply(msg, settings.party, info=counts)
    once(state, settings.party, "reasons")
    lender = ScoringLender(settings, data)
    table, counts = lender_reasons(lender.bundle, data.table, settings, state,
                                   lender.holders, columns)
    save_state(settings, context, state)
    if settings.state_dir:  # the reasons join the scores, at the lender
        path = Path(settings.state_dir) / settings.party / SCORES_FILE
        scores = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
        write_atomic(path, pd.concat([scores, table], axis=1).to_csv(
            index=False, float_format="%.10g"), mode=0o600)
    return _reply(msg, settings.party, info=counts)


def _score_own(msg: Message, context: Context, settings: ClientSettings,
               data: ScoringInput) -> Message:
    state = load_state(settings, context)
    once(state, settings.party, "score")
    table, counts = score_own_applicants(data.bundle_dir, data.table, settings)
    save_state(settings, context, state)
    if settings.state_dir:  # the scores stay at the lender
        write_atomic(Path(settings.state_dir) / settings.party / SCORES_FILE,
                     table.to_csv(index=False, float_format="%.10g"), mode=0o600)
    return _reply(msg, settings.party, info=counts)


def _serve_table(msg: Message, context: Context, settings: ClientSettings,
                 data: ScoringInput) -> Message:
    state = load_state(settings, context)
    sealed, key, info = ServedParty(settings, data).sealed_table(
        state, cast(bytes, _config(msg)["key"]))
    save_state(settings, context, state)
    # a release drawn now is counted now, once: later services reuse it
    return _reply(msg, settings.party, info=info, metrics=_spent(info), config={"key": key},
                  values={"table": np.frombuffer(sealed, dtype=np.uint8)})


def _serve_open(msg: Message, context: Context, settings: ClientSettings,
                data: ScoringInput) -> Message:
    config, state = _config(msg), load_state(settings, context)
    tables = unpack(msg.content.array_records.get(ARRAYS))
    sizes = ServedLender(settings, data, data.applicants).open_tables(state, {
        str(p): (cast(bytes, config[f"{p}.key"]), tables[str(p)].tobytes())
        for p in cast(list[str], config.get("passive", []))})
    save_state(settings, context, state)
    return _reply(msg, settings.party, metrics={f"{p}.rows": float(n)
                                                for p, n in sizes.items()})


def _serve_next(msg: Message, context: Context, settings: ClientSettings,
                data: ScoringInput) -> Message:
    lender = ServedLender(settings, data, data.applicants)
    request = lender.next_request(float(cast(float, _config(msg).get("wait", 20.0))))
    if request is None:
        return _reply(msg, settings.party, config={"state": "idle"})
    if request.get(STOP):
        return _reply(msg, settings.party, config={"state": "stop"})
    state = load_state(settings, context)
    try:
        if "error" in request:
            raise DataError(str(request["error"]))
        rows, sealed, lookup = lender.blind(state, request)
    except REFUSED as exc:  # this request's fault: named for it, the service goes on
        return _reply(msg, settings.party, config={
            "state": "refused", "request": request["id"], "refused_request": str(exc)})
    save_state(settings, context, state)
    context.state.config_records[AUDIT_NOTE] = ConfigRecord(
        {"request": str(request["id"]), "asked": rows})
    config: dict[str, Any] = {"state": "request", "request": request["id"]}
    config |= {f"{p}.sealed": s for p, s in sealed.items()}
    if lookup is not None:
        config["lookup.request"], config["lookup.key"] = lookup
    return _reply(msg, settings.party, metrics={"rows": float(rows)}, config=config)


def _serve_eval(msg: Message, context: Context, settings: ClientSettings,
                data: ScoringInput) -> Message:
    state = load_state(settings, context)
    evaluated, spend = ServedParty(settings, data).evaluate(
        state, cast(bytes, _config(msg)["sealed"]))
    save_state(settings, context, state)
    context.state.config_records[AUDIT_NOTE] = ConfigRecord(
        {"lookup": "scoring service", "asked": spend.asked})
    return _reply(msg, settings.party, metrics=spend.metrics(),
                  config={"evaluated": evaluated})


def _serve_match(msg: Message, context: Context, settings: ClientSettings,
                 data: ScoringInput) -> Message:
    config, state = _config(msg), load_state(settings, context)
    known = ServedLender(settings, data, data.applicants).match(
        state, {str(p): cast(bytes, config[f"{p}.evaluated"])
                for p in cast(list[str], config.get("passive", []))})
    save_state(settings, context, state)
    return _reply(msg, settings.party,
                  metrics={f"{p}.known": float(state.masks[p].sum()) for p in known},
                  config={f"{p}.known": k for p, k in known.items()})


def _serve_embed(msg: Message, context: Context, settings: ClientSettings,
                 data: ScoringInput) -> Message:
    state = load_state(settings, context)
    node = ServedParty(settings, data)
    embedded, info = node.embed_known(state, cast(bytes, _config(msg)["known"]))
    sealed: dict[str, np.ndarray] | None = None
    if _config(msg).get("explain"):  # its codes or path beside them, if it explains
        sealed, said = node.explain_known(state)
        info |= said
        if sealed:  # counted in this node's own audit line: an explanation's release
            context.state.config_records[AUDIT_NOTE] = ConfigRecord(
                {"purpose": EXPLANATION, "explained": int(said["explained"])})
    save_state(settings, context, state)
    return _reply(msg, settings.party, info=info, config={"embedded": embedded} | {
        name: blob.tobytes() for name, blob in (sealed or {}).items()})


def _serve_score(msg: Message, context: Context, settings: ClientSettings,
                 data: ScoringInput) -> Message:
    config, state = _config(msg), load_state(settings, context)
    holders = [str(h) for h in cast(list[str], config.get("holders", []))]
    explained: dict[str, dict[str, np.ndarray]] | None = None
    if config.get("explain"):  # each explaining party's sealed codes or path, packed
        explained = {str(p): {name.removeprefix("explain."): np.frombuffer(blob, np.uint8)
                              for name, blob in unpack_blobs(cast(
                                  bytes, config[f"{p}.explained"])).items()}
                     for p in cast(list[str], config.get("explaining", []))}
    lender = ServedLender(settings, data, data.applicants)
    request, _, counts = lender.score(
        state, {str(p): cast(bytes, config[f"{p}.embedded"])
                for p in cast(list[str], config.get("passive", []))},
        {h: (cast(bytes, config[f"{h}.setup"]), cast(bytes, config[f"{h}.response"]),
             cast(bytes, config[f"{h}.signature"])) for h in holders}, explained)
    save_state(settings, context, state)
    if "explanation" in counts:  # ranked here and now
        context.state.config_records[AUDIT_NOTE] = ConfigRecord(
            {"purpose": EXPLANATION, "explained": int(counts["explanation"]["explained"])})
    return _reply(msg, settings.party, info=counts | {"request": request},
                  config={f"{p}.gradients": g.tobytes() for p, g in lender.gradients.items()})


HANDLERS: dict[ScoringMessage, Handler] = {
    ScoringMessage.HELLO: _hello,
    ScoringMessage.ANSWER: _answer,
    ScoringMessage.LIST_ANSWER: _list_answer,
    ScoringMessage.INTERSECT: _intersect,
    ScoringMessage.EMBED: _embed,
    ScoringMessage.SCORE: _score,
    ScoringMessage.EXPLAIN: _explain_columns,
    ScoringMessage.REASONS: _explain_reasons,
    ScoringMessage.OWN: _score_own,
    # a scoring service's (:mod:`fl_server.scoring_service`)
    ScoringMessage.SERVE_TABLE: _serve_table,
    ScoringMessage.SERVE_OPEN: _serve_open,
    ScoringMessage.SERVE_NEXT: _serve_next,
    ScoringMessage.SERVE_EVAL: _serve_eval,
    ScoringMessage.SERVE_MATCH: _serve_match,
    ScoringMessage.SERVE_EMBED: _serve_embed,
    ScoringMessage.SERVE_SCORE: _serve_score,
}
"""Each message type's handler: ``handler(msg, context, settings, data)``."""


def make_scoring_client_app(source: ScoringSource, mods: tuple[Mod, ...] = ()) -> ClientApp:
    """Build the scoring ClientApp over a source of (settings, bundle and rows) per node.

    Each message type's handler is a function of this module (:data:`HANDLERS`), run once
    its config is the one declared (:data:`federation.protocol.SCORING_FIELDS`).
    """
    app = ClientApp(mods=[audit_log_mod(lambda context: source(context)[0], "scoring", {
        str(ScoringMessage.EXPLAIN): EXPLANATION, str(ScoringMessage.REASONS): EXPLANATION}),
                          role_guard_mod(lambda context: source(context)[0]), *mods])
    for message, handler in HANDLERS.items():
        app.query(message.action)(_guarded(handler, source))
    return app


def _guarded(handler: Handler, source: ScoringSource) -> Callable[[Message, Context], Message]:
    """Run ``handler`` over the node's source; refuse, naming it, a field or a bad input."""
    def run(msg: Message, context: Context) -> Message:
        party = str(context.node_config.get("party", "a node"))
        kind = msg.metadata.message_type
        problem = SCORING_FIELDS[ScoringMessage(kind)].problem(kind, _config(msg))
        try:
            settings, data = source(context)
            party = settings.party
            if problem is not None:  # a field missing or one this node does not know
                return _reply(msg, party, config={"refused": problem})
            return handler(msg, context, settings, data)
        except REFUSED as exc:  # named in the reply, the audit log and the run's error
            return _reply(msg, party, config={"refused": str(exc)})
    return run
