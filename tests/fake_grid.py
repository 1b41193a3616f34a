"""The unit tier's in-process grid: the in-process engine's (:mod:`credit_fl.in_process`)."""

from __future__ import annotations

from credit_fl.in_process import (
    RUN_ID,
    SERVER,
    SUPERLINK,
    InProcessGrid,
    run_server_app,
    serving,
)

__all__ = ["RUN_ID", "SERVER", "SUPERLINK", "InProcessGrid", "run_server_app", "serving"]
