"""The simulation engine's internals: Flower's message polls, Ray's one-machine head.

Both only shorten waits or skip idle helper processes; the messages, the order in which clients
run and the results stay Flower's and Ray's. ``CREDIT_FL_PLAIN_FLOWER=1`` runs without them.
"""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from federation.flower_compat import SIMULATION_POLL, changed

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
        raise changed("vce_api (its Queue or add_messages_to_queue)")

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


@contextmanager
def one_machine_head(verbose: bool) -> Iterator[None]:
    """Let ``ray.init`` start the head of a one-machine cluster without its idle helpers.

    ``ray.init`` always starts the autoscaler's monitor, which a cluster of one machine with
    fixed resources never uses, and a log monitor, which only forwards the workers' output to
    this process (``log_to_driver``, on when ``verbose``). Each is a Python process of about
    0.6 s of CPU at start, on a 2-core machine that is starting the clients' workers at the
    same time; and ``ray.shutdown`` stops the monitor last, after the GCS it reports to, so it
    waits out its 1 s grace period every run. ``ray.init`` has no argument for either, so its
    head-node parameters (``RayParams``: ``no_monitor``, ``include_log_monitor``, the options
    of ``ray start``) are set while it starts.
    """
    from ray._private import parameter

    original = parameter.RayParams.__init__
    known = inspect.signature(original).parameters
    if not {"no_monitor", "include_log_monitor"} <= known.keys():
        raise changed("RayParams (no_monitor, include_log_monitor)", "ray")

    def head_params(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("no_monitor", True)
        kwargs.setdefault("include_log_monitor", verbose)
        original(self, *args, **kwargs)

    parameter.RayParams.__init__ = head_params  # type: ignore[method-assign]
    try:
        yield
    finally:
        parameter.RayParams.__init__ = original  # type: ignore[method-assign]
