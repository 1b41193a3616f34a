"""The run config ``flwr run`` hands to the deployed apps, and how its settings are read."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from credit_data.errors import ConfigError
from federation.run_settings import RunSettings, settings_from_container

RUN_SETTINGS = "run-settings"
"""The resolved run config (as ``experiments.run`` composes it), as JSON."""
RUN_NAME = "run-name"
"""Names the run's directory at every node, and at the coordinator (a name, never a path:
:mod:`deployment.coordinator`)."""
COLUMNS = "columns"
"""Horizontal federation: the columns the lenders agreed on, as JSON."""
TASK = "task"
"""``train`` (the default), ``score`` (one scoring request with a trained model's bundles) or
``serve`` (a scoring service: one run that answers many requests) or ``monitor`` (each node's
stability indices of a period, ``deploy monitor``)."""
SCORING_TASKS = ("score", "serve")
MONITOR_REQUEST = "monitor"
"""Monitoring: ``{"min_count", "epsilon", "period"}`` as JSON (``period``: a file name in each
node's ``--periods-dir``, or null for the node's ``--data``)."""
LENDER_NAME = "lender-name"
"""The lender a run serves, by the name partners' grants use (default: the party id ``lender``;
:mod:`federation.grants`)."""
MODEL_RUN = "model-run"
"""Scoring: the training run whose bundles each node loads (a run name at every node)."""
OUTCOME = Path("server") / "outcome.pt"
"""Where the ServerApp leaves its outcome (or its error), under the run directory: a file that
runs no code when read (:mod:`fl_server.outcome_file`)."""


@functools.cache
def run_settings(text: str) -> RunSettings:
    """Parse the run settings the coordinator submitted (cached per run)."""
    try:
        return settings_from_container(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"run config '{RUN_SETTINGS}' is not valid run settings: {exc}") from exc
