"""``python experiments/bench.py threads``: fitting on one thread against torch's default.

The centralized split network on ``n`` synthetic customers, a fixed number of epochs, fitted
twice in the same run: with the process's default thread counts (torch, BLAS and OpenMP take
one per core) and inside :func:`models.threads.one_thread`, which every trainer uses; then the
two logistic-regression references likewise. Prints each wall time and the ratio. On an idle
machine the ratio is near 1; on a busy one (two pytest workers, a node next to other work) the
default's second thread spins for a core and the ratio grows (models/threads.py).
"""

from __future__ import annotations

import inspect
import time

import numpy as np


def bench_threads(n: int = 20_000, epochs: int = 4) -> None:
    """Time one fit and the references with default threads and on one thread; print ratios."""
    import torch
    from threadpoolctl import threadpool_info

    from credit_data.design import build_design
    from credit_data.settings import DataSettings
    from credit_data.split import TRAIN, VAL
    from credit_data.synthetic import generate
    from credit_fl.logistic_reference import _fit as fit_reference
    from models.factory import build_model
    from models.settings import ModelKind, ModelSettings, TrainSettings
    from models.training import fit

    design = build_design(generate(n, seed=0), DataSettings(n_customers=n), 0)
    parties = ("lender", "bureau", "social")
    x = {s: design.matrix(parties, s) for s in (TRAIN, VAL)}
    y = {s: design.labels(s) for s in (TRAIN, VAL)}
    settings = TrainSettings(epochs=epochs, min_epochs=epochs, early_stopping=False)
    pools = sorted({(p["internal_api"], p["num_threads"]) for p in threadpool_info()})
    print(f"threads: {n:,} customers, {epochs} epochs; torch {torch.get_num_threads()} "
          f"threads by default, pools {pools}")

    def timed(run) -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def train(one: bool) -> None:
        torch.manual_seed(0)
        model = build_model(ModelSettings(kind=ModelKind.split_mlp), design.widths(parties))
        (fit if one else inspect.unwrap(fit))(model, x[TRAIN], y[TRAIN], x[VAL], y[VAL],
                                          settings, seed=0)

    for name, default, one in (
            ("fit", lambda: train(False), lambda: train(True)),
            ("references", lambda: inspect.unwrap(fit_reference)(design, parties),
             lambda: fit_reference(design, parties))):
        times = np.array([[timed(default), timed(one)] for _ in range(2)])
        d, o = times.min(axis=0)
        print(f"threads: {name}: default threads {d:.2f} s, one thread {o:.2f} s, "
              f"default over one {d / o:.1f}x", flush=True)
