"""Run one configured experiment and write its directory (what ``experiments.run`` calls).

Kept apart from the command line: importing the runners brings in torch, Flower and Ray (about
6 s), and ``experiments.run`` imports this module only once Hydra has checked the config.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from credit_data.errors import ConfigError
from experiments.audit import audit_outcome
from experiments.baselines import run_baseline
from experiments.config import to_settings
from experiments.horizontal import run_horizontal
from experiments.references import references_for
from experiments.results import write_run
from experiments.vertical import run_vertical
from federation.settings import Mode
from federation.storage import write_atomic
from models.settings import check_scorecard
from privacy.settings import PrivacyMechanism, check_audit

log = logging.getLogger("credit_fl")


def execute(cfg: DictConfig, run_dir: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run the configured experiment and write its directory; return results.json's content.

    ``cache_dir`` keeps the references (``references=true``) for the other jobs of a sweep.
    """
    start = time.perf_counter()
    settings = to_settings(cfg)
    log.setLevel(logging.INFO if settings.verbose else logging.WARNING)
    check_audit(settings.audit)
    check_scorecard(settings.scorecard)
    if settings.federation.mode is Mode.horizontal:
        outcome = run_horizontal(settings, run_dir)
    elif settings.federation.mode is Mode.vertical:
        outcome = run_vertical(settings, run_dir)
    else:
        if settings.privacy.mechanism is not PrivacyMechanism.off:
            raise ConfigError(f"privacy={settings.privacy.mechanism.value} needs a federated "
                              f"mode; federation={settings.federation.mode.value} trains "
                              "without privacy")
        outcome = run_baseline(settings, run_dir)
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
