"""Flower's simulation engine, as every federated mode of the runner starts it."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Generic, TypeVar, cast

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from credit_fl.interrupt import reinstall
from federation.flower_compat import QUIET, check_engine_versions, plain_flower
from federation.flower_compat.simulation import one_machine_head, quick_simulation_polls

T = TypeVar("T")


def _ray_init_args(verbose: bool) -> dict[str, Any]:
    return {"num_cpus": os.cpu_count() or 1, "include_dashboard": False,
            "logging_level": "ERROR", "log_to_driver": verbose}


class InObjectStore(Generic[T]):
    """A value in Ray's object store: what a simulation source carries instead of the rows."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref  # a ray.ObjectRef
        self.key = ref.hex()

    def get(self) -> T:
        import ray

        return cast(T, ray.get(self.ref))


class SimulationEngine:
    """Flower's simulation engine; Ray may start while the runner builds its data.

    Made by :func:`simulation_engine`, which stops Ray again if no run used it. Flower's engine
    stops Ray when a run ends, whether it started Ray itself or found it running.
    """

    name = "simulation"
    same_process = False  # the nodes run in Ray's worker processes

    def __init__(self, verbose: bool) -> None:
        for key, value in QUIET.items():
            os.environ.setdefault(key, value)
        self.plain = plain_flower()
        if not self.plain:  # the tunings below rely on these exact releases' internals
            check_engine_versions(("flwr", "ray"))
            quick_simulation_polls()
        self.verbose = verbose
        self.ran = False

    def start_while(self, build: Callable[[], T]) -> T:
        """Start Ray (3 to 4 s here) while ``build`` runs in another thread; return its result.

        Ray starts in this thread: Linux stops Ray's processes when the thread that started
        them ends.
        """
        result: list[T] = []
        failure: list[BaseException] = []

        def target() -> None:
            try:
                result.append(build())
            except BaseException as exc:  # raised again below, in the caller's thread
                failure.append(exc)

        builder = threading.Thread(target=target, daemon=True)
        builder.start()
        try:
            self._start_ray()
        finally:
            builder.join()
        if failure:
            raise failure[0]
        return result[0]

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        # what Flower's Ray backend passes when it starts Ray: the workers' import path
        pythonpath = os.pathsep.join(sys.path)
        if os.environ.get("PYTHONPATH"):
            pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
        with one_machine_head(self.verbose) if not self.plain else nullcontext():
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
                     **_ray_init_args(self.verbose))
        reinstall()  # ray.init takes SIGTERM; a run's Ctrl-C and SIGTERM stop it at once

    def share(self, value: T) -> InObjectStore[T]:
        """Put ``value`` in Ray's object store for the nodes (each worker fetches it once)."""
        import ray

        self._start_ray()
        return InObjectStore(ray.put(value))

    def run(self, server_app: ServerApp, client_app: ClientApp, n_nodes: int) -> None:
        """Run on Flower's simulation engine, nodes side by side on the machine's cores."""
        self.ran = True
        self._start_ray()  # unless started already; Flower's engine would start it, in full
        logging.getLogger("flwr").setLevel(logging.INFO if self.verbose else logging.WARNING)
        backend: dict[str, Any] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": _ray_init_args(self.verbose)}
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n_nodes,
                       backend_config=backend)


@contextmanager
def simulation_engine(verbose: bool) -> Iterator[SimulationEngine]:
    """Yield the engine; stop Ray if it was started for a run that never began."""
    engine = SimulationEngine(verbose)
    try:
        yield engine
    finally:
        if not engine.ran:
            import ray

            if ray.is_initialized():
                ray.shutdown()


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
