"""``bench.py explain``: explaining scored applicants, wall time over plain scoring (issue 32).

A vertical model (no DP, 2 epochs) is trained on ``n`` synthetic customers; then ``applicants``
new applicants are scored twice against the parties' full tables, the blinded sets cached, on
the in-process engine: without explanations (``explain.enabled=false``) and with them. Both
requests run the same alignment, embeddings and scores; the second adds the path embeddings,
the Shapley shares, the gradients, the parties' column attributions and the ranking. The ratio
of the two walls is printed (target: at most 2).

Then through the scoring service on a loopback deployment (:func:`bench_served_explain`): one
applicant's request, ``requests`` times, to the same model's service started without reasons
and to it started with them (the demo's parties opt in with ``--release-explanations``), the
two taking turns; the median and 95th percentile of each with the machine's load, and the
ratio of the medians (target: a median under 3 s).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from credit_data.synthetic import generate

__all__ = ["bench_explain", "bench_served_explain"]


def bench_explain(n: int = 50_000, applicants: int = 10_000) -> None:
    """Print plain scoring's wall, explained scoring's wall and their ratio."""
    from experiments.bench_setup import cli_run, write_tables
    from experiments.score import score_run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = root / "run"
        trained, _ = cli_run(["federation=vertical", "privacy=off", f"data.n_customers={n}",
                               "train.epochs=2", "engine=in_process"], run_dir)
        print(f"explain: trained a vertical model on {n:,} customers in {trained:.1f} s")
        new = root / "new"
        new.mkdir()
        data = write_tables(generate(n, seed=0), new, applicants)
        cache = f"federation.psi_cache={root / 'cache'}"
        score_run(run_dir, [*data, cache, "engine=in_process", "explain.enabled=false",
                            f"scoring.out={root / 'warm'}"])  # fills the caches
        walls, scorings = {}, {}
        for label, enabled in (("plain", "false"), ("explained", "true")):
            start = time.perf_counter()
            out, scorings[label] = score_run(run_dir, [
                *data, cache, "engine=in_process", f"explain.enabled={enabled}",
                f"scoring.out={root / label}"])
            walls[label] = time.perf_counter() - start
            if label == "explained":
                scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
                reasons = int((scores["reason_1"] != "").sum())
        explanation = scorings["explained"]["explanation"]
        print(f"explain: {applicants:,} applicants scored in {walls['plain']:.1f} s, scored "
              f"and explained in {walls['explained']:.1f} s ({reasons:,} with a reason; "
              f"method {explanation['method']}, rounds "
              f"{scorings['plain']['message_rounds']} -> "
              f"{scorings['explained']['message_rounds']}, explanation "
              f"{scorings['explained']['seconds'].get('explanation', 0.0):.1f} s; largest "
              f"completeness gap {max(explanation['completeness_gap_logodds'].values()):.1e} "
              "log-odds)")
        ratio = walls["explained"] / walls["plain"]
        print(f"explain: explained / plain {ratio:.2f} (target <= 2: "
              f"{'met' if ratio <= 2 else 'MISSED'})")
    bench_served_explain()


def bench_served_explain(n: int = 20_000, requests: int = 20, blocks: int = 2) -> None:
    """Print one applicant's request to a scoring service, without and with reasons.

    The two services take turns, ``blocks`` times each (``requests / blocks`` requests a turn),
    so that a shared machine's load, which drifts over minutes, weighs on both alike.
    """
    from experiments.deploy import federation as deploy
    from experiments.deploy import scoring_service as served

    overrides = [f"data.n_customers={n}", "privacy=off", "train.epochs=2", "verbose=false"]
    with tempfile.TemporaryDirectory() as tmp, \
            deploy.local_federation(Path(tmp) / "federation", overrides,
                                    explanations=True) as fed:
        results = deploy.run(fed.root)
        run_dir = Path(results["federation"]["server_audit_log"]).parents[1]
        name = "one-applicant.csv"
        generate(n, seed=0).tables["lender"].frame.iloc[:1].rename_axis("customer_id").to_csv(
            fed.applicants_dir() / name)
        times: dict[str, list[float]] = {"plain": [], "explained": []}
        loads: dict[str, list[float]] = {"plain": [], "explained": []}  # 1-minute averages
        extra: list[float] = []
        for _ in range(blocks):
            for label, enabled in (("plain", "false"), ("explained", "true")):
                served.serve(fed.root, run_dir, [f"explain.enabled={enabled}"])
                try:
                    served.score(fed.root, run_dir, [f"scoring.applicants={name}"])  # warm
                    for _ in range(max(requests // blocks, 1)):
                        start = time.perf_counter()
                        _, scoring = served.score(fed.root, run_dir,
                                                  [f"scoring.applicants={name}"])
                        times[label].append(time.perf_counter() - start)
                        loads[label].append(os.getloadavg()[0])
                        if label == "explained":
                            extra.append(scoring["seconds"].get("explanation", 0.0))
                            said = scoring["lender"].get("explanation", {})
                            scores = pd.read_csv(scoring["lender_scores"],
                                                 keep_default_na=False)
                finally:
                    served.stop(fed.root)
        reasons = [str(scores.at[0, f"reason_{r}"]) for r in range(1, 5)
                   if f"reason_{r}" in scores and scores.at[0, f"reason_{r}"]]
        medians = {label: float(np.median(t)) for label, t in times.items()}
        for label, t in times.items():
            print(f"explain: one applicant through the scoring service on a loopback "
                  f"deployment, {label}, {len(t)} requests: median {medians[label]:.2f} s, "
                  f"95th percentile {np.percentile(t, 95):.2f} s, machine load (1-minute "
                  f"average) {min(loads[label]):.1f} to {max(loads[label]):.1f} on "
                  f"{os.cpu_count()} cores"
                  + (f"; explanation rounds median {np.median(extra):.2f} s, reasons "
                     f"{reasons} (columns from {said.get('columns_from')})"
                     if label == "explained" else ""))
        ratio = medians["explained"] / medians["plain"]
        print(f"explain: served explained / plain {ratio:.2f}; explained median "
              f"{medians['explained']:.2f} s (target < 3 s: "
              f"{'met' if medians['explained'] < 3 else 'MISSED'})")
