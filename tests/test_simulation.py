"""Flower's simulation engine as the runner tunes it (``federation.flower_compat.simulation``)."""

import time
from queue import Empty, Queue

import pytest
from flwr.server.superlink.fleet.vce import vce_api

from federation.flower_compat import SIMULATION_POLL
from federation.flower_compat.simulation import STOP_CHECK, quick_simulation_polls


class _State:
    """Holds one waiting message per node, as the engine's in-memory LinkState would."""

    def __init__(self, waiting: dict[int, list[str]]) -> None:
        self.waiting = waiting

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        taken, self.waiting[node_id] = (self.waiting[node_id][:limit],
                                        self.waiting[node_id][limit:])
        return taken


class _Stop:
    """Stops the sweep after ``sweeps`` waits; records how long each wait was."""

    def __init__(self, sweeps: int) -> None:
        self.waits: list[float] = []
        self.sweeps = sweeps

    def is_set(self) -> bool:
        return len(self.waits) >= self.sweeps

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_the_engine_looks_for_messages_every_10_ms_and_queues_each_nodes_next_one():
    quick_simulation_polls()
    quick_simulation_polls()  # idempotent
    state = _State({1: ["a1", "a2"], 2: ["b1"]})
    queue: Queue[str] = Queue()
    stop = _Stop(sweeps=2)
    vce_api.add_messages_to_queue(state, queue, {1: 0, 2: 1}, stop)  # type: ignore[arg-type]
    assert stop.waits == [SIMULATION_POLL] * 2 and SIMULATION_POLL <= 0.01
    assert [queue.get_nowait() for _ in range(queue.qsize())] == ["a1", "b1", "a2"]


def test_the_engine_threads_notice_the_end_of_a_run_within_50_ms():
    quick_simulation_polls()
    waiting = vce_api.Queue()
    start = time.perf_counter()
    with pytest.raises(Empty):
        waiting.get(timeout=1.0)  # how Flower's worker threads wait for the next message
    assert time.perf_counter() - start < 0.5 and STOP_CHECK <= 0.05
    waiting.put("m")
    assert waiting.get(timeout=1.0) == "m"


def test_ray_started_for_a_run_whose_data_fails_is_stopped_again(own_engine):
    import ray

    from credit_fl.simulation import simulation_engine

    def bad_rows() -> None:
        raise ValueError("lender.csv: bad rows")

    with pytest.raises(ValueError, match="lender.csv: bad rows"):
        with simulation_engine(verbose=False) as engine:
            engine.start_while(bad_rows)
    assert not ray.is_initialized()


def _ray_helpers() -> list[str]:
    """The command lines of the Ray processes this test process started."""
    import psutil

    return [" ".join(child.cmdline()) for child in psutil.Process().children(recursive=True)]


@pytest.mark.parametrize("verbose", [False, True])
def test_ray_starts_without_the_autoscaler_and_forwards_worker_logs_only_when_verbose(
        own_engine, verbose):
    import ray

    from credit_fl.simulation import simulation_engine

    with simulation_engine(verbose=verbose) as engine:
        assert engine.start_while(lambda: 7) == 7
        helpers = _ray_helpers()
    assert not ray.is_initialized()  # never ran, so stopped again
    assert any("raylet" in h for h in helpers) and any("gcs_server" in h for h in helpers)
    assert not any("autoscaler/_private/monitor.py" in h for h in helpers)
    assert any("log_monitor.py" in h for h in helpers) is verbose
