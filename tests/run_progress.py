"""Waiting for a deployed run to reach a point: as long as it makes progress, not a wall time.

A loaded machine (two cores shared by several people) slows a run down several times over; it
does not stop it writing. So a test that waits for a run to start training gives up only once
the run has written nothing (no file, no log line, at the coordinator or a node) for
:data:`STALL` seconds, or once the run ended.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

STALL = 600
"""Seconds a run may write nothing before a test calls it stuck: the vertical federation's
``federation.round_timeout``, the coordinator's own wait for one message exchange."""


def written(directories: Iterable[Path]) -> tuple[int, int]:
    """How many files there are under ``directories``, and their bytes (what went while they
    were read left out)."""
    sizes = []
    for directory in directories:
        for parent, _, names in os.walk(directory):
            for name in names:
                with contextlib.suppress(OSError):
                    sizes.append(os.stat(os.path.join(parent, name)).st_size)
    return len(sizes), sum(sizes)


def wait_while_progressing(condition: Callable[[], bool], progress: Callable[[], object],
                           stall: float = STALL, step: float = 0.3) -> bool:
    """Wait until ``condition()`` holds (True); give up (False) only once ``progress()`` has
    not changed for ``stall`` seconds."""
    seen, since = progress(), time.monotonic()
    while not condition():
        if time.monotonic() - since > stall:
            return False
        time.sleep(step)
        now = progress()
        if now != seen:
            seen, since = now, time.monotonic()
    return True
