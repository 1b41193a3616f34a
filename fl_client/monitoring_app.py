"""The monitoring ClientApp: one thin handler over :mod:`fl_client.monitoring_task`.

Each node loads its own bundle and its own rows of the period and answers ``query.monitor``
with its stability indices and counts only (:func:`fl_client.monitoring_task.released`); a bad
bundle or bad rows are refused in the reply, naming the file or column. On a deployment the
lender's node also answers ``query.monitor_model`` with the figures of its own scores of the
period (:func:`fl_client.model_monitoring.model_figures`, given as ``model_of``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from credit_data.consent import MONITORING
from credit_data.errors import BudgetRefusal, CreditFLError, DataError
from federation.protocol import CONFIG, STATUS
from fl_client.audit_mod import audit_log_mod
from fl_client.monitoring_task import MonitoringInput, party_indices, released
from fl_client.settings import ClientSettings

MONITOR = "query.monitor"
"""The one message of monitoring: each party's indices and counts."""
MONITOR_MODEL = "query.monitor_model"
"""A deployed lender's figures of the period's scores (its model section)."""
MonitoringSource = Callable[[Context], tuple[str, MonitoringInput]]
ModelSource = Callable[[Context], tuple[str, dict[str, Any]]]


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

    @app.query(MONITOR.split(".", 1)[1])
    def monitor(msg: Message, context: Context) -> Message:
        config = msg.content.config_records.get(CONFIG, ConfigRecord())
        status: dict[str, Any] = {"party": str(context.node_config.get("party", "a node"))}
        content = RecordDict({STATUS: ConfigRecord(status)})
        try:
            party, data = source(context)
            status["party"] = party
            indices = party_indices(data, party, min_count=int(cast(int, config["min_count"])))
        except (CreditFLError, BudgetRefusal) as exc:  # named in the reply, nothing else
            content[STATUS] = ConfigRecord(status)
            content[CONFIG] = ConfigRecord({"refused": str(exc)})
            return Message(content, reply_to=msg)
        if data.epsilon is not None:  # noised under the party's DP budget, and charged
            status["epsilon"] = float(data.epsilon)
        content[STATUS] = ConfigRecord(status)
        content[CONFIG] = ConfigRecord(cast(dict[str, Any], released(indices)))
        return Message(content, reply_to=msg)

    @app.query(MONITOR_MODEL.split(".", 1)[1])
    def monitor_model(msg: Message, context: Context) -> Message:
        party = str(context.node_config.get("party", "a node"))
        try:
            if model_of is None:
                raise DataError(f"{party}: this node computes no model section")
            party, figures = model_of(context)
            record = ConfigRecord({"info": json.dumps(figures)})
        except (CreditFLError, BudgetRefusal) as exc:  # named in the reply, nothing else
            record = ConfigRecord({"refused": str(exc)})
        return Message(RecordDict({STATUS: ConfigRecord({"party": party}), CONFIG: record}),
                       reply_to=msg)

    return app
