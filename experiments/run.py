"""Run one experiment from the Hydra config: ``python -m experiments.run key=value ...``.

Writes ``results.json``, ``predictions.csv`` and ``report.md`` into Hydra's run directory
(``hydra.run.dir=...`` moves it) and prints the report.
"""

from __future__ import annotations

import logging
import sys
import time
import typing
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from credit_data.errors import ConfigError, CreditFLError
from experiments.baselines import run_baseline
from experiments.config import register, to_settings
from experiments.horizontal import run_horizontal
from experiments.report import render_report
from experiments.results import write_run
from experiments.vertical import run_vertical
from federation.settings import Mode
from privacy.settings import PrivacyMechanism

log = logging.getLogger("credit_fl")
register()


def execute(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run the configured experiment and write its directory; return results.json's content."""
    start = time.perf_counter()
    settings = to_settings(cfg)
    log.setLevel(logging.INFO if settings.verbose else logging.WARNING)
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
    config = typing.cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    return write_run(run_dir, outcome, time.perf_counter() - start, config)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the test AUC (for sweepers)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = execute(cfg, run_dir)
    except CreditFLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(render_report(results))
    print(f"Run directory: {run_dir}")
    return float(results["metrics"]["test"]["auc"])


if __name__ == "__main__":
    main()
