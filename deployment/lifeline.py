"""A child process that dies with the process that started it, even one killed by SIGKILL.

A node (:mod:`deployment.node`) starts Flower's SuperNode as a child. When the node is stopped
it stops the child; when it is killed (``kill -9``, the OOM killer) it cannot, and an orphaned
SuperNode would go on answering the SuperLink's heartbeats and holding the node's Runtime API
port: the coordinator would wait for a party that no longer works, and the restarted node could
not bind its port. On Linux the kernel can send a child a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); :func:`die_with_parent` sets it in the child, between ``fork`` and
``exec``. The signal is SIGTERM, so that the SuperNode leaves gracefully: it tells the SuperLink
it is going (Flower's ``DeactivateNode``), which marks the node offline at once.

The kernel sends the signal when the *thread* that started the child ends: start the child from
the main thread of a process that lives as long as it should.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal the calling process gets when its parent dies (linux/prctl.h)."""


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """Return a ``preexec_fn``: the ``subprocess.Popen`` child gets ``signum`` when we die.

    None where the system has no parent-death signal (not Linux). The child also checks that
    its parent is still the caller once the signal is set: a parent that died in between
    (before the kernel would have signalled) ends the child at once.

    >>> import subprocess, sys
    >>> child = subprocess.run([sys.executable, "-c", "print('started')"],
    ...                        preexec_fn=die_with_parent(), capture_output=True, text=True)
    >>> child.stdout.strip()
    'started'
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no dlopen after fork
    parent = os.getpid()

    def set_death_signal() -> None:  # runs in the child, after fork, before exec
        if prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(128 + int(signum))

    return set_death_signal

