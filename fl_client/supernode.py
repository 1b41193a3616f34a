"""``flower-supernode`` with a shorter idle poll: ``python -m fl_client.supernode <its flags>``.

Flower's SuperNode sleeps 3 s when the SuperLink has no message for it; this entry point caps
that sleep at ``deployment.node --poll-interval`` seconds (default 0.2) and otherwise runs
Flower's own ``flower-supernode`` (:func:`federation.flower_compat.deployment.run_supernode`).
Each idle poll is one small HTTPS request to the SuperLink, 5 per second per idle node at the
default.
"""

from __future__ import annotations

import os
import sys

POLL_ENV = "CREDIT_FL_SUPERNODE_POLL"
"""Set by ``deployment.node --poll-interval`` for the SuperNode it starts (this project's own
namespace, not Flower's)."""
DEFAULT_POLL = 0.2


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
    """Run ``flower-supernode`` with the capped idle poll."""
    from credit_data.errors import EngineVersionError
    from federation.flower_compat.deployment import run_supernode

    try:
        run_supernode(poll_interval(), sys.argv[1:])
    except EngineVersionError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
