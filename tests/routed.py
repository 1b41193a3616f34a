"""Test helpers for what the server routes: the values in a message, and a tampering router."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from federation.protocol import CONFIG


def payload_values(body) -> list[object]:
    """Every value a routed message's records hold (arrays as numpy, lists flattened)."""
    out: list[object] = []
    for record in body.values():
        if isinstance(record, ArrayRecord):
            out += [a.numpy() for a in record.values()]
        elif isinstance(record, ConfigRecord | MetricRecord):
            for v in record.values():
                out += v if isinstance(v, list) else [v]
    return out


def swap(kind: Any, field: str, value: Callable[[bytes], bytes]) -> Callable[[Message], None]:
    """A server that replaces ``field`` of every ``kind`` message with ``value(old)``."""
    def tamper(message: Message) -> None:
        if message.metadata.message_type == str(kind):
            config = message.content[CONFIG]
            config[field] = value(bytes(config[field]))
    return tamper
