"""The monitoring ClientApp: one thin handler over :mod:`fl_client.monitoring_task`.

Each node loads its own bundle and its own rows of the period and answers ``query.monitor``
with its stability indices and counts only (:func:`fl_client.monitoring_task.released`); a bad
bundle or bad rows are refused in the reply, naming the file or column. On a deployment the
lender's node also answers ``query.monitor_model`` with the figures of its own scores of the
period (:func:`fl_client.model_monitoring.model_figures`, given as ``model_of``). Each handler
is a function of this module (:data:`HANDLERS`); a message whose config differs from its
declaration (:data:`federation.protocol.MONITORING_FIELDS`) is refused, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from credit_data.consent import MONITORING
from credit_data.errors import BudgetRefusal, CreditFLError, DataError
from federation.protocol import CONFIG, MONITORING_FIELDS, STATUS, MonitoringMessage
from fl_client.audit_log_mod import audit_log_mod
from fl_client.monitoring_task import MonitoringInput, party_indices, released
from fl_client.settings import ClientSettings

MONITOR = str(MonitoringMessage.INDICES)
"""The one message of monitoring: each party's indices and counts."""
MONITOR_MODEL = str(MonitoringMessage.MODEL)
"""A deployed lender's figures of the period's scores (its model section)."""
MonitoringSource = Callable[[Context], tuple[str, MonitoringInput]]
ModelSource = Callable[[Context], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Sources:
    """Where a node's handlers read: its party and rows, and a deployed lender's figures."""

    indices: MonitoringSource
    model: ModelSource | None = None


Handler = Callable[[Sources, Message, Context], Message]


def _refusal(msg: Message, party: str, reason: str) -> Message:
    return Message(RecordDict({STATUS: ConfigRecord({"party": party}),
                               CONFIG: ConfigRecord({"refused": reason})}), reply_to=msg)


def _monitor(sources: Sources, msg: Message, context: Context) -> Message:
    config = msg.content.config_records.get(CONFIG, ConfigRecord())
    status: dict[str, Any] = {"party": str(context.node_config.get("party", "a node"))}
    try:
        party, data = sources.indices(context)
        status["party"] = party
        indices = party_indices(data, party, min_count=int(cast(int, config["min_count"])))
    except (CreditFLError, BudgetRefusal) as exc:  # named in the reply, nothing else
        return _refusal(msg, str(status["party"]), str(exc))
    if data.epsilon is not None:  # noised under the party's DP budget, and charged
        status["epsilon"] = float(data.epsilon)
    return Message(RecordDict({STATUS: ConfigRecord(status), CONFIG: ConfigRecord(
        cast(dict[str, Any], released(indices)))}), reply_to=msg)


def _monitor_model(sources: Sources, msg: Message, context: Context) -> Message:
    party = str(context.node_config.get("party", "a node"))
    try:
        if sources.model is None:
            raise DataError(f"{party}: this node computes no model section")
        party, figures = sources.model(context)
        record = ConfigRecord({"info": json.dumps(figures)})
    except (CreditFLError, BudgetRefusal) as exc:  # named in the reply, nothing else
        return _refusal(msg, party, str(exc))
    return Message(RecordDict({STATUS: ConfigRecord({"party": party}), CONFIG: record}),
                   reply_to=msg)


HANDLERS: dict[MonitoringMessage, Handler] = {
    MonitoringMessage.INDICES: _monitor,
    MonitoringMessage.MODEL: _monitor_model,
}
"""Each message type's handler: ``handler(sources, msg, context)``."""


def make_monitoring_client_app(source: MonitoringSource, mods: tuple[Mod, ...] = (),
                               settings_of: Callable[[Context], ClientSettings] | None = None,
                               model_of: ModelSource | None = None) -> ClientApp:
    """Build the monitoring ClientApp over a source of (party, bundle and rows) per node.

    ``settings_of``: a deployed node's settings; with them every message, refusals included,
    is in the node's audit log with the purpose ``monitoring``. ``mods`` run inside that log.
    ``model_of``: a deployed lender's (party, model figures); without it ``query.monitor_model``
    is refused.
    """
    logged = () if settings_of is None else (audit_log_mod(settings_of, MONITORING),)
    app = ClientApp(mods=[*logged, *mods])
    for message, handler in HANDLERS.items():
        app.query(message.action)(_checked(handler, Sources(source, model_of)))
    return app


def _checked(handler: Handler, sources: Sources) -> Callable[[Message, Context], Message]:
    """Run ``handler`` once the message's config is the one declared; else refuse, naming it."""
    def handle(msg: Message, context: Context) -> Message:
        kind = msg.metadata.message_type
        problem = MONITORING_FIELDS[MonitoringMessage(kind)].problem(
            kind, msg.content.config_records.get(CONFIG, ConfigRecord()))
        if problem is not None:  # a field missing or one this node does not know: nothing run
            return _refusal(msg, str(context.node_config.get("party", "a node")), problem)
        return handler(sources, msg, context)
    return handle
