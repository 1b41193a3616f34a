"""Run one experiment from the Hydra config: ``python -m experiments.run key=value ...``.

Writes ``results.json``, ``predictions.csv`` and ``report.md`` into Hydra's run directory
(``hydra.run.dir=...`` moves it) and prints the report; a model that explains also scores its
test rows with reasons (``explained/``, the report's "Why applicants were scored as they
were"). In a sweep (``-m``) a job that fails writes ``failed.json`` (the error, nothing else)
into its directory and the sweep goes on; ``python -m experiments.compare <sweep dir>`` lists
it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from credit_data.errors import CreditFLError
from credit_fl.config import register
from experiments.console import quiet_console

log = logging.getLogger("credit_fl")
register()


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the test AUC (for sweepers; NaN for a failed sweep job)."""
    quiet_console()  # library lines, from the imports below on, go to run.log only
    # the runners (torch, Flower, Ray) load only now: a bad key or value fails in a second
    from credit_fl.interrupt import stop_on_signals
    from credit_fl.simulation import share_engine_across_runs
    from experiments.execute import execute, record_failure

    stop_on_signals()  # Ctrl-C and SIGTERM: one line, exit 130 or 143, nothing left running
    quiet_console()  # again: Flower adds a console handler of its own when it is imported
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = hydra_cfg.mode is RunMode.MULTIRUN
    if sweep:
        share_engine_across_runs()
    try:
        results = execute(cfg, run_dir, Path(hydra_cfg.sweep.dir) / "references"
                          if sweep else None, sweep=hydra_cfg.sweep.dir if sweep else None)
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
    if not sweep:  # the test rows' reasons, in the report (experiments/run_explanation.py)
        from experiments.run_explanation import explain_test_rows

        explain_test_rows(run_dir)
    print((run_dir / "report.md").read_text())
    print(f"Run directory: {run_dir}")
    return float(results["metrics"]["test"]["auc"])


if __name__ == "__main__":
    main()
