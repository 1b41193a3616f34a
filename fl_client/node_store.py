"""Where a vertical node keeps its state between messages: on its own disk.

Flower's per-node ``context.state`` travels with every message (from the simulation's driver to
a Ray worker and back; between a SuperNode and its worker), and a node's state is large: model
weights, optimizer moments, per-epoch snapshots, the alignment's row positions. It stays in
``<state dir>/<party>/node_state.pt`` instead, written atomically after each message and read
back with ``torch.load(weights_only=True)`` (it holds tensors and plain values; loading runs no
code). Only a node without a state directory (a unit test) keeps it in ``context.state``.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from flwr.app import ConfigRecord, Context

from federation.storage import write_atomic
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState

STATE_FILE = "node_state.pt"
RECORD = "vertical"


def state_path(settings: ClientSettings) -> Path | None:
    """Return the node's state file (None without a state directory)."""
    if not settings.state_dir:
        return None
    return Path(settings.state_dir) / settings.party / STATE_FILE


def load_state(settings: ClientSettings, context: Context) -> NodeState:
    """Read the node's state (a fresh one before its first save)."""
    path = state_path(settings)
    if path is None:
        saved = context.state.config_records.get(RECORD)
        return NodeState.from_bytes(cast(bytes, saved["blob"]) if saved else None)
    return NodeState.from_bytes(path.read_bytes() if path.is_file() else None)


def save_state(settings: ClientSettings, context: Context, state: NodeState) -> None:
    """Keep the node's state until its next message."""
    path = state_path(settings)
    if path is None:
        context.state.config_records[RECORD] = ConfigRecord({"blob": state.to_bytes()})
    else:
        write_atomic(path, state.to_bytes(), mode=0o600)
