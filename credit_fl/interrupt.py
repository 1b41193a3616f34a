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
import subprocess
import sys
import threading
from types import FrameType

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
        logging.shutdown()
        freeze_children()
    finally:
        os._exit(128 + signum)


def freeze_children(after: float = 0.2) -> None:
    """Freeze every process this one started, and have them killed once this one is gone.

    This process is Ray's driver: Ray's C++ core worker in it ends the process with code 1 as
    soon as it sees Ray's raylet or GCS die, which raced with the exit code of a signal when
    the children were stopped first (about one run in four). Frozen (SIGSTOP), they close no
    connection; a detached shell kills them ``after`` seconds, by which time this process has
    exited with its own code.
    """
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.suspend()
        except psutil.NoSuchProcess:
            pass
    if children:
        pids = " ".join(str(c.pid) for c in children)
        subprocess.Popen(["/bin/sh", "-c", f"sleep {after}; kill -9 {pids} 2>/dev/null"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
