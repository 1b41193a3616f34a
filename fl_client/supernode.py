"""``flower-supernode`` with a shorter idle poll: ``python -m fl_client.supernode <its flags>``.

Flower 1.41's SuperNode asks the SuperLink for a message and, when there is none, sleeps a fixed
3 s (``flwr.supernode.start_client_internal``); once it has handed a message to the ClientApp
it checks its own state for the reply every 0.5 s. In a run whose rounds follow one another in
well under a second those sleeps are most of each message exchange. This entry point caps the
idle sleep at ``deployment.node --poll-interval`` seconds (default 0.2) and the wait for the reply
at 20 ms, and otherwise runs Flower's own ``flower-supernode`` unchanged. Each idle poll is one
small HTTPS request to the SuperLink, 5 per second per idle node at the default; a reply check
is a look into the node's own in-memory state.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

POLL_ENV = "CREDIT_FL_SUPERNODE_POLL"
"""Set by ``deployment.node --poll-interval`` for the SuperNode it starts (this project's own
namespace, not Flower's)."""
DEFAULT_POLL = 0.2
IDLE_SLEEP = 3.0  # the loop's sleep when the SuperLink had no message
REPLY_POLL = 0.02  # waits shorter than the idle sleep: the reply and its objects, local checks


class _CappedSleep:
    """Stands in for the ``time`` module inside Flower's SuperNode loop only."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap if seconds >= IDLE_SLEEP else REPLY_POLL))


def poll_interval() -> float:
    """Return the idle poll from the environment, checked."""
    raw = os.environ.get(POLL_ENV, str(DEFAULT_POLL))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.01 <= value <= 3.0:
        raise SystemExit(f"error: {POLL_ENV}={raw!r}: expected seconds between 0.01 and 3")
    return value


def main() -> None:
    """Patch the idle sleep of Flower's SuperNode loop, then run ``flower-supernode``."""
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from federation.flower_tuning import quick_object_pulls

    if getattr(loop, "time", None) is not time:
        raise SystemExit("error: this Flower version's SuperNode loop changed; run "
                         "flower-supernode directly")
    loop.time = _CappedSleep(poll_interval())  # type: ignore[assignment]
    quick_object_pulls(loop)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
