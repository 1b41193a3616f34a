"""The Grid the round loops talk to: Flower's Grid, plus the server's audit log and quick polls.

Every message the server sends or receives gets one line in the server's authenticated audit
log (:mod:`federation.audit_log`): its type, the node, the group (round), what it carried
(names, shapes and bytes; never values) and the epsilon figures a reply reports. Each message
sent carries the server log's head (the ``audit`` record); each reply carries the node log's,
which the server logs and takes out before the round loops see the reply.

``send_and_receive`` pushes, then polls for replies every ``poll`` seconds. Flower's deployment
Grid polls every 3 s, which would be most of a message exchange in a run whose exchanges take a
fraction of a second; both engines get the same loop here. With a ``cap`` (the deployed
server's), the interval grows to a fortieth of the time already waited, up to ``cap``
(:func:`federation.polling.next_wait`): a reply is seen at most 2.5% of its wait later, and a
long step (the alignment's blinding) costs the SuperLink four asks a second instead of forty.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from flwr.app import ConfigRecord, Error, Message, Metadata
from flwr.serverapp import Grid

from federation.audit_log import ANCHOR, AuditLog
from federation.polling import next_wait
from federation.protocol import content_summary, reported_epsilon

log = logging.getLogger(__name__)


class AuditedGrid:
    """Wrap a Flower Grid: same calls, every message logged, replies polled quickly."""

    def __init__(self, grid: Grid, log: AuditLog | None, poll: float = 0.05,
                 cap: float | None = None) -> None:
        self.grid, self.log, self.poll = grid, log, poll
        self.cap = poll if cap is None else cap
        self.sent_to: dict[str, int] = {}
        self._ask_failed = False

    def node_of(self, reply: Message) -> int:
        """Return the node a reply answers for: where its message went.

        An error reply the SuperLink makes itself (``Node Unavailable``: the node stopped or
        lost its connection) comes from the SuperLink, not from the node.
        """
        return self.sent_to.get(reply.metadata.reply_to_message_id,
                                reply.metadata.src_node_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def _record(self, event: str, msg: Message, node: int) -> None:
        node_log = (msg.content.config_records.pop(ANCHOR, None)
                    if not msg.has_error() else None)
        if self.log is None:
            return
        entry: dict[str, Any] = {"node": node, "group": msg.metadata.group_id}
        if node_log is not None:
            entry["node_log"] = dict(node_log.items())
        if msg.has_error():
            entry["error"] = str(msg.error.reason)
        else:
            entry["content"] = content_summary(msg.content)
            epsilon = reported_epsilon(msg.content)
            if epsilon:
                entry["epsilon"] = epsilon
        anchor = self.log.append(f"{event} {msg.metadata.message_type}", **entry)
        if event == "sent":
            msg.content[ANCHOR] = ConfigRecord({"seq": anchor.seq, "head": anchor.head})

    def _online(self) -> set[int] | None:
        """Return the nodes the SuperLink counts online, or ``None`` when asking it failed.

        A failed ask (a SuperLink busy or restarting) is no reason to end the run: the pull
        goes on under its own deadline, as the compat module's late-reply check does. Logged
        once per grid.
        """
        try:
            return set(self.grid.get_node_ids())
        except Exception as exc:  # any failure of the ask: not known, keep waiting
            if not self._ask_failed:
                self._ask_failed = True
                log.warning("could not ask the SuperLink which nodes are online (%s: %s); "
                            "waiting for the replies under the pull's own deadline",
                            type(exc).__name__, exc)
            return None

    def _offline(self, waiting: set[str], sent: dict[str, Message]) -> list[Message]:
        """Return an error reply for each awaited message whose node is offline.

        The SuperLink counts a node offline once it left or its heartbeat lapsed, and answers
        such a message itself; asking which nodes are online before each pull (the Grid's public
        ``get_node_ids``) ends the wait without depending on that reply. A reply the node pushed
        before it died, whose objects never come, ends the same way inside the deployed Grid's
        pull (``federation.flower_compat.deployment.quick_grid_pulls``).
        """
        online = self._online()
        if online is None:
            return []
        out = []
        for message_id in sorted(waiting):
            m = sent[message_id].metadata
            if m.dst_node_id in online:
                continue
            out.append(Message(Error(code=NODE_UNAVAILABLE_CODE, reason=(  # type: ignore[call-overload]
                f"Error: {NODE_UNAVAILABLE}: the SuperLink counts node {m.dst_node_id} offline")),
                metadata=Metadata(run_id=m.run_id, message_id=uuid.uuid4().hex,
                                  src_node_id=SUPERLINK, dst_node_id=0,
                                  reply_to_message_id=message_id, group_id=m.group_id,
                                  created_at=time.time(), ttl=0, message_type=m.message_type)))
        return out

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Push the messages and wait for their replies until ``timeout`` seconds."""
        sent = list(messages)
        for msg in sent:
            self._record("sent", msg, msg.metadata.dst_node_id)
        ids = list(self.grid.push_messages(sent))
        self.sent_to.update(zip(ids, (m.metadata.dst_node_id for m in sent), strict=True))
        waiting, by_id = set(ids), dict(zip(ids, sent, strict=True))
        pushed = time.monotonic()
        end = None if timeout is None else pushed + timeout
        replies: list[Message] = []
        while waiting:
            got = self._offline(waiting, by_id)  # before a pull that would hang on it
            waiting -= {m.metadata.reply_to_message_id for m in got}
            got += list(self.grid.pull_messages(waiting)) if waiting else []
            for msg in got:
                self._record("received", msg, self.node_of(msg))
            replies += got
            waiting -= {m.metadata.reply_to_message_id for m in got}
            if not waiting or (end is not None and time.monotonic() >= end):
                break
            time.sleep(next_wait(time.monotonic() - pushed, self.poll, self.cap))
        return replies


