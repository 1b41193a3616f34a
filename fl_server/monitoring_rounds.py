"""The monitoring ServerApp: ask every node for its stability indices, once.

The server sends each node ``query.monitor`` with the minimum count per bin and collects what
comes back: per party, per column, an index, the rows counted and the merged bins' counts. A
node that refuses (a bad bundle, a missing column, no rows) stops the request, its reason kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from credit_data.errors import DataError
from federation.protocol import CONFIG, STATUS

MONITOR = "query.monitor"


@dataclass
class MonitoringOutcome:
    """What the server received: per party, ``{column: {index, rows, counts}}``."""

    parties: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    epsilon: dict[str, float | None] = field(default_factory=dict)
    error: BaseException | None = None


def parse_reply(record: ConfigRecord) -> dict[str, dict[str, Any]]:
    """Turn one party's released values back into ``{column: {index, rows, counts}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in record.items():
        kind, column = key.split(".", 1)
        out.setdefault(column, {})[kind] = value
    return out


def run_monitoring(grid: Grid, min_count: int,
                   node_ids: list[int] | None = None) -> MonitoringOutcome:
    """Send every node (or ``node_ids``: a deployment's parties) the request; return replies."""
    outcome = MonitoringOutcome()
    messages = [Message(RecordDict({CONFIG: ConfigRecord({"min_count": min_count})}),
                        dst_node_id=node, message_type=MONITOR)
                for node in (grid.get_node_ids() if node_ids is None else node_ids)]
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            raise DataError(f"a node failed to answer the monitoring request: "
                            f"{reply.error.reason}")
        status = reply.content.config_records[STATUS]
        party = str(status["party"])
        epsilon = status.get("epsilon")
        outcome.epsilon[party] = None if epsilon is None else float(cast(float, epsilon))
        record = reply.content.config_records[CONFIG]
        if "refused" in record:
            raise DataError(str(record["refused"]))
        outcome.parties[party] = parse_reply(record)
    return outcome


def make_monitoring_server_app(min_count: int, outcome: MonitoringOutcome) -> ServerApp:
    """Build the monitoring ServerApp; it fills ``outcome`` (or its ``error``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result = run_monitoring(grid, min_count)
        except BaseException as exc:  # handed to the caller, which raises it
            outcome.error = exc
            return
        outcome.parties, outcome.epsilon = result.parties, result.epsilon

    return app
