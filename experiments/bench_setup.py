"""What several benchmarks set up alike: settings, a run as a user starts it, CSV tables.

:mod:`experiments.bench` and its sub-benchmarks (``*_bench``) import it; it imports none of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from credit_data.settings import DataSettings
from federation.run_settings import RunSettings
from federation.settings import FederationSettings, Mode
from models.settings import ModelKind, ModelSettings, TrainSettings
from privacy.settings import PrivacySettings


def horizontal_settings(epochs: int, **privacy: object) -> RunSettings:
    """Return a horizontal run of ``epochs`` rounds on the lender's and the bureau's columns."""
    return RunSettings(
        verbose=False,
        federation=FederationSettings(mode=Mode.horizontal, parties=("lender", "bureau"),
                                      rounds=epochs),
        train=TrainSettings(epochs=epochs, patience=epochs + 1),
        privacy=PrivacySettings(**privacy))  # type: ignore[arg-type]


def vertical_settings(epochs: int, n: int = 100_000, **privacy: object) -> RunSettings:
    """Return a vertical split MLP on ``n`` synthetic customers, ``epochs`` epochs."""
    return RunSettings(
        verbose=False, data=DataSettings(n_customers=n),
        model=ModelSettings(kind=ModelKind.split_mlp, hidden=(32,)),
        federation=FederationSettings(mode=Mode.vertical),
        train=TrainSettings(epochs=epochs, patience=epochs + 1),
        privacy=PrivacySettings(**privacy))  # type: ignore[arg-type]


def cli_run(overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    """Run ``python -m experiments.run`` as a user does; return its wall time and results."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.run", *overrides, "verbose=false",
                    f"hydra.run.dir={run_dir}"], cwd=Path(__file__).resolve().parents[1],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, json.loads((run_dir / "results.json").read_text())


def write_tables(population: Any, directory: Path, lender_rows: int | None = None
                  ) -> list[str]:
    """Write each party's table as CSV (the lender's without labels, cut to ``lender_rows``)."""
    overrides = ["data=csv", "data.id_column=id"]
    for party, table in population.tables.items():
        frame = table.frame if party != "lender" or lender_rows is None else \
            table.frame.iloc[:lender_rows]
        path = directory / f"{party}.csv"
        frame.rename_axis("id").to_csv(path)
        overrides += [f"data.parties.{party}.path={path}",
                      f"data.parties.{party}.categorical=[{','.join(table.categorical)}]"]
    return overrides