def node_of(grid: Grid, reply: Message) -> int:
    """Return the node ``reply`` answers for (:meth:`AuditedGrid.node_of` on one)."""
    if isinstance(grid, AuditedGrid):
        return grid.node_of(reply)
    return int(reply.metadata.src_node_id)


UNAVAILABLE_HINT = ("its node stopped or lost its connection to the SuperLink; the run cannot "
                    "go on without it")


REPLY_POLL_CAP = 0.5
"""The longest a deployed server waits between two asks for replies (its first every 0.05 s)."""
SUPERLINK = 1  # Flower's SUPERLINK_NODE_ID: the sender of the replies the SuperLink makes
NODE_UNAVAILABLE_CODE = 5  # Flower's ErrorCode.NODE_UNAVAILABLE (flwr.common.constant)
NODE_UNAVAILABLE = "Node Unavailable"
"""In the reason of the error reply Flower's SuperLink makes for a message to a node that is
offline: one whose SuperNode left, or sent no heartbeat for twice the interval it declared
(``flwr/server/superlink/linkstate/utils.py``, ``check_node_availability_for_in_message``)."""


def stopped_answering(what: str, party: str, node: int, reason: str) -> str | None:
    """Say that ``party`` stopped answering, if ``reason`` is the SuperLink's for a node gone.

    >>> stopped_answering("train.embed", "bureau", 7,
    ...                   "Error: Node Unavailable")  # doctest: +ELLIPSIS
    "train.embed: party 'bureau' (node 7) stopped answering: its node left the federation or...
    >>> stopped_answering("train.embed", "bureau", 7, "ValueError: bad") is None
    True
    """
    if NODE_UNAVAILABLE not in reason:
        return None
    return (f"{what}: party '{party}' (node {node}) stopped answering: its node left the "
            "federation or sent the SuperLink no heartbeat for twice its interval (the node "
            "was stopped or killed, or lost its connection). The run cannot go on without it: "
            f"the partner restarts the '{party}' node with the same command (it rejoins with "
            f"its registered key), then the run is started again. SuperLink: {reason}")


def explain(reason: str) -> str:
    """Add what a Flower error reason means, where it is terse.

    >>> explain("Error: Node Unavailable")  # doctest: +ELLIPSIS
    'Error: Node Unavailable (its node stopped or lost its connection ...)'
    """
    return f"{reason} ({UNAVAILABLE_HINT})" if "Unavailable" in reason else reason
