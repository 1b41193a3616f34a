"""Run one configured experiment and write its directory (what ``experiments.run`` calls).

Kept apart from the command line: importing the runners brings in torch, Flower and Ray (about
6 s), and ``experiments.run`` imports this module only once Hydra has checked the config.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from credit_fl.config import from_config
from credit_fl.model import train
from experiments.plots import write_plots
from experiments.tracking import open_tracker
from federation.storage import write_atomic

log = logging.getLogger("credit_fl")


def execute(cfg: DictConfig, run_dir: Path, cache_dir: Path | None = None,
            sweep: str | None = None) -> dict[str, Any]:
    """Run the configured experiment and write its directory; return results.json's content.

    ``cache_dir`` keeps the references (``references=true``) for the other jobs of a sweep;
    ``sweep`` names the sweep (its directory): the MLflow experiment of ``tracking=mlflow``.
    """
    settings = from_config(cfg)  # every check of the mode, as credit_fl.settings runs them
    log.setLevel(logging.INFO if settings.verbose else logging.WARNING)
    tracker = open_tracker(settings.tracking, sweep)  # before training: a bad store fails now
    results = train(settings, run_dir=run_dir, references_cache=cache_dir,
                    figures=write_plots).results
    if tracker is not None:
        tracker.log_run(run_dir)  # what results.json holds, and the files beside it
    return results


def record_failure(run_dir: Path, exc: BaseException) -> None:
    """Leave ``failed.json`` (and nothing else new) in a sweep job's directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    failure = {"error": str(exc), "type": type(exc).__name__,
               "traceback": traceback.format_exception(exc)}
    write_atomic(run_dir / "failed.json", json.dumps(failure, indent=2) + "\n")
