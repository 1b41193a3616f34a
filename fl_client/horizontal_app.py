"""The ClientApp: thin handlers over :mod:`fl_client.horizontal_task`.

Where a node's settings and rows come from is the only thing that differs between simulation
(the runner hands them over) and deployment (the node's own config): :func:`make_client_app`
takes that source as a function of the Flower context.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from credit_data.federated_scaling import Schema
from credit_data.horizontal import LenderRows
from credit_data.split import TRAIN
from federation.protocol import (
    ARRAYS,
    CONFIG,
    EVALUATE_FIRST,
    EVALUATION,
    METRICS,
    REPORT,
    RUN_ENDS,
    STATUS,
    TRAIN_ROWS,
    evaluation_metrics,
    report_record,
)
from fl_client.audit_log_mod import audit_log_mod
from fl_client.horizontal_task import BudgetRefusal, LenderTask, PartyPrivacy
from fl_client.node_noise import forget_key_mod, node_noise
from fl_client.settings import ClientSettings
from privacy.settings import PrivacyMechanism

NodeSource = Callable[[Context], tuple[ClientSettings, LenderRows]]
PRIVACY_STATE = "privacy"

_tasks: dict[str, LenderTask] = {}


def _task(source: NodeSource, context: Context) -> LenderTask:
    settings, rows = source(context)
    task = _tasks.get(settings.party)
    if task is None or task.settings != settings:
        task = _tasks[settings.party] = LenderTask(settings, rows)
    return task


def _status(task: LenderTask, **extra: str) -> ConfigRecord:
    return ConfigRecord({"party": task.settings.party, **extra})


def _final(msg: Message) -> bool:
    """Whether ``msg`` is the final model's message of a run that ends there (not stopped)."""
    config = msg.content.config_records.get(CONFIG) if not msg.has_error() else None
    return msg.metadata.message_type.startswith("evaluate") and bool(
        config is not None and config.get(REPORT) and config.get(RUN_ENDS) is True)


def make_client_app(source: NodeSource, mods: tuple[Mod, ...] = ()) -> ClientApp:
    """Build the ClientApp over a source of (settings, rows) for the node in ``context``.

    ``mods`` run inside the audit log's mod (a deployed node's lifetime budget).
    """
    app = ClientApp(mods=[forget_key_mod(lambda context: source(context)[0], _final),
                          audit_log_mod(lambda context: source(context)[0]), *mods])
    for register, handler in ((app.query, _query), (app.train, _train),
                              (app.evaluate, _evaluate)):
        register()(_bound(handler, source))
    return app


Handler = Callable[[NodeSource, Message, Context], Message]


def _bound(handler: Handler, source: NodeSource) -> Callable[[Message, Context], Message]:
    def handle(msg: Message, context: Context) -> Message:
        return handler(source, msg, context)
    return handle


def _query(source: NodeSource, msg: Message, context: Context) -> Message:
    """Answer with the node's rows and its noisy summary's moments (shared preprocessing)."""
    task = _task(source, context)
    metrics: dict[str, int | float | list[int] | list[float]] = {"rows": len(task.rows.y)}
    plan = task.summary_plan()
    if plan is not None:  # the noisy summary's spend, in the node's audit log and budget
        metrics["summary_epsilon"] = plan.epsilon()
    content = RecordDict({STATUS: _status(task), METRICS: MetricRecord(metrics),
                          CONFIG: ConfigRecord({"moments": json.dumps(
                              task.moments(node_noise(context, task.settings)))})})
    return Message(content, reply_to=msg)


def _train(source: NodeSource, msg: Message, context: Context) -> Message:
    """Train one round locally from the global model (DP-SGD's accountant kept in state)."""
    task = _task(source, context)
    schema = Schema.from_json(str(msg.content[CONFIG]["schema"]))
    server_round = int(cast(int, msg.content.config_records[CONFIG]["server-round"]))
    privacy_state = _privacy_state(task, context, schema)
    state = msg.content.array_records[ARRAYS].to_torch_state_dict()
    # the global model of the round before, scored here instead of in a message of its own
    scored: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    if msg.content[CONFIG].get(EVALUATE_FIRST):
        scored, summary = task.evaluate(schema, state)
        scored = evaluation_metrics(scored)
    try:
        weights, metrics = task.train(schema, state, server_round, privacy_state,
                                      node_noise(context, task.settings),
                                      int(cast(int, msg.content[CONFIG].get(TRAIN_ROWS, 0))))
    except BudgetRefusal as refusal:
        content = RecordDict({STATUS: _status(task, refused=str(refusal))})
        if scored:
            content[METRICS] = MetricRecord(scored)
            content[EVALUATION] = ConfigRecord(summary)
        return Message(content, reply_to=msg)
    if privacy_state is not None:
        context.state.config_records[PRIVACY_STATE] = ConfigRecord(
            {"json": privacy_state.to_json()})
        task.save_privacy(privacy_state)
    content = RecordDict({ARRAYS: ArrayRecord(weights),
                          METRICS: MetricRecord({**metrics, **scored}),
                          STATUS: _status(task)})
    if summary:
        content[EVALUATION] = ConfigRecord(summary)
    return Message(content, reply_to=msg)


def _privacy_state(task: LenderTask, context: Context, schema: Schema) -> PartyPrivacy | None:
    """Return DP-SGD's state kept in the node's context across rounds (None without DP-SGD)."""
    if task.settings.privacy.mechanism is not PrivacyMechanism.dpsgd:
        return None
    saved = context.state.config_records.get(PRIVACY_STATE)
    n_train = len(task.shard(schema).y[TRAIN])
    return task.load_privacy(str(saved["json"]) if saved else None, n_train)


def _evaluate(source: NodeSource, msg: Message, context: Context) -> Message:
    """Score a global model; on the final one, the lender's report and its bundle."""
    task = _task(source, context)
    schema = Schema.from_json(str(msg.content[CONFIG]["schema"]))
    state = msg.content.array_records[ARRAYS].to_torch_state_dict()
    metrics, summary = task.evaluate(schema, state)
    content = RecordDict({METRICS: MetricRecord(metrics), EVALUATION: ConfigRecord(summary),
                          STATUS: _status(task)})
    if msg.content[CONFIG].get(REPORT):  # the final model: the lender's report
        content[REPORT] = ConfigRecord(report_record(*task.report(schema, state)))
        task.keep_bundle(schema, state, str(msg.content[CONFIG].get("model_id", "")))
    return Message(content, reply_to=msg)

