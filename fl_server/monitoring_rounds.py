"""The monitoring ServerApp: ask every node for its stability indices, once.

The server sends each node ``query.monitor`` with the minimum count per bin and collects what
comes back: per party, per column, an index, the rows counted and the merged bins' counts. A
node that refuses (a bad bundle, a missing column, no rows) stops the request, its reason kept.

On a deployment the model's section follows (:func:`run_model_monitoring`): the period is
scored through the parties as any batch scoring (the scores stay at the lender), then the
lender's node is asked ``query.monitor_model`` and answers with its figures
(:mod:`fl_client.model_monitoring`) or refuses; a refusal leaves the section out, named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from credit_data.errors import DataError, FederationError
from federation.protocol import CONFIG, MONITORING_FIELDS, STATUS, MonitoringMessage
from fl_server.scoring_rounds import ScoringServerSettings, run_scoring

MONITOR = str(MonitoringMessage.INDICES)
MONITOR_MODEL = str(MonitoringMessage.MODEL)
"""The lender's figures of the period's scores (a deployment's model section)."""


def _message(kind: MonitoringMessage, config: dict[str, Any], node: int) -> Message:
    """Build a ``kind`` message for ``node``, refusing one whose config its nodes refuse."""
    problem = MONITORING_FIELDS[kind].problem(str(kind), config)
    if problem is not None:
        raise FederationError(f"the server built a message its nodes refuse: {problem}")
    return Message(RecordDict({CONFIG: ConfigRecord(config)}), dst_node_id=node,
                   message_type=str(kind))


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
    messages = [_message(MonitoringMessage.INDICES, {"min_count": min_count}, node)
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


@dataclass
class ModelOutcome:
    """The model's section as the lender's node sent it, or why it is left out."""

    figures: dict[str, Any] | None = None
    withheld: str | None = None
    applicants: int | None = None  # the lender's rows scored (a count scoring sends anyway)


def run_model_monitoring(grid: Grid, scoring: ScoringServerSettings,
                         lender_node: int) -> ModelOutcome:
    """Score the period through the parties, then ask the lender's node for its figures.

    A node's refusal (its own flags, its budget) leaves the section out with its reason; any
    other failure stops the request.
    """
    out = ModelOutcome()
    try:
        scored = run_scoring(grid, scoring)
        out.applicants = scored.applicants
        message = _message(MonitoringMessage.MODEL, {}, lender_node)
        replies = list(grid.send_and_receive([message], timeout=scoring.round_timeout))
        if not replies:
            raise FederationError(f"{MONITOR_MODEL}: no reply from the lender within "
                                  f"{scoring.round_timeout:g} s")
        reply = replies[0]
        if reply.has_error():
            raise FederationError(f"{MONITOR_MODEL}: the lender failed: {reply.error.reason}")
        record = reply.content.config_records[CONFIG]
        if "refused" in record:
            raise FederationError(f"{MONITOR_MODEL}: lender refused: {record['refused']!s}")
        out.figures = json.loads(str(record["info"]))
    except FederationError as exc:
        if " refused: " not in str(exc):
            raise
        out.withheld = str(exc)
    return out


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
