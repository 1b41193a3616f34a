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


BOUNDARY_FILE = "node_state.boundary.pt"


def kept_copy(settings: ClientSettings) -> NodeState | None:
    """Return the node's copy of its state at its last epoch's start (None where it kept none)."""
    path = state_path(settings)
    boundary = path.with_name(BOUNDARY_FILE) if path is not None else None
    if boundary is None or not boundary.is_file():
        return None
    return NodeState.from_bytes(boundary.read_bytes())


def at_epoch_start(settings: ClientSettings, state: NodeState, epoch: int,
                   chunk: int) -> NodeState:
    """Check an exchange's place in the run; keep or restore the state at each epoch's start.

    * Any exchange at or before the last one this node made is refused, but for the start of
      an epoch: training on the same records again would spend privacy the node never counts.
    * At the start of an epoch the node keeps a copy of its state. A run stopped in the middle
      of an epoch resumes from the server's checkpoint at the end of the epoch before, so a node
      that had gone further returns to its copy of that point, with what it did since carried
      over (:meth:`NodeState.carry_spend_from`). A node without a state directory keeps no copy
      and cannot go back.
    """
    start = chunk in (0, -1)
    behind = bool(state.last) and (epoch, chunk) <= (state.last[0], state.last[1])
    if not start:
        if behind:
            raise RuntimeError(f"{settings.party}: epoch {epoch}, chunk {chunk} was already "
                               f"exchanged at this node (it is at epoch {state.last[0]}, chunk "
                               f"{state.last[1]}); training on the same records again is "
                               "refused")
        return state
    path = state_path(settings)
    going_back = bool(state.last) and state.last[0] >= epoch
    if not going_back:  # the normal course: keep the copy
        if path is not None:
            write_atomic(path.with_name(BOUNDARY_FILE), state.to_bytes(), mode=0o600)
        return state
    boundary = path.with_name(BOUNDARY_FILE) if path is not None else None
    found = boundary is not None and boundary.is_file()
    kept = NodeState.from_bytes(boundary.read_bytes() if found else None)  # type: ignore[union-attr]
    if not found or (kept.last[0] if kept.last else 0) != epoch - 1:
        raise RuntimeError(f"{settings.party}: this node's state is past epoch {epoch - 1} "
                           f"(it last exchanged epoch {state.last[0]}, chunk {state.last[1]}) "
                           "and it kept no copy of that point; the run cannot resume here")
    kept.carry_spend_from(state)
    assert path is not None
    write_atomic(path, kept.to_bytes(), mode=0o600)
    return kept
