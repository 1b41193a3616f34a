"""Which training replies may be aggregated, and why the others are left out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message

from federation.protocol import ARRAYS, STATUS
from fl_server.audited_grid import NODE_UNAVAILABLE, explain


@dataclass(frozen=True)
class Exclusion:
    """A party left out of one round, and why."""

    round: int
    party: str
    reason: str
    refused: bool = False


def client_message(reason: str) -> str:
    """Extract the client's own error message from the engine's traceback around it.

    >>> client_message("Traceback ... Exception X occurred. Message: lender-1: boom'>")
    'lender-1: boom'
    """
    marker = "Message: "
    if marker in reason:
        reason = reason.rsplit(marker, 1)[1]
    return reason.strip().strip("'>\"").splitlines()[0] if reason.strip() else reason


def screen_replies(server_round: int, sent: Iterable[Message], replies: Iterable[Message],
                   current: ArrayRecord, node_party: dict[int, str],
                   node_of: Callable[[Message], int] | None = None
                   ) -> tuple[list[Message], list[Exclusion]]:
    """Keep replies with finite arrays of the right names and shapes; explain the rest.

    ``node_of`` names the node a reply answers for (an error the SuperLink made for an
    unavailable node comes from the SuperLink).
    """
    expected = {k: v.numpy().shape for k, v in current.items()}
    usable: list[Message] = []
    excluded: list[Exclusion] = []
    answered: set[int] = set()
    for reply in replies:
        node = node_of(reply) if node_of is not None else reply.metadata.src_node_id
        answered.add(node)
        party = node_party.get(node, f"node {node}")
        if reply.has_error():
            reason = explain(client_message(reply.error.reason or ""))
            what = "stopped answering" if NODE_UNAVAILABLE in reason else "client error"
            excluded.append(Exclusion(server_round, party, f"{what}: {reason}"))
            continue
        status = reply.content.config_records.get(STATUS)
        if status is not None and "refused" in status:
            excluded.append(Exclusion(server_round, party, str(status["refused"]), refused=True))
            continue
        arrays = reply.content.array_records.get(ARRAYS)
        if arrays is None:
            excluded.append(Exclusion(server_round, party, "reply holds no model arrays"))
            continue
        shapes = {k: v.numpy().shape for k, v in arrays.items()}
        if shapes != expected:
            wrong = sorted(k for k in set(shapes) | set(expected)
                           if shapes.get(k) != expected.get(k))
            excluded.append(Exclusion(server_round, party,
                                      f"arrays of the wrong names or shapes: {wrong[:3]}"))
            continue
        if not all(np.isfinite(v.numpy()).all() for v in arrays.values()):
            excluded.append(Exclusion(server_round, party, "non-finite values (NaN or inf)"))
            continue
        usable.append(reply)
    usable.sort(key=lambda r: node_party.get(r.metadata.src_node_id, ""))  # reproducible sums
    for message in sent:
        if message.metadata.dst_node_id not in answered:
            party = node_party.get(message.metadata.dst_node_id, "unknown")
            excluded.append(Exclusion(server_round, party,
                                      "no reply within federation.round_timeout"))
    return usable, excluded
