"""A Flower client mod that writes the node's tamper-evident audit log.

For every message the node answers it appends one line to ``<state_dir>/<party>/audit.jsonl``
on the node's own disk (:mod:`federation.audit_log`): the message type and group, what left the
node (array names, shapes, dtypes and serialized bytes; never values), the epsilon figures the
reply reports, a refusal if the node refused, and ``deployed`` on a deployed node's lines. The
server's log head that came with the message is logged too, and the node's own new head goes
back with the reply (the ``audit`` record; :mod:`federation.audit_log` explains the anchors).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from federation.audit_log import ANCHOR, AuditLog
from federation.lifetime_budget import DEPLOYED
from federation.protocol import CONFIG, STATUS, content_summary, reported_epsilon
from fl_client.list_lookup import holder_refusal
from fl_client.settings import ClientSettings

AUDIT_NOTE = "audit-note"
"""A record a handler may leave in ``context.state`` for this node's own audit line: the mod
takes it out and logs it under ``node``. It never leaves the node (for example a digest of the
lender's label flips, which shows they stay the same across messages)."""


def audit_log_path(settings: ClientSettings) -> Path | None:
    """Where a node keeps its audit log (None when it has no state directory)."""
    if not settings.state_dir:
        return None
    return Path(settings.state_dir) / settings.party / "audit.jsonl"


def _sent(reply: Message) -> dict[str, Any]:
    return {} if reply.has_error() else content_summary(reply.content)


def audit_log_mod(settings_of: Callable[[Context], ClientSettings],
                  purpose: str = "training",
                  purposes: dict[str, str] | None = None) -> Mod:
    """Return a mod that logs each answered message of the node ``settings_of(context)``.

    ``purpose`` (``training`` or ``scoring``) is on every line; ``purposes`` names another for
    some message types (``explanation`` for the explanation messages of scoring), and a
    handler's note (:data:`AUDIT_NOTE`) may name one for its own reply (``purpose``: a scoring
    message that carried a scorecard's reason codes is an ``explanation``).
    """

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        server = msg.content.config_records.pop(ANCHOR, None) if not msg.has_error() else None
        reply = call_next(msg, context)
        note = context.state.config_records.pop(AUDIT_NOTE, None)
        settings = settings_of(context)
        path = audit_log_path(settings)
        if path is None:
            return reply
        said = dict(note.items()) if note is not None else {}
        entry: dict[str, Any] = {"party": settings.party,
                                 "purpose": str(said.pop("purpose", None) or (
                                     purposes or {}).get(msg.metadata.message_type, purpose)),
                                 "group": msg.metadata.group_id, "sent": _sent(reply)}
        if said:
            entry["node"] = said
        if settings.opt_in is not None:  # a deployed node's line, with or without its note
            entry[DEPLOYED] = True
        if server is not None:
            entry["server_log"] = {k: server[k] for k in ("seq", "head") if k in server}
        if reply.has_error():
            entry["error"] = str(reply.error.reason)
        else:
            entry["epsilon"] = reported_epsilon(reply.content)
            refused = [str(r["refused"]) for r in reply.content.config_records.values()
                       if "refused" in r]
            if refused:
                entry["refused"] = refused[0]
        anchor = AuditLog(path).append(msg.metadata.message_type, **entry)
        if not reply.has_error():
            reply.content[ANCHOR] = ConfigRecord({"party": settings.party, **anchor.to_dict()})
        return reply

    return mod


def role_guard_mod(settings_of: Callable[[Context], ClientSettings]) -> Mod:
    """Return a mod that refuses a message of the node's other role, before any handler runs.

    A blacklist holder answers its hello and the lookup only; a party never answers a lookup
    (:func:`fl_client.list_lookup.holder_refusal`). The refusal goes back in the reply (and
    into the audit log, which this mod sits inside). A node's role is read once per run (a
    deployed node's settings cost a check of its lifetime ledger).
    """
    roles: dict[tuple[int, int], ClientSettings] = {}

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if not msg.has_error():
            key = (context.run_id, context.node_id)
            settings = roles.get(key) or roles.setdefault(key, settings_of(context))
            reason = holder_refusal(settings, msg.metadata.message_type)
            if reason is not None:
                return Message(RecordDict({STATUS: ConfigRecord({"party": settings.party}),
                                           CONFIG: ConfigRecord({"refused": reason})}),
                               reply_to=msg)
        return call_next(msg, context)

    return mod
