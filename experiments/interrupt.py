"""Ctrl-C and SIGTERM stop a run at once: one line, exit code 130 or 143, nothing left running.

Flower's simulation runs the ServerApp in a thread of its own and Ray runs the clients in other
processes, so Python's default ``KeyboardInterrupt`` reaches a thread that is only waiting: the
run went on to its end, or hung until a second Ctrl-C. Here the signal ends the run instead:
every process the run started (Ray's head, its workers) is stopped, and the process exits with
128 + the signal's number. Outputs are written atomically, so a stopped run leaves no
half-written file; what it had written (``run.log``, the nodes' audit logs) stays.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

GRACE = 2.0
"""Seconds the run's processes get to stop before they are killed."""
_installed = False


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM stop this run (call in the main thread, before the run starts)."""
    global _installed
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    _installed = True


def reinstall() -> None:
    """Take the signals back after a library set its own (``ray.init`` sets SIGTERM's)."""
    if _installed and threading.current_thread() is threading.main_thread():
        stop_on_signals()


def _stop(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    try:
        sys.stderr.write(f"\nstopped by {name}: the run ends here; outputs written so far stay "
                         "(see run.log)\n")
        sys.stderr.flush()
        sys.stdout.flush()
        logging.getLogger("credit_fl").warning("stopped by %s", name)
        # the engine's threads report their dying workers: the line above stays the last one
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        stop_children()
        logging.shutdown()
    finally:
        os._exit(128 + signum)


def stop_children(grace: float = GRACE) -> None:
    """Terminate every process this one started (recursively), then kill what is left."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
