"""``python experiments/bench.py monitor``: monitoring and re-rating, against batch scoring.

A vertical model is trained on ``n`` synthetic customers (2 epochs, no DP, in-process engine:
the model's quality is not what is measured). Then, in the same run of the benchmark:

* a downturn period of ``n`` new applicants over three parties is monitored
  (``credit-fl monitor``) and, apart, scored by plain batch scoring (``credit-fl score``,
  without reason codes, as monitoring scores) of the same rows;
* the book of ``n`` borrowers is re-rated in period 2 (``credit-fl rerate``: two periods
  scored in two requests, joined, the watch list; without reason codes, as the plain scoring)
  and, apart, the period's book scored once by batch scoring.

Each prints its wall time and the ratio to the plain scoring of the same rows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def bench_monitor(n: int = 100_000) -> None:
    """Time monitoring and re-rating ``n`` rows; print each against plain batch scoring."""
    from credit_data.periods import book
    from credit_data.settings import Shift
    from credit_fl.batch_scoring import score_bundles
    from credit_fl.config import settings_of
    from credit_fl.monitoring import frames_of
    from experiments.bench_setup import cli_run
    from experiments.monitor import monitor_run
    from experiments.rerate import rerate_run
    from experiments.score import score_run

    period = ["data.period=2", "data.shift=downturn"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = root / "run"
        trained, _ = cli_run(["federation=vertical", "privacy=off", f"data.n_customers={n}",
                               "train.epochs=2", "engine=in_process"], run_dir)
        print(f"monitor: trained a vertical model on {n:,} customers in {trained:.1f} s")
        start = time.perf_counter()
        _, report = monitor_run(run_dir, [f"monitor.out={root / 'monitor'}", *period])
        monitored = time.perf_counter() - start
        start = time.perf_counter()
        score_run(run_dir, [*period, "engine=in_process", "explain.enabled=false",
                            f"scoring.out={root / 'scored'}"])
        scored = time.perf_counter() - start
        print(f"monitor: {n:,} applicants over {len(report['parties'])} parties in "
              f"{monitored:.1f} s (status {report['status']}); batch scoring of the same rows "
              f"{scored:.1f} s; monitor / scoring {monitored / scored:.2f}")
        start = time.perf_counter()
        _, rerated = rerate_run(run_dir, 2, [f"rerate.out={root / 'rerate'}",
                                             "data.shift=downturn", "explain.enabled=false"])
        rerating = time.perf_counter() - start
        settings = settings_of(run_dir, "engine=in_process", "verbose=false",
                               "explain.enabled=false")
        data = settings.data
        start = time.perf_counter()
        frames = frames_of(book(data.n_customers, settings.seed, data.synthetic, period=2,
                                shift=Shift.downturn), data.id_column)
        score_bundles(run_dir, settings, root / "book", frames=frames)
        plain = time.perf_counter() - start
        print(f"rerate: {rerated['borrowers']:,} borrowers re-rated in {rerating:.1f} s (two "
              f"periods scored; watch list {rerated['watch_list']['share']:.1%}); batch scoring "
              f"of the period's book {plain:.1f} s; rerate / scoring {rerating / plain:.2f}")
