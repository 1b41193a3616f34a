"""The engines that run a simulated federation's nodes, chosen by ``engine=...``.

* ``in_process`` (:class:`credit_fl.in_process.InProcessEngine`): every node in this process,
  each message delivered at once; no Ray.
* ``simulation`` (:class:`credit_fl.simulation.SimulationEngine`): Flower's simulation engine
  on Ray, each node in a worker process of its own, side by side on the machine's cores.

Both run the same ServerApp and ClientApp and give the same metrics for the same seed;
docs/benchmarks.md measures both and docs/python-api.md says which is the default and why.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from federation.run_settings import Engine


def open_engine(engine: Engine, verbose: bool) -> AbstractContextManager[Any]:
    """Return a context that yields the engine named ``engine`` (Ray is loaded only for it)."""
    if engine is Engine.in_process:
        from credit_fl.in_process import InProcessEngine

        return nullcontext(InProcessEngine(verbose))
    from credit_fl.simulation import simulation_engine

    return simulation_engine(verbose)
