"""Benchmarks: ``python experiments/bench.py [name ...]`` (all by default).

The machines are shared and noisy, so each benchmark also prints a ratio of two things measured
in the same run. Speed targets live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import roc_auc_score

from credit_data.design import build_design
from credit_data.settings import DataSettings
from credit_data.split import TEST, TRAIN, VAL
from credit_data.synthetic import generate
from credit_fl.attacks import inversion_attack
from credit_fl.baselines import run_baseline
from credit_fl.horizontal import run_horizontal
from credit_fl.outcome import RunOutcome
from credit_fl.vertical import run_vertical
from experiments.bench_setup import cli_run, horizontal_settings, vertical_settings, write_tables
from federation.run_settings import RunSettings
from federation.settings import FederationSettings, Mode
from models.factory import build_model
from models.settings import ModelKind, ModelSettings, TrainSettings
from models.training import fit, predict_proba, seed_everything
from privacy.settings import PrivacyMechanism, PrivacySettings

if TYPE_CHECKING:
    from experiments.deploy.federation import Federation

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


def bench_horizontal(epochs: int | None = None, repeats: int = 2) -> None:
    """Horizontal over centralized wall time (same rows, same epochs); DP-SGD over plain.

    Each run is timed two ways. End to end: ``python -m experiments.run``, a process of its
    own, as a user runs it (imports, the run, its audit and files). In this process: the run
    alone, with this process's imports already paid, so the centralized run pays no start-up
    while the horizontal one still starts Ray and the clients' worker processes.

    ``epochs`` defaults to the rounds of a default horizontal run (``conf/federation``). Each
    run is timed ``repeats`` times, taking turns, and the best time counts (as ``timeit``
    does: the slower ones are the shared machine's doing).
    """
    if epochs is None:
        from experiments.deploy.federation import compose_settings

        epochs = compose_settings(["federation=horizontal"])[0].federation.rounds
    settings = horizontal_settings(epochs)
    central = dataclasses.replace(settings, federation=dataclasses.replace(
        settings.federation, mode=Mode.centralized))
    private = horizontal_settings(epochs, mechanism=PrivacyMechanism.dpsgd, target_epsilon=3.0)
    same = [f"train.epochs={epochs}", f"train.patience={epochs + 1}"]
    cli = {"central": ["federation=centralized", "federation.parties=[lender,bureau]", *same],
           "plain": ["federation=horizontal", f"federation.rounds={epochs}", *same],
           "dpsgd": ["federation=horizontal", f"federation.rounds={epochs}", *same,
                     "privacy=dpsgd", "privacy.target_epsilon=3"]}
    ends, results, walls, runs = _time_horizontal(
        cli, {"central": central, "plain": settings, "dpsgd": private}, repeats)
    best_end = {k: min(v) for k, v in ends.items()}
    best = {k: min(v) for k, v in walls.items()}
    plain = runs["plain"]
    rounds = plain.metrics["history"]
    steady = sum(h["seconds"] for h in rounds[1:]) / max(len(rounds) - 1, 1)
    print(f"horizontal: 100,000 customers, 5 lenders, {epochs} rounds of 1 local epoch vs "
          f"{epochs} centralized epochs on the same rows and columns; best of {repeats}")
    for label, times in (("end to end", ends), ("in this process", walls)):
        print(f"horizontal: {label}, wall times (s): "
              + "; ".join(f"{k} {', '.join(f'{w:.1f}' for w in v)}" for k, v in times.items()))
    print(f"horizontal: end to end, best: centralized {best_end['central']:.1f} s, horizontal "
          f"{best_end['plain']:.1f} s, DP-SGD {best_end['dpsgd']:.1f} s; in this process: "
          f"centralized {best['central']:.1f} s (training {runs['central'].train_seconds:.1f} "
          f"s), horizontal {best['plain']:.1f} s (simulation {plain.train_seconds:.1f} s, "
          f"{steady:.2f} s per round after the first), DP-SGD {best['dpsgd']:.1f} s")
    print(f"horizontal: federation overhead, wall time ratio horizontal / centralized: end to "
          f"end {best_end['plain'] / best_end['central']:.2f}x (target <= 2x); in this process "
          f"{best['plain'] / best['central']:.2f}x")
    print(f"horizontal: DP-SGD / non-private wall time ratio: end to end "
          f"{best_end['dpsgd'] / best_end['plain']:.2f}x (target <= 1.6x); in this process "
          f"{best['dpsgd'] / best['plain']:.2f}x")
    print("horizontal: test AUC centralized / horizontal / DP-SGD eps 3: end to end "
          + " / ".join(f"{results[k]['metrics']['test']['auc']:.4f}" for k in cli)
          + "; in this process "
          + " / ".join(f"{runs[k].metrics['test']['auc']:.4f}" for k in cli))



def _time_horizontal(cli: dict[str, list[str]], in_process: dict[str, RunSettings],
                     repeats: int) -> tuple[dict[str, list[float]], dict[str, dict],
                                            dict[str, list[float]], dict[str, RunOutcome]]:
    """Time each run ``repeats`` times, taking turns: end to end, then in this process.

    Return the end-to-end wall times and results.json of each, then the in-process ones and
    their outcomes (``central`` a centralized run, the others horizontal ones).
    """
    walls: dict[str, list[float]] = {k: [] for k in cli}
    ends: dict[str, list[float]] = {k: [] for k in cli}
    runs: dict[str, RunOutcome] = {}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name in cli:
                wall, results[name] = cli_run(cli[name], Path(tmp) / f"cli-{name}{repeat}")
                ends[name].append(wall)
            start = time.perf_counter()
            runs["central"] = run_baseline(in_process["central"])
            walls["central"].append(time.perf_counter() - start)
            for name in ("plain", "dpsgd"):
                start = time.perf_counter()
                runs[name] = run_horizontal(in_process[name], Path(tmp) / f"{name}{repeat}")
                walls[name].append(time.perf_counter() - start)
    return ends, results, walls, runs

def bench_vertical(epochs: int = 5) -> None:
    """Vertical over centralized wall time (same rows, same epochs); messages and bytes."""
    settings = vertical_settings(epochs)
    central = dataclasses.replace(settings, federation=dataclasses.replace(
        settings.federation, mode=Mode.centralized))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        base = run_baseline(central)
        central_wall = time.perf_counter() - start
        start = time.perf_counter()
        vertical = run_vertical(settings, Path(tmp) / "vertical")
        vertical_wall = time.perf_counter() - start
    f = vertical.federation or {}
    seconds = f["seconds_by_message"]
    align = sum(v for k, v in seconds.items() if "psi" in k)
    train = seconds.get("train.embed", 0.0) + seconds.get("train.head", 0.0)
    rounds = 2 * f["exchanges_per_epoch"] * epochs
    compute = sum(f["compute_seconds"].values())
    print(f"vertical: 100,000 customers, 3 parties, {epochs} epochs of "
          f"{f['exchanges_per_epoch']} exchanges vs {epochs} centralized epochs, same rows")
    print(f"vertical: centralized {central_wall:.1f} s (training {base.train_seconds:.1f} s); "
          f"vertical {vertical_wall:.1f} s = alignment (PSI) {align:.1f} s + training "
          f"exchanges {train:.1f} s + engine start and scoring")
    print(f"vertical: wall time ratio vertical / centralized {vertical_wall / central_wall:.2f}x "
          f"(target <= 2x); training exchanges / centralized training "
          f"{train / base.train_seconds:.2f}x")
    print(f"vertical: one message round costs {(train - compute / 2) / rounds:.3f} s beyond the "
          f"parties' compute ({rounds} rounds; the engine looks for messages every 10 ms)")
    for party, c in f["communication"].items():
        print(f"vertical: {party:7s} per epoch {c['messages_out'] / epochs:.1f} messages, "
              f"{c['bytes_out'] / epochs / 1e6:.2f} MB sent, "
              f"{c['bytes_in'] / epochs / 1e6:.2f} MB received (alignment included)")
    print(f"vertical: test AUC centralized {base.metrics['test']['auc']:.4f}, vertical "
          f"{vertical.metrics['test']['auc']:.4f}")


def bench_vertical_cached(n: int = 100_000, epochs: int = 5, new_share: float = 0.01) -> None:
    """Second vertical run on the same tables (PSI caches kept), and with 1% new applicants.

    The parties' tables are Parquet files (issue 36). Four runs in one process, one after the
    other: centralized, vertical cold (caches empty), vertical again (same tables), vertical with
    ``new_share`` of the lender's applicants replaced by new ones. Targets: again / centralized
    <= 2x, new applicants / centralized <= 2.5x.
    """
    from credit_data.settings import Source
    from credit_data.sources import write_party_tables
    from credit_data.synthetic import synthetic_frames

    frames = synthetic_frames(n, seed=0)
    lender = frames["lender"]
    swap = int(round(new_share * len(lender)))
    held, spare = lender.iloc[:swap], lender.iloc[swap:2 * swap]
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        before = write_party_tables({**frames, "lender": lender.drop(held.index)}, root / "a")
        after = write_party_tables({"lender": lender.drop(spare.index)}, root / "b")
        base = vertical_settings(epochs, n)
        runs: dict[str, tuple[dict, RunOutcome]] = {}
        for label, sources in (("cold", before), ("again", before),
                               ("new", {**before, **after})):
            settings = dataclasses.replace(
                base, data=dataclasses.replace(
                    base.data, name="bench", source=Source.files, id_column="customer_id",
                    label="default_12m", parties=sources),
                federation=dataclasses.replace(base.federation, psi_cache=str(root / "psi")))
            if label == "cold":
                central = dataclasses.replace(settings, federation=dataclasses.replace(
                    settings.federation, mode=Mode.centralized))
                start = time.perf_counter()
                central_outcome = run_baseline(central)
                walls["centralized"] = time.perf_counter() - start
            start = time.perf_counter()
            outcome = run_vertical(settings, root / label)
            walls[label] = time.perf_counter() - start
            seconds = (outcome.federation or {})["seconds_by_message"]
            runs[label] = ({k: v for k, v in seconds.items() if "psi" in k}, outcome)
    print(f"vertical_cached: {n:,} customers from Parquet, {epochs} epochs, 3 parties; "
          f"{swap:,} of the lender's applicants new in the last run")
    for label in ("cold", "again", "new"):
        psi, outcome = runs[label]
        align = {p: a["intersection"] for p, a in (outcome.federation or {})["alignment"].items()}
        print(f"vertical_cached: {label:5s} {walls[label]:6.1f} s, PSI {sum(psi.values()):5.1f} s "
              f"({', '.join(f'{k} {v:.1f}' for k, v in psi.items())}); intersections {align}; "
              f"test AUC {outcome.metrics['test']['auc']:.4f}")
    print(f"vertical_cached: centralized {walls['centralized']:.1f} s (test AUC "
          f"{central_outcome.metrics['test']['auc']:.4f})")
    print(f"vertical_cached: again / centralized {walls['again'] / walls['centralized']:.2f}x "
          f"(target <= 2x); {new_share:.0%} new / centralized "
          f"{walls['new'] / walls['centralized']:.2f}x (target <= 2.5x); cold / centralized "
          f"{walls['cold'] / walls['centralized']:.2f}x")


_LOAD_PEAK = """
import json, sys
from credit_data.files import load_party
from credit_data.settings import DataSettings, PartySource
source = PartySource(**json.loads(sys.argv[1]))
rows = 0
if sys.argv[2]:  # else: the imports alone
    rows = load_party(sys.argv[2], source, DataSettings(id_column="customer_id")).n_rows
status = open("/proc/self/status").read().split("VmHWM:")[1]  # this image's peak, from exec on
print(json.dumps({"rows": rows, "peak_kib": int(status.split()[0])}))
"""


def bench_table_memory(sizes: tuple[int, ...] = (100_000, 1_000_000)) -> None:
    """Peak memory of one party's process reading its table: CSV, Parquet, DuckDB (issue 36).

    Each read runs in a fresh interpreter: its peak resident memory (``VmHWM``; ``ru_maxrss``
    would count the benchmark's own memory at the fork) less that of an interpreter that only
    imports the same modules; the bureau's table, which holds about
    twice the lender's applicants.
    """
    from credit_data.sources import write_party_tables
    from credit_data.synthetic import synthetic_frames

    print("table_memory: | lender applicants | bureau rows | source | peak MiB over imports | "
          "bytes per row | read s |")
    def peak(spec: dict, party: str) -> tuple[int, float, float]:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _LOAD_PEAK, json.dumps(spec), party],
                              capture_output=True, text=True, check=True)
        found = json.loads(done.stdout.strip().splitlines()[-1])
        return found["rows"], found["peak_kib"] / 1024, time.perf_counter() - start

    _, imports, _ = peak({"path": "none.csv"}, "")
    print(f"table_memory: an interpreter with the imports alone peaks at {imports:.0f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            frames = {"bureau": synthetic_frames(n, seed=0)["bureau"]}
            peaks = {}
            for kind in ("csv", "parquet", "duckdb"):
                source = write_party_tables(frames, Path(tmp) / f"{n}-{kind}", kind)["bureau"]
                spec = {"path": source.path, "query": source.query,
                        "categorical": list(source.categorical), "id_column": "customer_id"}
                rows, total, wall = peak(spec, "bureau")
                peaks[kind] = total - imports
                print(f"table_memory: | {n:,} | {rows:,} | {kind} | {peaks[kind]:.0f} | "
                      f"{peaks[kind] * 2**20 / rows:.0f} | {wall:.1f} |", flush=True)
            print(f"table_memory: {n:,}: parquet / csv peak "
                  f"{peaks['parquet'] / peaks['csv']:.2f}x, duckdb / csv "
                  f"{peaks['duckdb'] / peaks['csv']:.2f}x")


LOCAL_STEPS_RUNS: tuple[tuple[int, int], ...] = ((4, 8), (1, 8), (2, 15), (1, 30))
"""``(federation.local_steps, train.epochs)`` of :func:`bench_local_steps`, cheapest first: Q
steps per batch over 30 / Q epochs (the same optimizer steps as the default's 30 epochs in a
Q-th of the message rounds), and one step per batch over 8 epochs (as few rounds, no local
steps) as the control."""


def bench_local_steps(n: int = 100_000,
                      runs: tuple[tuple[int, int], ...] = LOCAL_STEPS_RUNS,
                      extra: tuple[str, ...] = ()) -> None:
    """Test AUC against message rounds for ``federation.local_steps`` (FedBCD's Q), issue 36.

    The default run (label DP + DP-SGD at epsilon 3) on the in-process engine, once per
    ``(local_steps, epochs)`` of ``runs``, one after the other. Under DP-SGD the default run
    does not stop early, so the rounds are set by ``train.epochs``: more local steps per batch
    pay for fewer epochs. The parties' PSI caches live in a temporary directory shared by the
    runs, so wall time is compared without the alignment (the first run pays it cold). Prints
    each run, then its rounds, wall time and AUC against the default (1 step, 30 epochs).
    """
    import credit_fl

    rows: dict[tuple[int, int], tuple[int, int, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for q, epochs in runs:
            settings = credit_fl.settings(f"data.n_customers={n}", "verbose=false",
                                          f"federation.local_steps={q}", f"train.epochs={epochs}",
                                          f"federation.psi_cache={tmp}/psi", *extra)
            start = time.perf_counter()
            model = credit_fl.train(settings, engine="in_process")
            wall = time.perf_counter() - start
            f = model.results["federation"]
            trained = wall - float(f.get("alignment_seconds") or 0.0)
            rows[q, epochs] = (int(f["message_rounds"]), int(f["epochs"]), trained,
                               float(model.metrics["test"]["auc"]))
            print(f"local_steps: {n:,} customers, local_steps={q}, train.epochs={epochs}: "
                  f"{f['epochs']} epochs, {f['message_rounds']} message rounds, {trained:.1f} s "
                  f"without the alignment ({wall:.1f} s wall), test AUC {rows[q, epochs][3]:.4f}"
                  f"{' ' + ' '.join(extra) if extra else ''}", flush=True)
    base = rows.get((1, 30))
    if base is None:
        return
    for (q, epochs), r in rows.items():
        if (q, epochs) != (1, 30):
            print(f"local_steps: ({q} steps, {epochs} epochs) / (1 step, 30 epochs): message "
                  f"rounds {r[0] / base[0]:.2f}x, wall time without the alignment "
                  f"{r[2] / base[2]:.2f}x, test AUC {r[3] - base[3]:+.4f}")


_NODE_PEAK = """
import json, sys
from credit_data.files import load_party
from credit_data.settings import DataSettings, PartySource
from credit_data.vertical import node_rows
source = PartySource(**json.loads(sys.argv[1]))
kept, rows = 0, 0
if sys.argv[2]:  # else: the imports alone
    settings = DataSettings(id_column="customer_id")
    table = load_party(sys.argv[2], source, settings)
    node = node_rows(table, settings, seed=0)
    del table
    rows = len(node.ids)
    kept = node.x.nbytes + sum(sys.getsizeof(i) for i in node.ids) + 8 * rows
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(json.dumps({"rows": rows, "kept": kept, "peak_kib": int(status.split()[0])}))
"""


def bench_node_memory(sizes: tuple[int, ...] = (100_000, 1_000_000)) -> None:
    """Peak memory of one party's process from its table to its float32 design (issue 36).

    In a fresh interpreter per source: read the bureau's table (CSV or Parquet), preprocess it
    into what training keeps (the float32 design and the IDs), drop the table. Prints the peak
    resident memory over an interpreter with the imports alone, what is kept, and their ratio:
    the headroom a reader that streams its table in chunks would win.
    """
    from credit_data.sources import write_party_tables
    from credit_data.synthetic import synthetic_frames

    def peak(spec: dict, party: str) -> dict:
        done = subprocess.run([sys.executable, "-c", _NODE_PEAK, json.dumps(spec), party],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    imports = peak({"path": "none.csv"}, "")["peak_kib"] / 1024
    print(f"node_memory: an interpreter with the imports alone peaks at {imports:.0f} MiB")
    print("node_memory: | bureau rows | source | peak MiB over imports | kept MiB (design, "
          "IDs) | peak / kept | peak bytes per row |")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            frames = {"bureau": synthetic_frames(n, seed=0)["bureau"]}
            for kind in ("csv", "parquet"):
                source = write_party_tables(frames, Path(tmp) / f"{n}-{kind}", kind)["bureau"]
                spec = {"path": source.path, "categorical": list(source.categorical),
                        "id_column": "customer_id"}
                found = peak(spec, "bureau")
                over, kept = found["peak_kib"] / 1024 - imports, found["kept"] / 2**20
                print(f"node_memory: | {found['rows']:,} | {kind} | {over:.0f} | {kept:.0f} | "
                      f"{over / kept:.1f}x | {over * 2**20 / found['rows']:.0f} |", flush=True)
            del frames


def bench_unmatched() -> None:
    """AUC kept by training on applicants a party does not know, against intersection-only.

    FATE-style vertical training keeps only applicants every party knows. Measured on the
    centralized split model (which vertical federation matches within 0.01): one trained on every
    applicant, one on the intersection only; both scored on the test applicants every party knows.
    """
    settings = DataSettings()
    design = build_design(generate(settings.n_customers, seed=0), settings, seed=0)
    everyone = design.blocks["bureau"].present & design.blocks["social"].present
    aucs = {}
    for name, keep in (("all applicants", np.ones(len(design.ids), bool)),
                       ("intersection only", everyone)):
        train, val = (design.split == TRAIN) & keep, (design.split == VAL) & keep
        seed_everything(0)
        model = build_model(ModelSettings(kind=ModelKind.split_mlp, hidden=(32,)),
                            design.widths(PARTIES))
        x = design.matrix(PARTIES)
        fit(model, x[train], design.y[train], x[val], design.y[val], TrainSettings(), seed=0)
        test = (design.split == TEST) & everyone
        aucs[name] = roc_auc_score(design.y[test], predict_proba(model, x[test]))
        print(f"unmatched: trained on {name:17s} ({int(train.sum()):,} rows): test AUC on the "
              f"intersection {aucs[name]:.4f}")
    covered = everyone[design.split == TEST].mean()
    print(f"unmatched: AUC gained by keeping applicants a party does not know "
          f"{aucs['all applicants'] - aucs['intersection only']:+.4f}; intersection-only training "
          f"cannot score {1 - covered:.1%} of the test applicants at all")


def bench_embedding_noise() -> None:
    """Embedding noise at epsilon 1, 3 and 8 next to the lender alone and no noise (50,000)."""
    settings = vertical_settings(30, n=50_000)
    settings = dataclasses.replace(settings, train=TrainSettings())
    lender = dataclasses.replace(settings, model=ModelSettings(), federation=FederationSettings(
        mode=Mode.local, parties=("lender",)))
    alone = run_baseline(lender).metrics["test"]["auc"]
    print(f"embedding noise: lender alone {alone:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        for eps in (None, 1.0, 3.0, 8.0):
            s = dataclasses.replace(settings, privacy=PrivacySettings(embedding_epsilon=eps,
                                                                      embedding_releases=1))
            auc = run_vertical(s, Path(tmp) / f"eps{eps}").metrics["test"]["auc"]
            label = "no noise" if eps is None else f"epsilon {eps:g}"
            print(f"embedding noise: {label:>10s}: test AUC {auc:.4f} (lender alone "
                  f"{alone:.4f}; {auc - alone:+.4f})")


def bench_inversion(n: int = 20_000, epochs: int = 5,
                    widths: tuple[int, ...] = (1, 2, 4, 8, 16),
                    epsilons: tuple[float, ...] = (1.0, 8.0)) -> None:
    """Show what a partner gives for what it gets: inversion R^2 next to AUC and lift.

    Vertical runs on ``n`` synthetic customers: without privacy at each embedding width
    (``model.embedding_dim``; width 1 is a one-number partial score per party), then with
    embedding noise at each epsilon (width 8, one release). Per passive party: the mean held-out
    R^2 of the audit's decoder (the lender knowing half the customers' columns) and the party's
    lift (test AUC minus the AUC with its embeddings masked). Ratio measured in the same run:
    the audit's time over the run's.
    """
    base = vertical_settings(epochs, n=n)
    lender = dataclasses.replace(base, model=ModelSettings(), federation=FederationSettings(
        mode=Mode.local, parties=("lender",)))
    alone = run_baseline(lender).metrics["test"]["auc"]
    runs = [(f"width {w}", dataclasses.replace(base, model=dataclasses.replace(
        base.model, embedding_dim=w))) for w in widths]
    runs += [(f"width 8, noise eps {eps:g}", dataclasses.replace(base, privacy=PrivacySettings(
        embedding_epsilon=eps, embedding_releases=1))) for eps in epsilons]
    print(f"inversion: {n:,} synthetic customers, {epochs} epochs; the lender alone: test AUC "
          f"{alone:.4f}")
    print("| run | test AUC | bureau mean R^2 | social mean R^2 | bureau lift | social lift | "
          "audit s / run s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, settings) in enumerate(runs):
            settings = dataclasses.replace(settings, federation=dataclasses.replace(
                settings.federation, key_dir=str(Path(tmp) / "keys")))
            start = time.perf_counter()
            outcome = run_vertical(settings, Path(tmp) / f"run{k}")
            run_s = time.perf_counter() - start
            start = time.perf_counter()
            r2 = inversion_attack(outcome)
            audit_s = time.perf_counter() - start
            lift = outcome.metrics["party_lift"]
            print(f"| {name} | {outcome.metrics['test']['auc']:.4f} | "
                  f"{r2['bureau']['mean_r2']:.3f} | {r2['social']['mean_r2']:.3f} | "
                  f"{lift['bureau']:+.4f} | {lift['social']:+.4f} | "
                  f"{audit_s:.1f} / {run_s:.0f} = {audit_s / run_s:.3f} |", flush=True)


def bench_vertical_1m(epochs: int = 3) -> None:
    """Vertical federation on 1,000,000 customers end to end: wall time, peak memory.

    Three epochs: alignment alone takes minutes at this size, and the time per epoch is printed
    so a reader can extend it to any number of epochs.
    """
    settings = vertical_settings(epochs, n=1_000_000)
    settings = dataclasses.replace(settings, federation=dataclasses.replace(
        settings.federation, round_timeout=3600.0))  # blinding 2.4M IDs takes minutes
    from experiments.scale_bench import ProcessPeaks

    peak = ProcessPeaks()
    with tempfile.TemporaryDirectory() as tmp, peak:
        start = time.perf_counter()
        outcome = run_vertical(settings, Path(tmp) / "vertical")
        wall = time.perf_counter() - start
    f = outcome.federation or {}
    align = sum(v for k, v in f["seconds_by_message"].items() if "psi" in k)
    train = f["seconds_by_message"].get("train.embed", 0) + f["seconds_by_message"].get(
        "train.head", 0)
    print(f"vertical 1M: 1,000,000 customers, {f['epochs']} epochs, wall time {wall:.0f} s "
          f"(alignment {align:.0f} s, training exchanges {train / max(f['epochs'], 1):.0f} s "
          f"per epoch), peak memory {peak.total / 2**30:.1f} GiB (every process)")
    print(f"vertical 1M: wall time / 10 min target {wall / 600:.2f} "
          f"({'met' if wall < 600 else 'MISSED'}); test AUC {outcome.metrics['test']['auc']:.4f}")


def bench_vertical_10m() -> None:
    """1,000,000 applicants, 10,000,000-row bureau and platform tables from Parquet (issue 36).

    In :mod:`experiments.scale_bench`: a cold and a cached run's wall time and peak memory.
    """
    from experiments.scale_bench import bench_vertical_10m as run

    run()


def _sweep(preset: str) -> None:
    """Run a preset sweep as a researcher does (a subprocess), then the compare command.

    Prints the sweep's wall time against the 15-minute target, and the mean job time over the
    time of one lone run of the same settings (the sweep's own overhead), both measured here.
    """
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="credit-fl-sweep-") as tmp:
        out = Path(tmp) / "multirun"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.run", "-m", f"experiment={preset}",
                        f"hydra.sweep.dir={out}"], cwd=repo, check=True,
                       stdout=subprocess.DEVNULL)
        sweep_s = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.compare", str(out)], cwd=repo,
                       check=True, stdout=subprocess.DEVNULL)
        compare_s = time.perf_counter() - start
        jobs = sorted(out.glob("*/results.json"))
        failed = sorted(out.glob("*/failed.json"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "experiments.run", f"experiment={preset}",
                        "references=false", f"hydra.run.dir={Path(tmp) / 'lone'}"], cwd=repo,
                       check=True, stdout=subprocess.DEVNULL)
        lone_s = time.perf_counter() - start
        print((out / "summary.md").read_text())
        wrote = [p.name for p in (out / "summary.csv", out / "summary.md",
                                  out / "privacy_utility.png") if p.exists()]
    print(f"sweep {preset}: {len(jobs)} jobs finished, {len(failed)} failed, in {sweep_s:.0f} s "
          f"(target under 900 s: {'met' if sweep_s < 900 else 'MISSED'}, "
          f"{sweep_s / 900:.2f} of the budget); compare {compare_s:.1f} s wrote {wrote}")
    print(f"sweep {preset}: mean {sweep_s / max(len(jobs), 1):.0f} s per job (references "
          f"included) against one lone run of {lone_s:.0f} s: "
          f"{sweep_s / max(len(jobs), 1) / lone_s:.2f}x")


def bench_sweep_vertical() -> None:
    """``experiment=privacy_sweep_vertical``: 5 epsilons x 2 seeds on 20,000 customers."""
    _sweep("privacy_sweep_vertical")


def bench_sweep_horizontal() -> None:
    """``experiment=privacy_sweep_horizontal``: 5 epsilons x 2 seeds on 20,000 customers."""
    _sweep("privacy_sweep_horizontal")


def bench_deployment(n: int = 100_000) -> None:
    """Time one vertical run (default settings) on Flower's deployment engine and in simulation.

    Deployment: a SuperLink with TLS and node authentication and three nodes on loopback
    (``experiments.deploy``); its start (certificates, keys, each party's file, processes) is
    timed apart from the run.

    Both start without blinded sets: a deployed node keeps its PSI cache in its own state
    directory (new here), so the simulation gets a new cache in this run's directory, not the
    machine's ``outputs/.psi-cache`` (whose state would make the ratio depend on earlier runs).
    """
    from experiments.deploy import federation as deploy

    overrides = [f"data.n_customers={n}", "verbose=false"]
    with tempfile.TemporaryDirectory() as tmp:
        settings, _ = deploy.compose_settings(
            [*overrides, f"federation.psi_cache={Path(tmp) / 'simulation-psi'}"])
        start = time.perf_counter()
        simulated = run_vertical(settings, Path(tmp) / "simulation")
        sim_wall = time.perf_counter() - start
        start = time.perf_counter()
        with deploy.local_federation(Path(tmp) / "federation", overrides) as fed:
            up_wall = time.perf_counter() - start
            start = time.perf_counter()
            deployed = deploy.run(Path(fed.directory))
            dep_wall = time.perf_counter() - start
    sim_f, dep_f = simulated.federation or {}, deployed["federation"]
    rounds = int(dep_f["message_rounds"])
    sim_msgs = sum(sim_f["seconds_by_message"].values())
    dep_msgs = sum(dep_f["seconds_by_message"].values())
    print(f"deployment: vertical, {n:,} customers, default settings; {dep_f['epochs']} epochs, "
          f"{rounds} message rounds (simulation: {sim_f['epochs']} epochs)")
    print(f"deployment: simulation {sim_wall:.1f} s, deployment {dep_wall:.1f} s "
          f"(+ {up_wall:.1f} s to start the SuperLink and nodes); ratio deployment / simulation "
          f"{dep_wall / sim_wall:.2f}x (target <= 1.3x)")
    print(f"deployment: one message exchange costs {dep_msgs / rounds:.3f} s in deployment and "
          f"{sim_msgs / rounds:.3f} s in simulation, compute included: "
          f"{(dep_msgs - sim_msgs) / rounds:.3f} s more per exchange")
    for what, kinds in (("alignment", lambda k: "psi" in k),
                        ("training", lambda k: "psi" not in k)):
        sim_s = sum(v for k, v in sim_f["seconds_by_message"].items() if kinds(k))
        dep_s = sum(v for k, v in dep_f["seconds_by_message"].items() if kinds(k))
        print(f"deployment: {what} messages {dep_s:.1f} s deployed, {sim_s:.1f} s simulated "
              f"({dep_s / max(sim_s, 1e-9):.2f}x)")
    dep_c, sim_c = (sum(f["compute_seconds"].values()) for f in (dep_f, sim_f))
    print(f"deployment: compute the nodes report for training, {dep_c:.1f} s deployed, "
          f"{sim_c:.1f} s simulated")
    print(f"deployment: test AUC simulation {simulated.metrics['test']['auc']:.4f}, deployment "
          f"{deployed['metrics']['test']['auc']:.4f}")


def bench_score(n: int = 100_000, applicants: int = 10_000, requests: int = 20) -> None:
    """Score new applicants with a vertical model's bundles, in simulation.

    A model is trained on ``n`` synthetic customers (2 epochs, no DP: the model's quality is not
    what is measured). Then ``applicants`` new applicants are scored against the parties' full
    tables, cold (every party blinds its whole ID set) and cached (the sets kept from the cold
    request); then one applicant and 100, ``requests`` times each, with the sets cached.
    Targets: cached under 15 s end to end, and under a third of cold.
    """
    from credit_fl.simulation import share_engine_across_runs
    from experiments.score import score_run

    share_engine_across_runs()  # Ray stays up between requests, as a running service keeps it
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = root / "run"
        trained, _ = cli_run(["federation=vertical", "privacy=off", f"data.n_customers={n}",
                               "train.epochs=2", f"federation.psi_cache={root / 'train-cache'}"],
                              run_dir)
        print(f"score: trained a vertical model on {n:,} customers in {trained:.1f} s")
        population = generate(n, seed=0)
        new = root / "new"
        new.mkdir()
        data = write_tables(population, new, applicants)
        walls = {}
        for label in ("cold", "cached"):
            start = time.perf_counter()
            _, scoring = score_run(run_dir, [*data, f"federation.psi_cache={root / 'cache'}",
                                             f"scoring.out={root / label}"])
            walls[label] = time.perf_counter() - start
            seconds = scoring["seconds"]
            cached = {p: a["setup_cached"] for p, a in scoring["alignment"].items()}
            print(f"score: {applicants:,} applicants, {label:<6} {walls[label]:6.1f} s end to "
                  f"end (requests {seconds['total']:.1f} s: alignment "
                  f"{seconds.get('alignment', 0):.1f}, embeddings "
                  f"{seconds.get('embeddings', 0):.1f}, score {seconds['score']:.1f}); "
                  f"sets from cache {cached}")
        ratio = walls["cached"] / walls["cold"]
        print(f"score: cached / cold {ratio:.2f} (target < 0.33: "
              f"{'met' if ratio < 1 / 3 else 'MISSED'}); cached under 15 s: "
              f"{'met' if walls['cached'] < 15 else 'MISSED'}")
        for size in (1, 100):
            small = root / f"new-{size}"
            small.mkdir()
            data = write_tables(population, small, size)
            times, rounds = [], 0
            for i in range(requests):
                start = time.perf_counter()
                _, scoring = score_run(run_dir, [*data, f"federation.psi_cache={root / 'cache'}",
                                                 f"scoring.out={root / f'{size}-{i}'}"])
                times.append(time.perf_counter() - start)
                rounds = scoring["message_rounds"]
            print(f"score: {size:>3} applicant(s) in simulation, {requests} requests: median "
                  f"{np.median(times):.2f} s, 95th percentile {np.percentile(times, 95):.2f} s; "
                  f"{rounds} message rounds")
    _score_deployed(n, requests)


def _score_deployed(n: int, requests: int) -> None:
    """One applicant and 100 on a running loopback deployment, ``requests`` times each.

    Two ways, measured in the same run: a run per request (``deploy score``: a new ``flwr
    run``, five message rounds) and the scoring service (``deploy serve``, then a request
    handed to its running ServerApp: the lender's reply to the message waiting for it and four
    rounds). Each time is ``deploy score``'s call, end to end.
    """
    from experiments.deploy import federation as deploy
    from experiments.deploy import scoring_service as served

    overrides = [f"data.n_customers={n}", "privacy=off", "train.epochs=2", "verbose=false"]
    with tempfile.TemporaryDirectory() as tmp, \
            deploy.local_federation(Path(tmp) / "federation", overrides) as fed:
        results = deploy.run(fed.root)
        run_dir = Path(results["federation"]["server_audit_log"]).parents[1]
        lender = generate(n, seed=0).tables["lender"].frame
        medians: dict[tuple[str, int], float] = {}
        for size in (1, 100):
            name = f"applicants-{size}.csv"
            lender.iloc[:size].rename_axis("customer_id").to_csv(fed.applicants_dir() / name)
            medians["run", size] = _time_run_per_request(fed, run_dir, name, size, requests)
        start = time.perf_counter()
        status = served.serve(fed.root, run_dir)
        print(f"score: the scoring service started in {time.perf_counter() - start:.1f} s "
              f"(each party sealed its tags of {status['tables']} customers)")
        for size in (1, 100):
            medians["service", size] = _time_service(fed, run_dir, size, requests,
                                                     medians["run", size])
        served.stop(fed.root)


def _time_run_per_request(fed: Federation, run_dir: Path, name: str, size: int,
                          requests: int) -> float:
    """Time ``deploy score`` of the applicants' file ``name``; print and return the median.

    The first request builds each party's cached set and is left out.
    """
    from experiments.deploy import federation as deploy

    times, rounds = [], 0
    by_kind: dict[str, list[float]] = {}
    for _ in range(requests + 1):  # the first builds each party's cached set
        start = time.perf_counter()
        _, scoring = deploy.score(fed.root, run_dir, [f"scoring.applicants={name}"])
        times.append(time.perf_counter() - start)
        rounds = scoring["message_rounds"]
        for kind, seconds in scoring["seconds_by_message"].items():
            by_kind.setdefault(kind, []).append(seconds)
    times = times[1:]
    cost = ", ".join(f"{k.removeprefix('query.')} {np.median(v[1:]):.2f} s"
                     for k, v in by_kind.items())
    print(f"score: {size:>3} applicant(s) in a loopback deployment, a run per request, "
          f"{requests} requests (sets cached): median {np.median(times):.2f} s, 95th "
          f"percentile {np.percentile(times, 95):.2f} s; {rounds} message rounds, "
          f"median per round: {cost}")
    return float(np.median(times))


def _time_service(fed: Federation, run_dir: Path, size: int, requests: int,
                  run_median: float) -> float:
    """Time requests to the running scoring service; print and return the median."""
    from experiments.deploy import scoring_service as served

    times, waits = [], []
    per_round: dict[str, list[float]] = {}
    for _ in range(requests):
        start = time.perf_counter()
        _, scoring = served.score(fed.root, run_dir,
                                  [f"scoring.applicants=applicants-{size}.csv"])
        times.append(time.perf_counter() - start)
        s = scoring["seconds"]
        serve_rounds = [k for k in s if k.startswith("serve_")]
        waits.append(s["request"] - sum(s[k] for k in serve_rounds))
        for kind in serve_rounds:
            per_round.setdefault(kind, []).append(s[kind])
    median = float(np.median(times))
    cost = ", ".join(f"{k} {np.median(v):.2f} s" for k, v in per_round.items())
    print(f"score: {size:>3} applicant(s) in a loopback deployment, scoring service, "
          f"{requests} requests: median {np.median(times):.2f} s, 95th percentile "
          f"{np.percentile(times, 95):.2f} s (target median < 3 s: "
          f"{'met' if np.median(times) < 3 else 'MISSED'}); "
          f"{served.MESSAGE_ROUNDS} message rounds and the "
          f"lender's reply to the waiting one ({np.median(waits):.2f} s, with the "
          f"inbox and the files); median per round: {cost}; service / run per request "
          f"{median / run_median:.2f}")
    return median


def bench_blacklist(list_size: int = 1_000_000, applicants: int = 10_000) -> None:
    """Look up 10,000 applicants against a 1,000,000-ID list, cold and cached; then fraud AP.

    Cold: the holder blinds and compresses its whole list; cached: it reads them from its disk
    (:class:`federation.alignment.SetupCache`). Both time the whole lookup: the lender blinds
    its applicants, the holder answers, the lender reads its hits. Then vertical fraud
    detection on 20,000 synthetic customers, without and with two holders' lists.
    """
    from federation.blacklist import ListHolder, listed, lookup_request

    rng = np.random.default_rng(0)
    numbers = rng.choice(10 ** 9, size=list_size + applicants, replace=False)
    the_list = [f"C{n}" for n in numbers[:list_size]]
    asking = [f"C{n}" for n in numbers[list_size:]]
    on_list = set(rng.choice(the_list, applicants // 100, replace=False))
    asking[: len(on_list)] = sorted(on_list)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for kind in ("cold", "cached"):
            start = time.perf_counter()
            request, key = lookup_request(asking, reveal=True)
            holder = ListHolder("consortium", the_list, cache_dir=Path(tmp))
            setup, response = holder.answer(request, asked=len(asking), lender="lender")
            hits = np.asarray(listed(key, len(asking), setup, response, reveal=True))
            seconds[kind] = time.perf_counter() - start
            assert holder.setup_cached is (kind == "cached")
            found = {a for a, h in zip(asking, hits, strict=True) if h}
            assert found == on_list, f"{len(found ^ on_list)} lookups wrong"
            print(f"blacklist: {applicants:,} applicants against a {list_size:,}-ID list, {kind}: "
                  f"{seconds[kind]:.2f} s ({len(found):,} listed, all correct)")
    print(f"blacklist: cached {seconds['cached']:.2f} s (target under 10 s); cached over cold "
          f"{seconds['cached'] / seconds['cold']:.3f}")
    fraud = ["federation=vertical", "privacy=off", "data.label=fraud",
             "data.n_customers=20000", "train.epochs=6"]
    ap = {}
    for name, extra in {"without lists": [],
                        "with lists": ["blacklists.holders=[consortium,telco]"]}.items():
        with tempfile.TemporaryDirectory() as tmp:
            wall, results = cli_run(fraud + extra, Path(tmp) / "run")
        ap[name] = results["metrics"]["test"]["rare_label"]["average_precision"]
        print(f"blacklist: vertical fraud detection {name}: average precision {ap[name]:.4f}, "
              f"AUC {results['metrics']['test']['auc']:.4f} ({wall:.1f} s)")
    print(f"blacklist: average precision with the lists over without "
          f"{ap['with lists'] / ap['without lists']:.3f}")


def bench_privacy() -> None:
    """Compare the default private runs with their non-private twins (100,000 customers).

    Vertical: label DP + DP-SGD at epsilon 3 each (the default run) against ``privacy=off``;
    horizontal: DP-SGD at epsilon 3 per lender against no DP. Targets: within 0.03 AUC. Every
    mechanism is in: secret noise, the noisy summaries behind the preprocessing and the shared
    schema, no training loss sent.
    """
    runs = {"vertical, no DP": ["privacy=off"], "vertical, label DP + DP-SGD eps 3": [],
            "horizontal, no DP": ["federation=horizontal"],
            "horizontal, DP-SGD eps 3": ["federation=horizontal", "privacy=dpsgd",
                                         "privacy.target_epsilon=3"]}
    aucs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, overrides) in enumerate(runs.items()):
            wall, r = cli_run(overrides, Path(tmp) / f"run{k}")
            aucs[name] = r["metrics"]["test"]["auc"]
            eps = r["privacy"]["epsilon"] if r["privacy"] else None
            print(f"privacy: {name:36s} test AUC {aucs[name]:.4f}"
                  + (f", epsilon {eps:.3f}" if eps is not None else "") + f" ({wall:.0f} s)")
    for mode, plain, private in (
            ("vertical", "vertical, no DP", "vertical, label DP + DP-SGD eps 3"),
            ("horizontal", "horizontal, no DP", "horizontal, DP-SGD eps 3")):
        gap = aucs[plain] - aucs[private]
        print(f"privacy: {mode} utility cost {gap:.4f} AUC (target <= 0.03: "
              f"{'met' if gap <= 0.03 else 'NOT met'})")


def _scored_rows(customers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and true default probabilities (a calibrated model's scores) of the applicants."""
    population = generate(customers, seed=seed)
    lender = population.tables["lender"]
    assert lender.labels is not None and population.truth is not None
    y = lender.labels["default_12m"].to_numpy().astype(np.int64)
    return y, population.truth["default_12m"].reindex(lender.frame.index).to_numpy()


def bench_summaries(seeds: int = 5) -> None:
    """Measure what a score summary's bins cost in AUC and give away (issue 30, finding 9).

    AUC of a summary's bins (one node's; five skewed lenders' pooled) against the exact AUC on
    1,000 and 100,000 scored rows; and the attack's accuracy gain over the score alone (a
    reader of one row's score and the summary guesses the label from the row's bin) on the
    test split of 1,000- and 100,000-customer runs, for the release and the old 10,000 bins.
    """
    from credit_data.partition import dirichlet_partition
    from federation.protocol import pooled_auc
    from models.metrics import ScoreSummary, histogram_auc, rank_auc
    from models.summary_attack import bin_shares, equal_bin_shares, label_read_gain

    for rows in (1_000, 100_000):
        single, pooled = [], []
        for seed in range(seeds):
            y, p = _scored_rows(rows, seed)
            owner = dirichlet_partition(y, 5, 0.5, seed)
            exact = rank_auc(p, y)
            s = ScoreSummary.of(y, p)
            single.append(abs(histogram_auc(s.positives, s.negatives) - exact))
            pooled.append(abs(pooled_auc([ScoreSummary.of(y[owner == k], p[owner == k])
                                          for k in range(5)]) - exact))
        print(f"summaries: {rows:>7,} rows: AUC of one node's bins off by at most "
              f"{max(single):.5f}, of 5 lenders' bins pooled by at most {max(pooled):.5f} "
              f"({seeds} seeds; a node's own AUC is exact)")
    for customers in (1_000, 100_000):
        for horizontal in (False, True):
            gains: dict[str, list[float]] = {"release": [], "old 10,000 bins": []}
            for seed in range(seeds):
                y, p = _scored_rows(customers, seed)
                test = np.random.default_rng(seed).random(len(y)) < 0.15
                y, p = y[test], p[test]
                owner = (dirichlet_partition(y, 5, 0.5, seed) if horizontal
                         else np.zeros(len(y), dtype=np.int64))
                parts = [owner == k for k in np.unique(owner)]
                release = [bin_shares(ScoreSummary.of(y[m], p[m]), p[m]) for m in parts]
                old = [equal_bin_shares(y[m], p[m]) for m in parts]
                for name, shares in (("release", release), ("old 10,000 bins", old)):
                    bins, score = label_read_gain([(s, p[m], y[m])
                                                   for s, m in zip(shares, parts, strict=True)])
                    gains[name].append(bins - score)
            print(f"summaries: {customers:>7,} customers, "
                  f"{'horizontal' if horizontal else 'vertical'}: the bin adds at most "
                  + ", ".join(f"{max(v):+.4f} ({k})" for k, v in gains.items())
                  + " to the score's accuracy (target at most +0.02 for the release)")


def bench_imports(repeats: int = 3) -> None:
    """Import time of each deployed app in a fresh interpreter (best of 3); target under 3 s.

    Printed next to the import of Flower alone, measured the same way in the same run.
    """
    modules = ["flwr.clientapp", "deployment.client_app", "deployment.server_app",
               "deployment.node"]
    heavy = ("hydra", "omegaconf", "ray", "matplotlib", "experiments")
    for module in modules:
        times, loaded = [], ""
        for _ in range(repeats):
            code = (f"import sys, time; t = time.perf_counter(); import {module}; "
                    f"print(time.perf_counter() - t); "
                    f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True, cwd=Path(__file__).resolve().parents[1])
            seconds, loaded = done.stdout.splitlines()[:2] if "\n" in done.stdout else (
                done.stdout.strip(), "")
            times.append(float(seconds))
        print(f"imports: {module:24s} {min(times):.2f} s (best of {repeats}; target < 3 s)"
              f"{'; loads ' + loaded if loaded else ''}")


def bench_engines(sizes: tuple[int, ...] = (1_000, 100_000)) -> None:
    """Time the default run (vertical, label DP + DP-SGD) on each engine via ``credit_fl.train``.

    One run per engine and size, one after the other: wall time from the call to the trained
    model (the engine's start included, as a notebook's first run pays it) and training time.
    """
    import credit_fl

    for n in sizes:
        walls = {}
        for engine in ("in_process", "simulation"):
            settings = credit_fl.settings(f"data.n_customers={n}", "verbose=false")
            start = time.perf_counter()
            model = credit_fl.train(settings, engine=engine)
            walls[engine] = time.perf_counter() - start
            timing = model.results["timing"]
            print(f"engines: {n:>7,} customers, {engine:10s} wall {walls[engine]:7.1f} s, "
                  f"training {timing['train_s']:7.1f} s, {model.results['federation']['epochs']}"
                  f" epochs, test AUC {model.metrics['test']['auc']:.4f}")
        print(f"engines: {n:>7,} customers, in_process / simulation wall time "
              f"{walls['in_process'] / walls['simulation']:.2f}x")


def bench_audit(n: int = 20_000, canaries: int = 1_000, reference_models: int = 4,
                epsilons: tuple[float | None, ...] = (1.0, 3.0, 8.0, None),
                figure: Path | None = Path("docs/images/privacy-audit.png")) -> None:
    """Set the audits against the accounted epsilon (issue 35), vertical, one run each.

    One default vertical run (label DP + DP-SGD, both at ``privacy.target_epsilon``) per epsilon
    and one without DP (``None``), each with ``audit.canaries`` and ``audit.reference_models``:
    the run's accounted epsilon (its headline, the lender's total); the lender's DP-SGD epsilon
    as the twin accounts it and the bound its canaries prove; the same for label DP; RMIA's and
    the loss-threshold attack's TPR at 0.1% FPR on the run's final model; the twin's time and
    RMIA's over the run's training time (the twin's target: at most one extra training, ratio
    <= 1). ``figure``: where the two-panel plot goes (None: none).
    """
    from experiments.attack_figure import write_attack_figure

    print(f"audit: {n:,} customers, {canaries:,} canaries, {reference_models} RMIA reference "
          "models, vertical, seed 0")
    print("| target epsilon | run accounted | DP-SGD accounted (twin) | one-run bound (right / "
          "guesses) | label DP | label bound | RMIA TPR at 0.1% FPR [95%] | RMIA AUC [95%] | "
          "loss-threshold TPR at 0.1% FPR [95%] | test AUC | twin s / train s | "
          "RMIA s / train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, eps in enumerate(epsilons):
            privacy = ["privacy=off"] if eps is None else [f"privacy.target_epsilon={eps:g}"]
            _, r = cli_run([f"data.n_customers={n}", f"audit.canaries={canaries}",
                             f"audit.reference_models={reference_models}", *privacy],
                            Path(tmp) / f"run{k}")
            one, mia, rmia = (r["audit"]["one_run"], r["audit"]["membership"],
                              r["audit"]["rmia"])
            label = one.get("label")
            rows.append({"target_epsilon": eps, "dpsgd_accounted": one["accounted_epsilon"],
                         "label_accounted": label["accounted_epsilon"] if label else None,
                         "one_run_bound": one["epsilon_lower_bound"],
                         "label_bound": label["epsilon_lower_bound"] if label else None,
                         "rmia_tpr": rmia["tpr_at_fpr"]["0.001"],
                         "loss_tpr": mia["tpr_at_fpr"]["0.001"]})
            print(_audit_row(eps, r), flush=True)
    print(f"audit: {len(rows)} runs in {time.perf_counter() - start:.0f} s")
    if figure is not None:
        write_attack_figure(rows, figure, f"Privacy audits, vertical, {n:,} synthetic customers "
                                         f"({canaries:,} canaries, {reference_models} RMIA "
                                         "reference models)")
        print(f"audit: wrote {figure}")



def _tpr(low: dict) -> str:
    """Return a TPR with its interval, as the audit table prints it."""
    return f"{low['tpr']:.4f} [{low['tpr_interval'][0]:.4f}, {low['tpr_interval'][1]:.4f}]"


def _claim(value: float | None) -> str:
    """Return an accounted epsilon as the audit table prints it (``none`` without one)."""
    return "none" if value is None else f"{value:.3f}"


def _audit_row(eps: float | None, r: dict[str, Any]) -> str:
    """Return one run's row of the audit table (``bench_audit``) from its results.json."""
    one, mia, rmia = r["audit"]["one_run"], r["audit"]["membership"], r["audit"]["rmia"]
    label = one.get("label")
    train_s = r["timing"]["train_s"]
    return (f"| {'no DP' if eps is None else f'{eps:g}'} | "
            f"{_claim((r.get('privacy') or {}).get('epsilon'))} | "
            f"{_claim(one['accounted_epsilon'])} | "
            f"{one['epsilon_lower_bound']:.3f} ({one['correct']} / {one['guesses']}) | "
            + (f"{label['accounted_epsilon']:.3f} | {label['epsilon_lower_bound']:.3f} | "
               if label else "off | - | ")
            + f"{_tpr(rmia['tpr_at_fpr']['0.001'])} | {rmia['attack_auc']:.4f} "
            f"[{rmia['attack_auc_interval'][0]:.4f}, {rmia['attack_auc_interval'][1]:.4f}]"
            f" | {_tpr(mia['tpr_at_fpr']['0.001'])} | {r['metrics']['test']['auc']:.4f} | "
            f"{one['twin']['seconds']:.1f} / {train_s:.1f} = "
            f"{one['twin']['seconds'] / train_s:.2f} | {rmia['seconds']:.1f} / "
            f"{train_s:.1f} = {rmia['seconds'] / train_s:.2f} |")

def bench_rmia(n: int = 5_000, epochs: int = 40, reference_models: int = 4) -> None:
    """RMIA against the loss-threshold attack on one deliberately overfit model (issue 35).

    A centralized model on every party's columns, ``epochs`` epochs without early stopping;
    RMIA with reference models of 3 epochs (the default, cheap) and of as many epochs as the
    target; the loss-threshold attack on the same scores. Prints each attack's TPR at 0.1% and
    1% FPR (Clopper-Pearson) and RMIA's over the loss attack's at 1% FPR (same run, same rows).
    """
    from credit_fl.attacks import attack_outcome

    settings = RunSettings(
        verbose=False, data=DataSettings(n_customers=n),
        federation=FederationSettings(mode=Mode.centralized,
                                      parties=("lender", "bureau", "social")),
        train=TrainSettings(epochs=epochs, min_epochs=epochs, early_stopping=False))
    outcome = run_baseline(settings)
    print(f"rmia: {n:,} customers, centralized, {epochs} epochs without early stopping, test AUC "
          f"{outcome.metrics['test']['auc']:.4f}, {reference_models} reference models")

    def tpr(low: dict) -> str:
        return f"{low['tpr']:.4f} [{low['tpr_interval'][0]:.4f}, {low['tpr_interval'][1]:.4f}]"

    print("| attack | AUC | TPR at 0.1% FPR [95%] | TPR at 1% FPR [95%] | over loss at 1% | s |")
    print("|---|---|---|---|---|---|")
    for reference_epochs in (3, epochs):
        audit = dataclasses.replace(settings.audit, reference_models=reference_models,
                                    reference_epochs=reference_epochs)
        found = attack_outcome(dataclasses.replace(
            outcome, settings=dataclasses.replace(settings, audit=audit)))
        assert found is not None
        rmia, loss = found["rmia"], found["membership"]
        if reference_epochs == 3:
            print(f"| loss threshold | {loss['attack_auc']:.4f} | "
                  f"{tpr(loss['tpr_at_fpr']['0.001'])} | {tpr(loss['tpr_at_fpr']['0.01'])} | "
                  "1 | - |")
        ratio = rmia["tpr_at_fpr"]["0.01"]["tpr"] / max(loss["tpr_at_fpr"]["0.01"]["tpr"], 1e-9)
        print(f"| RMIA, references of {reference_epochs} epochs (a = {rmia['offline_a']:g}) | "
              f"{rmia['attack_auc']:.4f} | {tpr(rmia['tpr_at_fpr']['0.001'])} | "
              f"{tpr(rmia['tpr_at_fpr']['0.01'])} | {ratio:.1f} | {rmia['seconds']:.1f} |",
              flush=True)


def bench_monitor() -> None:
    """Time monitoring and re-rating 100,000 rows against batch scoring (monitor_bench)."""
    from experiments.monitor_bench import bench_monitor as run

    run()


def bench_threads() -> None:
    """Fitting with torch's default threads over one thread (experiments/threads_bench)."""
    from experiments.threads_bench import bench_threads as run

    run()


def bench_explain() -> None:
    """Explaining 10,000 scored applicants over plain scoring (experiments/explain_bench)."""
    from experiments.explain_bench import bench_explain as run

    run()


def bench_psi_memory() -> None:
    """Each PSI step's peak memory, one call against slices (experiments/psi_memory_bench)."""
    from experiments.psi_memory_bench import bench_psi_memory as run

    run()


BENCHMARKS: dict[str, Callable[[], None]] = {
    "engines": bench_engines,
    "synthetic": bench_synthetic,
    "centralized": bench_centralized,
    "horizontal": bench_horizontal,
    "vertical": bench_vertical,
    "vertical_cached": bench_vertical_cached,
    "table_memory": bench_table_memory,
    "local_steps": bench_local_steps,
    "node_memory": bench_node_memory,
    "psi_memory": bench_psi_memory,
    "unmatched": bench_unmatched,
    "embedding_noise": bench_embedding_noise,
    "inversion": bench_inversion,
    "vertical_1m": bench_vertical_1m,
    "vertical_10m": bench_vertical_10m,
    "sweep_vertical": bench_sweep_vertical,
    "sweep_horizontal": bench_sweep_horizontal,
    "deployment": bench_deployment,
    "score": bench_score,
    "explain": bench_explain,
    "blacklist": bench_blacklist,
    "privacy": bench_privacy,
    "summaries": bench_summaries,
    "imports": bench_imports,
    "audit": bench_audit,
    "rmia": bench_rmia,
    "monitor": bench_monitor,
    "threads": bench_threads,
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
