"""Reference points of a privacy-utility comparison, trained on the same rows and seed.

``centralized`` (every party's columns pooled, no privacy), ``lender_only`` (the lender's own
columns) and ``non_private`` (the same federation with privacy off, with its audit: what the
attacks get without any protection). In a Hydra sweep they are
computed once per data, seed and federation and cached under the sweep directory, so a sweep over
epsilon pays for them once per seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from credit_data.tables import Population
from credit_fl.attacks import attack_outcome
from credit_fl.baselines import run_baseline
from credit_fl.horizontal import run_horizontal
from credit_fl.outcome import RunOutcome
from credit_fl.vertical import run_vertical
from federation.run_settings import RunSettings
from federation.settings import Mode
from federation.storage import write_atomic
from models.settings import ModelSettings
from privacy.settings import PrivacySettings

log = logging.getLogger("credit_fl")
METRICS = ("auc", "ks", "brier")


def _summary(outcome: RunOutcome) -> dict[str, Any]:
    test = outcome.metrics["test"]
    return {"mode": outcome.settings.federation.mode.value,
            **{key: float(test[key]) for key in METRICS}}


def _baseline(settings: RunSettings, mode: Mode) -> RunSettings:
    federation = dataclasses.replace(settings.federation, mode=mode)
    return dataclasses.replace(settings, federation=federation, model=ModelSettings(),
                               privacy=PrivacySettings(), references=False, resume=None)


def _cache_key(settings: RunSettings) -> str:
    recipe = repr((settings.data, settings.seed, settings.partition, settings.federation,
                   settings.model, settings.train))
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def compute_references(settings: RunSettings,
                       population: Population | None = None) -> dict[str, Any]:
    """Train the three references for ``settings`` (no caching) on the same rows.

    ``population``: rows already loaded (else the settings' data config is loaded).
    """
    out = {"centralized": _summary(run_baseline(_baseline(settings, Mode.centralized),
                                                population=population)),
           "lender_only": _summary(run_baseline(_baseline(settings, Mode.local),
                                                population=population))}
    if settings.federation.mode in (Mode.horizontal, Mode.vertical):
        plain = dataclasses.replace(settings, privacy=PrivacySettings(), references=False,
                                    resume=None)
        runner = run_horizontal if settings.federation.mode is Mode.horizontal else run_vertical
        with tempfile.TemporaryDirectory(prefix="credit-fl-reference-") as tmp:
            outcome = runner(plain, Path(tmp), population=population)
            out["non_private"] = _summary(outcome) | {"audit": attack_outcome(outcome)}
    return out


def references_for(settings: RunSettings, cache_dir: Path | None,
                   population: Population | None = None) -> dict[str, Any]:
    """Return the references, from ``cache_dir`` when an earlier job of the sweep made them."""
    if cache_dir is None or population is not None:  # a sweep loads its data from config
        return compute_references(settings, population)
    path = cache_dir / f"{_cache_key(settings)}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    log.info("references: training centralized, lender-only and non-private runs for seed %d",
             settings.seed)
    refs = compute_references(settings)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(refs, indent=2))
    return refs
