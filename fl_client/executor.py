"""A long-lived party worker that runs the node's ClientApp for every message, in one process.

Flower's SuperNode, by default, starts a fresh ``flwr-clientapp`` process for each message: it
installs the app bundle, imports the app (and torch) and loads the party's data again, about 2 s
per message on two cores before any work is done. Started with ``--isolation process``, the
SuperNode leaves running the ClientApp to an outside process; this module is that process. It
keeps the party's app, data and torch warm, asks the SuperNode's Runtime API for the next task
every ``poll`` seconds, and runs it in-process with the same calls ``flwr-clientapp`` makes.

It runs only the ClientApp this node installed: a run whose app bundle is not ``expected_fab_id``
gets an error reply, so a coordinator cannot make the node execute code of its choosing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flwr.app import Message
from flwr.clientapp import ClientApp

from federation.flower_compat.deployment import RuntimeTask, TaskOffers, error_reply

log = logging.getLogger("credit_fl")


def run_task(address: str, token: str, app: ClientApp, expected_fab_id: str | None,
             redact: Callable[[str], str] = str) -> None:
    """Pull one task's message and context, run ``app`` on it and push the reply.

    ``redact`` rewrites an error before it leaves (the node's own paths: see
    :func:`deployment.node.redactor`); the node's log keeps it whole.
    """
    message: Message | None = None
    reply: Message | None = None
    error: str | None = "the party worker failed before running the task"
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    with RuntimeTask(address, token) as task:
        try:
            message, context, fab_id = task.pull()
            timings["pull"] = time.perf_counter() - t0
            if expected_fab_id is not None and fab_id != expected_fab_id:
                raise PermissionError(f"this node runs only the app '{expected_fab_id}'; the "
                                      f"run asked for '{fab_id}'")
            reply = app(message=message, context=context)
            timings["run"] = time.perf_counter() - t0 - timings["pull"]
            error = None
        except Exception as exc:  # the reply carries the error, as flwr-clientapp's does
            log.exception("the ClientApp raised")
            error = redact(f"{type(exc).__name__}: {exc}")
            reply = error_reply(message, error) if message is not None else None
        task.finish(reply, error)
    log.info("task %s: %s, %.2f s in all", message.metadata.message_type if message else "?",
             ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()), time.perf_counter() - t0)


def serve(address: str, app: ClientApp, poll: float = 0.05,
          expected_fab_id: str | None = None,
          stop: threading.Event | None = None,
          alive: Callable[[], bool] = lambda: True, secret: bytes | None = None,
          redact: Callable[[str], str] = str) -> None:
    """Run the node's tasks until ``stop`` is set or ``alive()`` turns false.

    ``secret``: the SuperNode's Runtime API secret, which signs each request for a task;
    ``redact``: see :func:`run_task`.
    """
    stop = stop or threading.Event()
    # one try per poll: the loop retries, and notices when the SuperNode is gone
    offers = TaskOffers(address, secret)
    try:
        while not stop.is_set() and alive():
            try:
                token = offers.next_token()
            except Exception as exc:  # the SuperNode is starting or stopping
                # (a refused signature is a 401, which Flower's client answers by sending
                # SIGINT to this process: the node stops)
                log.debug("Runtime API not reachable: %s", exc)
                time.sleep(max(poll, 0.5))
                continue
            if token is not None:
                run_task(address, token, app, expected_fab_id, redact)
                continue
            time.sleep(poll)
    finally:
        offers.close()
