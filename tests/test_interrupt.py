"""Ctrl-C and SIGTERM on a simulation (issue 19, item 8): a prompt stop, one line, no leftovers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.listeners import is_loopback, listeners, process_tree

ROOT = Path(__file__).resolve().parents[1]


def _command_line(process: psutil.Process) -> str:
    """Return a process's command line; empty for one that ended (a zombie has none)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended, a zombie or gone between listing and reading
        return ""


def _lives(process: psutil.Process) -> bool:
    """Whether a process still runs (a zombie, whose parent has not reaped it, does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ended while asked
        return False


def _wait_for_ray(process: subprocess.Popen, timeout: float = 90) -> list[psutil.Process]:
    """Wait until the run's Ray workers exist; return every process the run started."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()
        children = psutil.Process(process.pid).children(recursive=True)
        if any("ClientAppActor" in _command_line(c) for c in children):
            return children
        time.sleep(0.5)
    raise AssertionError("the run's Ray workers did not start")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_a_simulation_within_5_s_with_one_line(tmp_path, sig):
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "federation=horizontal",
         "data.n_customers=3000", "federation.rounds=500", "verbose=false",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = _wait_for_ray(process)
        # issue 19, item 3: Ray's GCS and raylet listened on every interface (*:<port>)
        found = listeners(process_tree(process.pid))
        time.sleep(2)  # in the middle of its rounds
        sent = time.monotonic()
        process.send_signal(sig)
        _, err = process.communicate(timeout=30)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    print(f"{sig.name}: exit {process.returncode} after {seconds:.2f} s; listening on "
          f"{sorted({(a, p) for _, a, p in found})}")
    assert len(found) >= 3  # the GCS, the raylet, the workers: the check saw Ray
    assert [f for f in found if not is_loopback(f[1])] == []
    assert process.returncode == 128 + sig
    assert seconds < 5
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"stopped by {sig.name}")
    # nothing the run started outlives it (a worker may take a moment to exit on a busy machine)
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not [p.pid for p in alive if _lives(p)]
    assert not (tmp_path / "run" / "results.json").exists()
