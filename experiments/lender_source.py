"""What each simulated lender is handed: its settings and its own rows.

Every Ray worker of a horizontal simulation imports this module with the ClientApp it runs, so
it imports only what a lender node needs: not the runner, its plots or its metrics (scikit-learn
alone is about 1.5 s of CPU in each worker, before its first message).
"""

from __future__ import annotations

import ray
import torch
from flwr.app import Context

from credit_data.horizontal import LenderRows
from experiments.simulation import once_per_worker, quiet_worker
from fl_client.settings import ClientSettings


class SimulationSource:
    """Hands each simulated lender its settings and rows (a deployment reads its own files).

    It carries a reference to the lenders' rows in Ray's object store, not the rows: Flower's
    engine pickles the ClientApp with every message. Each worker fetches them once (see
    :func:`experiments.simulation.once_per_worker`) instead of building them again.
    """

    def __init__(self, settings: dict[str, ClientSettings], rows: ray.ObjectRef) -> None:
        self.settings = settings
        self.rows = rows
        self.names = sorted(settings, key=lambda p: int(p.rsplit("-", 1)[1]))
        self.key = f"horizontal {rows.hex()}"

    def __call__(self, context: Context) -> tuple[ClientSettings, LenderRows]:
        torch.set_num_threads(1)  # the engine runs clients side by side, one core each
        quiet_worker()
        party = self.names[int(context.node_config["partition-id"])]
        rows: dict[str, LenderRows] = once_per_worker(f"{self.key}|rows",
                                                      lambda: ray.get(self.rows))
        return self.settings[party], rows[party]
