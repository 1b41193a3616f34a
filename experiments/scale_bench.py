"""Issue 36 at a bureau's scale: ``python experiments/bench.py vertical_10m``.

1,000,000 applicants at the lender; the bureau's and the platform's tables hold about
10,000,000 people each (most of whom never applied), read from Parquet files as partners keep
them. The tables are generated and written in a subprocess of their own (its peak is printed
apart), then the vertical federation runs twice on Ray's simulation (each node reads its own
table in chunks): cold (PSI caches empty) and again on the same tables (cached blinded sets).
Each run's wall time, alignment seconds, and peak resident memory over all its processes and
per process, sampled every half second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

_WRITE = """
import json, sys
from pathlib import Path
from credit_data.settings import SyntheticSettings
from credit_data.sources import write_party_tables
from credit_data.synthetic import synthetic_frames
n, others, directory = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
s = SyntheticSettings()
# people the bureau (the platform) holds who never applied, per applicant: others in all
shape = SyntheticSettings(bureau_non_applicants=max(others / n - s.bureau_coverage, 0.0),
                          social_non_applicants=max(others / n - s.social_coverage, 0.0))
frames = synthetic_frames(n, seed=0, settings=shape)
rows = {p: len(f) for p, f in frames.items()}
sources = write_party_tables(frames, directory)
del frames
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(json.dumps({"rows": rows, "peak_kib": int(status.split()[0]),
                  "sources": {p: [s.path, list(s.categorical)] for p, s in sources.items()}}))
"""


class ProcessPeaks:
    """Sample the resident memory of this process and its children, every half second.

    Keeps the peak of their sum and each process's own peak (by its role: the runner, a Ray
    worker, Ray's services).
    """

    def __enter__(self) -> ProcessPeaks:
        self.total, self.by_process = 0, dict[str, int]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.5):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss = proc.memory_info().rss
                    total += rss
                    role = "runner" if proc.pid == me.pid else proc.name()
                    key = f"{role} ({proc.pid})"
                    self.by_process[key] = max(self.by_process.get(key, 0), rss)
            self.total = max(self.total, total)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def largest(self, count: int = 5) -> str:
        """Return the ``count`` largest peaks per process, in GiB."""
        top = sorted(self.by_process.items(), key=lambda kv: -kv[1])[:count]
        return ", ".join(f"{k} {v / 2**30:.2f}" for k, v in top)


def bench_vertical_10m(applicants: int = 1_000_000, others: int = 10_000_000,
                       epochs: int = 3) -> None:
    """Two vertical runs (cold, then cached) on Parquet tables of ``others`` rows (issue 36).

    Targets: peak memory under 16 GiB over all processes, the second run under 10 minutes.
    """
    from credit_data.settings import DataSettings, PartySource, Source
    from credit_fl.vertical import run_vertical
    from experiments.bench_setup import vertical_settings

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _WRITE, str(applicants), str(others),
                               str(root / "tables")], capture_output=True, text=True, check=True)
        written = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"vertical_10m: generated and wrote {written['rows']} rows as Parquet in "
              f"{time.perf_counter() - start:.0f} s (that process's peak "
              f"{written['peak_kib'] / 2**20:.1f} GiB)", flush=True)
        sources = {p: PartySource(path, categorical=tuple(text), id_column="customer_id")
                   for p, (path, text) in written["sources"].items()}
        base = vertical_settings(epochs, applicants)
        settings = dataclasses.replace(
            base, data=DataSettings(name="bench", source=Source.files, id_column="customer_id",
                                    label="default_12m", parties=sources),
            federation=dataclasses.replace(base.federation, psi_cache=str(root / "psi"),
                                           round_timeout=4 * 3600.0))
        walls = {}
        for label in ("cold", "cached"):
            with ProcessPeaks() as peaks:
                start = time.perf_counter()
                outcome = run_vertical(settings, root / label)
                walls[label] = time.perf_counter() - start
            f = outcome.federation or {}
            seconds = f.get("seconds_by_message", {})
            psi = sum(v for k, v in seconds.items() if "psi" in k)
            print(f"vertical_10m: {label}: wall {walls[label]:.0f} s (alignment {psi:.0f} s, "
                  f"data {outcome.data_seconds:.0f} s, training "
                  f"{outcome.train_seconds - psi:.0f} s), {f.get('epochs')} epochs, "
                  f"peak {peaks.total / 2**30:.2f} GiB over all processes (largest: "
                  f"{peaks.largest()}), test AUC {outcome.metrics['test']['auc']:.4f}",
                  flush=True)
        print(f"vertical_10m: peak under 16 GiB; cached run / 10 minutes "
              f"{walls['cached'] / 600:.2f} (target under 1), cold / cached "
              f"{walls['cold'] / walls['cached']:.2f}x")
