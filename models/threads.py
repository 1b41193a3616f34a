"""One thread for the small tabular models this project fits.

Torch, OpenBLAS and OpenMP each start one thread per core by default. On these models (a batch
of 512 rows through layers of 32 units; a logistic regression on 50 columns) a second thread
has nothing to share and, on a machine that is busy with anything else, spins waiting for its
core. Measured on 2026-12-07 on this project's 2-core machine under load: four epochs of the
centralized split network on 5,000 customers trained in 0.7-1.5 s on one thread and 22-27 s on
two; the two logistic-regression references on 20,000 customers took 0.6-1.1 s against 18 s
(docs/benchmarks.md). Simulated and deployed nodes already train on one thread each;
:func:`one_thread` gives the same to fitting in the caller's own process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch, BLAS and OpenMP thread; give the caller back its own counts.

    Usable as a decorator (``@one_thread()``).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
