"""Benchmarks: ``python experiments/bench.py [name ...]`` (all by default).

The machines are shared and noisy, so each benchmark also prints a ratio of two things measured
in the same run. Speed targets live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from credit_data.design import build_design
from credit_data.settings import DataSettings
from credit_data.split import TRAIN, VAL
from credit_data.synthetic import generate
from models.factory import build_model
from models.settings import ModelSettings, TrainSettings
from models.training import fit, seed_everything

PARTIES = ("lender", "bureau", "social")


def bench_synthetic() -> None:
    """Generate 100,000 and 1,000,000 customers; target: 1,000,000 in under 30 s."""
    timings = {}
    for n in (100_000, 1_000_000):
        start = time.perf_counter()
        generate(n, seed=0)
        timings[n] = time.perf_counter() - start
        print(f"synthetic: {n:>9,} customers generated in {timings[n]:6.2f} s")
    ratio = timings[1_000_000] / timings[100_000]
    print(f"synthetic: 1,000,000 / 100,000 time ratio {ratio:.1f}x (10x is linear); "
          f"target 1,000,000 under 30 s: {'met' if timings[1_000_000] < 30 else 'MISSED'} "
          f"({timings[1_000_000] / 30:.2f} of the budget)")


def bench_centralized(epochs: int = 5) -> None:
    """Time the centralized trainer on 100,000 synthetic customers for a fixed number of epochs."""
    settings = DataSettings()
    start = time.perf_counter()
    design = build_design(generate(settings.n_customers, seed=0), settings, seed=0)
    prep = time.perf_counter() - start
    x_train, y_train = design.matrix(PARTIES, TRAIN), design.labels(TRAIN)
    x_val, y_val = design.matrix(PARTIES, VAL), design.labels(VAL)
    seed_everything(0)
    model = build_model(ModelSettings(), design.widths(PARTIES))
    start = time.perf_counter()
    result = fit(model, x_train, y_train, x_val, y_val,
                 TrainSettings(epochs=epochs, patience=epochs + 1), seed=0)
    wall = time.perf_counter() - start
    print(f"centralized: {len(design.ids):,} customers ({len(y_train):,} train rows, "
          f"{x_train.shape[1]} columns), {epochs} epochs")
    print(f"centralized: data preparation {prep:.2f} s, training wall time {wall:.2f} s, "
          f"{result.rows_per_second:,.0f} train rows/s")
    print(f"centralized: training / data preparation time ratio {wall / prep:.2f}")


BENCHMARKS: dict[str, Callable[[], None]] = {
    "synthetic": bench_synthetic,
    "centralized": bench_centralized,
}


def main(argv: list[str] | None = None) -> None:
    """Run the named benchmarks, or all of them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"benchmarks to run, of {sorted(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
