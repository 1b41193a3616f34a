"""Flower's simulation engine, as every federated mode of the runner starts it."""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from federation.flower_tuning import QUIET, quick_simulation_polls

T = TypeVar("T")


def simulate(server_app: ServerApp, client_app: ClientApp, n_nodes: int, verbose: bool) -> None:
    """Run on Flower's simulation engine, nodes side by side on the machine's cores."""
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    quick_simulation_polls()
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.WARNING)
    cores = os.cpu_count() or 1
    backend: dict[str, Any] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                               "init_args": {"num_cpus": cores, "include_dashboard": False,
                                             "logging_level": "ERROR",
                                             "log_to_driver": verbose}}
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_nodes,
                   backend_config=backend)


_REAL_RAY_SHUTDOWN: Callable[..., None] | None = None


def share_engine_across_runs() -> None:
    """Let the runs of this process (the jobs of a sweep) share one Ray instance.

    Flower's engine starts Ray when none is running and stops it after every run, about 5 s of
    each run's fixed cost here. After this call it stays up between runs (each run still gets
    fresh actors) and stops when the process exits.
    """
    global _REAL_RAY_SHUTDOWN
    if _REAL_RAY_SHUTDOWN is not None:
        return
    import ray

    _REAL_RAY_SHUTDOWN = ray.shutdown
    ray.shutdown = lambda *args, **kwargs: None
    atexit.register(_REAL_RAY_SHUTDOWN)


_CACHE: dict[str, Any] = {}


def once_per_worker(key: str, build: Callable[[], T]) -> T:
    """Build a node's data once per simulation worker process and keep it for later messages.

    Simulation sources carry only the recipe (settings and seed), never the rows: Flower's
    engine pickles the ClientApp with every message, so rows held by the source would travel
    with each one. Entries of an earlier run (another key prefix) are dropped.
    """
    if key not in _CACHE:
        run = key.split("|", 1)[0]
        for old in [k for k in _CACHE if k.split("|", 1)[0] != run]:
            del _CACHE[old]
        _CACHE[key] = build()
    return cast(T, _CACHE[key])
