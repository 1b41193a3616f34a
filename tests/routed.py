"""Test helpers for what the server routes: the values in a message, and a tampering router."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
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


def checked_text(body, ids: set[str], label: str) -> str:
    """Assert that a routed ``body`` names no ``label``, holds none of ``ids`` in the clear and
    carries arrays only as sealed bytes; return its values as text for further checks."""
    text = json.dumps([v if isinstance(v, str | int | float | bool) else repr(type(v))
                       for v in payload_values(body)])
    assert label not in text  # no label column named, let alone its values
    assert not any(i in text for i in ids)  # no applicant's ID, in the clear
    for value in payload_values(body):
        if isinstance(value, np.ndarray):  # sealed: bytes only
            assert value.dtype == np.uint8 and value.ndim == 1
    return text


def swap(kind: Any, field: str, value: Callable[[bytes], bytes]) -> Callable[[Message], None]:
    """A server that replaces ``field`` of every ``kind`` message with ``value(old)``."""
    def tamper(message: Message) -> None:
        if message.metadata.message_type == str(kind):
            config = message.content[CONFIG]
            config[field] = value(bytes(config[field]))
    return tamper
