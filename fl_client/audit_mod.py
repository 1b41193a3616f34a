"""A Flower client mod that writes the node's tamper-evident audit log.

For every message the node answers it appends one line to ``<state_dir>/<party>/audit.jsonl``
on the node's own disk (:mod:`federation.audit_log`): the message type and group, what left the
node (array names, shapes, dtypes and serialized bytes; never values), the epsilon figures the
reply reports, and a refusal if the node refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from federation.audit_log import AuditLog
from fl_client.settings import ClientSettings


def audit_log_path(settings: ClientSettings) -> Path | None:
    """Where a node keeps its audit log (None when it has no state directory)."""
    if not settings.state_dir:
        return None
    return Path(settings.state_dir) / settings.party / "audit.jsonl"


def _sent(reply: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if reply.has_error():
        return out
    for record in reply.content.array_records.values():
        for name, array in record.items():
            out[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                         "bytes": len(array.data)}
    for config in reply.content.config_records.values():
        for name, value in config.items():
            if isinstance(value, bytes):  # blinded IDs, keys, ciphertext (alignment)
                out[name] = {"bytes": len(value)}
    return out


def audit_log_mod(settings_of: Callable[[Context], ClientSettings]) -> Mod:
    """Return a mod that logs each answered message of the node ``settings_of(context)``."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        settings = settings_of(context)
        path = audit_log_path(settings)
        if path is None:
            return reply
        entry: dict[str, Any] = {"party": settings.party, "group": msg.metadata.group_id,
                                 "sent": _sent(reply)}
        if reply.has_error():
            entry["error"] = str(reply.error.reason)
        else:
            entry["epsilon"] = {k: float(v) for record in reply.content.metric_records.values()
                                for k, v in record.items()
                                if "epsilon" in k and isinstance(v, int | float)}
            refused = [str(r["refused"]) for r in reply.content.config_records.values()
                       if "refused" in r]
            if refused:
                entry["refused"] = refused[0]
        AuditLog(path).append(msg.metadata.message_type, **entry)
        return reply

    return mod
