"""Flower 1.41, quiet and quick: no telemetry or update check; shorter waits in deployment.

``QUIET`` is the environment every Flower process of this project gets: no telemetry events,
no update check against the package index.

Flower waits between polls with fixed sleeps and backoffs tuned for long rounds: a SuperNode
with no message sleeps 3 s, and a component that pulls a message whose parts are not stored yet
retries after 1 s, then 2 s, 4 s. Here one message exchange of a vertical epoch takes a fraction
of a second, so those waits would be most of the run. :func:`quick_object_pulls` retries every
20 ms (doubling up to 0.2 s) in the module given; :mod:`fl_client.supernode` also caps the
SuperNode's idle sleep. Both only shorten waits; what is sent, to whom, and how it is
authenticated stay Flower's.
"""

from __future__ import annotations

import functools
import queue
import threading
from types import ModuleType
from typing import Any

QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
INITIAL_BACKOFF = 0.02
BACKOFF_CAP = 0.2


def quick_object_pulls(module: ModuleType) -> None:
    """Make ``module.pull_objects`` (Flower's object puller, as imported there) retry quickly."""
    from flwr.supercore.inflatable import inflatable_utils

    current = getattr(module, "pull_objects", None)
    if current is None:
        raise RuntimeError(f"{module.__name__} has no pull_objects: Flower changed; remove "
                           "this tuning")
    if isinstance(current, functools.partial):
        return
    module.pull_objects = functools.partial(  # type: ignore[attr-defined]
        inflatable_utils.pull_objects, initial_backoff=INITIAL_BACKOFF,
        backoff_cap=BACKOFF_CAP)


SIMULATION_POLL = 0.01
"""Seconds between the simulation engine's looks for new messages (Flower waits 0.1 s)."""


STOP_CHECK = 0.05
"""Seconds the engine's threads wait on an empty queue before they look whether the run ended."""


class _QuickQueue(queue.Queue):  # type: ignore[type-arg]
    """Flower's queue, with waits on an empty queue capped at :data:`STOP_CHECK`."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return super().get(block, None if timeout is None else min(timeout, STOP_CHECK))


def quick_simulation_polls() -> None:
    """Make Flower's simulation engine look for new messages every 10 ms instead of 100 ms.

    The engine's extractor thread (``vce_api.add_messages_to_queue``) sweeps the in-memory
    state for each node's next message, then waits 0.1 s. A vertical epoch makes four message
    rounds, so that wait alone was about 0.2 s of every epoch. The sweep below is Flower's,
    with the shorter wait; each look is a lookup in the engine's own memory.

    The engine's other threads wait on their queues 1 s at a time, so a run went on for up to
    a second after its ServerApp had finished; they now look every 50 ms.
    """
    from flwr.server.superlink.fleet.vce import vce_api

    if getattr(vce_api.add_messages_to_queue, "quick", False):
        return
    if vce_api.Queue is not queue.Queue or vce_api.add_messages_to_queue.__code__.co_varnames[
            :4] != ("state", "queue", "nodes_mapping", "f_stop"):
        raise RuntimeError("flwr's vce_api (its queues or add_messages_to_queue) changed; "
                           "remove this tuning")

    def add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any,  # Flower's names
                              f_stop: threading.Event) -> None:
        while not f_stop.is_set():
            for node_id in nodes_mapping.keys():
                for msg in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(msg)
            f_stop.wait(SIMULATION_POLL)

    add_messages_to_queue.quick = True  # type: ignore[attr-defined]
    vce_api.Queue = _QuickQueue  # type: ignore[misc]
    vce_api.add_messages_to_queue = add_messages_to_queue
