"""Test helpers for what the server routes: the values in a message, and a tampering router."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from federation.protocol import CONFIG, unpack_blobs

NPY = b"\x93NUMPY"  # what an array saved by numpy starts with (every sealed one, once opened)
# what a scoring service's explanation arrays travel as: config bytes, sealed for one party
EXPLANATION_BLOBS = ("explain.", "columns", "gradients", ".gradients", ".explained")


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
    for record in body.config_records.values():
        for name, value in record.items():
            if isinstance(value, bytes):
                opaque(value, str(name))
    return text


def explanation_blobs(body) -> dict[str, bytes]:
    """A routed message's explanation arrays sent as config bytes; a ``<p>.explained`` packing
    (a party's blobs the server forwards whole) unpacked to ``<p>.explained/<name>``."""
    out: dict[str, bytes] = {}
    for record in body.config_records.values():
        for name, value in record.items():
            if not (isinstance(value, bytes) and (str(name).startswith("explain.")
                                                  or str(name).endswith(EXPLANATION_BLOBS))):
                continue
            if str(name).endswith(".explained"):
                out |= {f"{name}/{inner}": blob for inner, blob in unpack_blobs(value).items()}
            else:
                out[str(name)] = value
    return out


def opaque(value: bytes, name: str) -> None:
    """Assert that config bytes ``name`` read as no array in the clear; an explanation's bytes
    (see :func:`explanation_blobs`) also not as plain floats: each one sealed."""
    assert NPY not in value, name
    blobs = ({f"{name}/{k}": v for k, v in unpack_blobs(value).items()}
             if name.endswith(".explained") else {name: value}) if name.endswith(
        EXPLANATION_BLOBS) or name.startswith("explain.") else {}
    for inner, blob in blobs.items():
        assert NPY not in blob, inner
        assert len(blob) >= 12 + 16 + len(NPY), inner  # a nonce, a tag and an array at least
        try:  # nor text (code names, columns) in the clear
            json.loads(blob)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{inner} reads as JSON in the clear")
        for dtype in (np.float32, np.float64):  # sealed bytes read as floats are wild
            floats = np.frombuffer(blob[: len(blob) // 8 * 8], dtype=dtype)
            assert not (np.isfinite(floats).all() and np.abs(floats).max() < 1e4), (inner,
                                                                                   dtype)


def swap(kind: Any, field: str, value: Callable[[bytes], bytes]) -> Callable[[Message], None]:
    """A server that replaces ``field`` of every ``kind`` message with ``value(old)``."""
    def tamper(message: Message) -> None:
        if message.metadata.message_type == str(kind):
            config = message.content[CONFIG]
            config[field] = value(bytes(config[field]))
    return tamper
