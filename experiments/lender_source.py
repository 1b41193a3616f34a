"""What each simulated lender is handed: its settings and its own rows.

Every Ray worker of a horizontal simulation imports this module with the ClientApp it runs, so
it imports only what a lender node needs: not the runner, its plots or its metrics (scikit-learn
alone is about 1.5 s of CPU in each worker, before its first message).
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import Context

from credit_data.horizontal import LenderRows
from experiments.simulation import once_per_worker, quiet_worker
from fl_client.settings import ClientSettings


class SimulationSource:
    """Hands each simulated lender its settings and rows (a deployment reads its own files).

    It carries what the engine shared (``engine.share``), not the rows: on Flower's
    simulation engine a reference into Ray's object store, since the engine pickles the
    ClientApp with every message. Each worker fetches the rows once (see
    :func:`experiments.simulation.once_per_worker`) instead of building them again.
    """

    def __init__(self, settings: dict[str, ClientSettings], rows: Any) -> None:
        self.settings = settings
        self.rows = rows
        self.names = sorted(settings, key=lambda p: int(p.rsplit("-", 1)[1]))
        self.key = f"horizontal {rows.key}"

    def __call__(self, context: Context) -> tuple[ClientSettings, LenderRows]:
        torch.set_num_threads(1)  # the engine runs clients side by side, one core each
        quiet_worker()
        party = self.names[int(context.node_config["partition-id"])]
        rows: dict[str, LenderRows] = once_per_worker(f"{self.key}|rows", self.rows.get)
        return self.settings[party], rows[party]
