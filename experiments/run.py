"""Run one experiment from the Hydra config: ``python -m experiments.run key=value ...``.

Writes ``results.json``, ``predictions.csv`` and ``report.md`` into Hydra's run directory
(``hydra.run.dir=...`` moves it) and prints the report. In a sweep (``-m``) a job that fails
writes ``failed.json`` (the error, nothing else) into its directory and the sweep goes on;
``python -m experiments.compare <sweep dir>`` lists it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import typing
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from credit_data.errors import ConfigError, CreditFLError
from experiments.audit import audit_outcome
from experiments.baselines import run_baseline
from experiments.config import register, to_settings
from experiments.horizontal import run_horizontal
from experiments.references import references_for
from experiments.report import render_report
from experiments.results import write_atomic, write_run
from experiments.simulation import share_engine_across_runs
from experiments.vertical import run_vertical
from federation.settings import Mode
from privacy.audit import check_audit
from privacy.settings import PrivacyMechanism

log = logging.getLogger("credit_fl")
register()


def execute(cfg: DictConfig, run_dir: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run the configured experiment and write its directory; return results.json's content.

    ``cache_dir`` keeps the references (``references=true``) for the other jobs of a sweep.
    """
    start = time.perf_counter()
    settings = to_settings(cfg)
    log.setLevel(logging.INFO if settings.verbose else logging.WARNING)
    check_audit(settings.audit)
    if settings.federation.mode is Mode.horizontal:
        outcome = run_horizontal(settings, run_dir)
    elif settings.federation.mode is Mode.vertical:
        outcome = run_vertical(settings, run_dir)
    else:
        if settings.privacy.mechanism is not PrivacyMechanism.off:
            raise ConfigError(f"privacy={settings.privacy.mechanism.value} needs a federated "
                              f"mode; federation={settings.federation.mode.value} trains "
                              "without privacy")
        outcome = run_baseline(settings)
    audit = audit_outcome(outcome)
    references = references_for(settings, cache_dir) if settings.references else None
    config = typing.cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    return write_run(run_dir, outcome, time.perf_counter() - start, config, audit, references)


def record_failure(run_dir: Path, exc: BaseException) -> None:
    """Leave ``failed.json`` (and nothing else new) in a sweep job's directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    failure = {"error": str(exc), "type": type(exc).__name__,
               "traceback": traceback.format_exception(exc)}
    write_atomic(run_dir / "failed.json", json.dumps(failure, indent=2) + "\n")


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the test AUC (for sweepers; NaN for a failed sweep job)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = hydra_cfg.mode is RunMode.MULTIRUN
    if sweep:
        share_engine_across_runs()
    try:
        results = execute(cfg, run_dir, Path(hydra_cfg.sweep.dir) / "references"
                          if sweep else None)
    except Exception as exc:
        if not sweep:
            if isinstance(exc, CreditFLError):
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(2)
            raise
        log.error("job %s failed (%s: %s); the sweep goes on", hydra_cfg.job.num,
                  type(exc).__name__, exc)
        print(f"error: job {hydra_cfg.job.num} failed: {exc} (see {run_dir / 'failed.json'})",
              file=sys.stderr)
        record_failure(run_dir, exc)
        return float("nan")
    print(render_report(results))
    print(f"Run directory: {run_dir}")
    return float(results["metrics"]["test"]["auc"])


if __name__ == "__main__":
    main()
