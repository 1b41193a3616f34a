"""The monitoring ClientApp: one thin handler over :mod:`fl_client.monitoring_task`.

Each node loads its own bundle and its own rows of the period and answers ``query.monitor``
with its stability indices and counts only (:func:`fl_client.monitoring_task.released`); a bad
bundle or bad rows are refused in the reply, naming the file or column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from credit_data.errors import CreditFLError
from federation.protocol import CONFIG, STATUS
from fl_client.monitoring_task import MonitoringInput, party_indices, released

MONITOR = "query.monitor"
"""The one message of monitoring: each party's indices and counts."""
MonitoringSource = Callable[[Context], tuple[str, MonitoringInput]]


def make_monitoring_client_app(source: MonitoringSource) -> ClientApp:
    """Build the monitoring ClientApp over a source of (party, bundle and rows) per node."""
    app = ClientApp()

    @app.query(MONITOR.split(".", 1)[1])
    def monitor(msg: Message, context: Context) -> Message:
        party, data = source(context)
        config = msg.content.config_records.get(CONFIG, ConfigRecord())
        status: dict[str, Any] = {"party": party}
        if data.epsilon is not None:  # noised under the party's DP budget, and charged
            status["epsilon"] = float(data.epsilon)
        content = RecordDict({STATUS: ConfigRecord(status)})
        try:
            indices = party_indices(data, party, min_count=int(cast(int, config["min_count"])))
        except CreditFLError as exc:
            content[CONFIG] = ConfigRecord({"refused": str(exc)})
            return Message(content, reply_to=msg)
        content[CONFIG] = ConfigRecord(cast(dict[str, Any], released(indices)))
        return Message(content, reply_to=msg)

    return app
