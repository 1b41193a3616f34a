"""The ServerApp of a real deployment (``flwr run`` on a SuperLink); the round loops of simulation.

Its run config carries the run's settings (``run-settings``, the resolved config as JSON), the
run's name (``run-name``), its task and model run, and, for horizontal federation, the columns
the lenders agreed on (``columns``). A run config names a run, never a path: the ServerApp
derives its directory under the coordinator's own directory of runs and runs only what the
coordinator prepared there (:mod:`deployment.coordinator`); everything it writes is readable by
the coordinator's user alone. It runs the same round loop as simulation, keeps its audit log in
``<run>/server/audit.jsonl`` and leaves what it found in ``<run>/server/`` (see
:data:`deployment.run_config.OUTCOME`) for :mod:`experiments.deploy` to turn into
``results.json``. A run that fails leaves the error there instead, and fails.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from credit_data.errors import ConfigError
from credit_data.settings import LABEL_HOLDER
from deployment.coordinator import check_prepared, check_run_name, runs_root, server_dir
from deployment.pins import read_pins
from deployment.run_config import (
    COLUMNS,
    MODEL_RUN,
    MONITOR_REQUEST,
    OUTCOME,
    RUN_NAME,
    RUN_SETTINGS,
    TASK,
    run_settings,
)
from federation.flower_compat.deployment import quick_grid_pulls
from federation.run_settings import RunSettings
from federation.settings import Mode
from fl_server.app_factory import audited, audited_in
from fl_server.audited_grid import REPLY_POLL_CAP
from fl_server.checkpoint import load_checkpoint
from fl_server.horizontal_rounds import run_federation, wait_for_nodes
from fl_server.monitoring_rounds import ModelOutcome, run_model_monitoring, run_monitoring
from fl_server.node_pins import pinned_nodes
from fl_server.outcome_file import write_outcome
from fl_server.scoring_rounds import run_own_scoring, run_scoring, scoring_server_settings
from fl_server.scoring_service import run_scoring_service
from fl_server.settings import horizontal_server_settings, vertical_server_settings
from fl_server.vertical_rounds import run_vertical_federation


def save_outcome(run_dir: Path, found: dict[str, Any]) -> None:
    """Leave the server's outcome (or error) for the collector, atomically."""
    write_outcome(run_dir / OUTCOME, found)


quick_grid_pulls()  # refuses another Flower release than the supported one
app = ServerApp()


log = logging.getLogger("credit_fl")


def _run_dir(context: Context) -> tuple[Path, Path]:
    """Return the coordinator's runs and this run's own directory there; refuse anything else."""
    config = {k: str(v) for k, v in context.run_config.items()}
    root = runs_root()
    run_dir = server_dir(root, config.get(TASK, "train"), config.get(RUN_NAME, ""),
                         config.get(MODEL_RUN, ""))
    check_prepared(root, run_dir, config)
    (run_dir / "server").mkdir(mode=0o700, exist_ok=False)  # a run name runs once
    return root, run_dir


def _resumed(run: RunSettings, root: Path) -> RunSettings:
    """Resolve ``resume``, a run name in a deployment, to that run's coordinator directory."""
    if run.resume is None:
        return run
    earlier = root / check_run_name(run.resume, "run-settings.resume")
    if not earlier.is_dir():
        raise ConfigError(f"resume={run.resume}: the coordinator has no run of that name")
    load_checkpoint(earlier)  # refused here, before any message, if it is not a safe file
    return dataclasses.replace(run, resume=str(earlier))


def deployed_monitoring(grid: Grid, run: RunSettings, pins: dict[str, int],
                        request: dict[str, Any]) -> dict[str, Any]:
    """Ask each party's pinned node (not a blacklist holder's) for its indices, once.

    Returns what came back as plain values: ``parties`` and ``epsilon`` per party; then the
    period scored through the parties and the lender's figures (``model``, or why not:
    ``model_withheld``; ``applicants``: the lender's rows scored;
    :mod:`fl_server.monitoring_rounds`).
    """
    parties = [p for p in run.federation.parties if p not in run.blacklists.holders]
    missing = [p for p in parties if p not in pins]
    if missing:
        raise ConfigError(f"no node is pinned for {missing}: monitoring asks each party's "
                          "registered node")
    nodes = pinned_nodes({p: pins[p] for p in parties})
    wait_for_nodes(grid, len(parties), run.federation.connect_timeout, nodes)
    found = run_monitoring(grid, int(request["min_count"]), [node for _, node in nodes])
    if run.blacklists.holders:
        model = ModelOutcome(withheld="a model trained with blacklist holders: the deployed "
                             "model section is not computed (their lists are not monitored)")
    elif found.epsilon.get(LABEL_HOLDER) is not None:  # its node would withhold the figures
        model = ModelOutcome(withheld=f"{LABEL_HOLDER}: under a DP budget (its counts came "
                             "noised), its node withholds the model section's exact figures")
    else:  # the period scored through the parties, then the lender's figures
        model = run_model_monitoring(grid, scoring_server_settings(run, pins=pins),
                                     pins[LABEL_HOLDER])
    return {"parties": found.parties, "epsilon": found.epsilon, "model": model.figures,
            "model_withheld": model.withheld, "applicants": model.applicants}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured federation; leave its outcome in the run's coordinator directory."""
    os.umask(0o077)  # what the coordinator writes is its own
    try:
        root, run_dir = _run_dir(context)
    except (ConfigError, FileExistsError) as exc:
        log.warning("refused run %s: %s", context.run_id, exc)  # nothing written
        raise
    try:
        run = _resumed(run_settings(str(context.run_config[RUN_SETTINGS])), root)
        pins = read_pins(root)  # each party's node, pinned when its key was registered
        task = str(context.run_config.get(TASK, "train"))
        outcome: Any
        if task == "monitor":
            request = json.loads(str(context.run_config[MONITOR_REQUEST]))
            outcome = deployed_monitoring(audited_in(grid, run_dir, cap=REPLY_POLL_CAP), run,
                                          pins, request)
        elif task == "serve":
            # the service waits on the lender's reply for the next request: quick polls always
            outcome = run_scoring_service(audited_in(grid, run_dir),
                                          scoring_server_settings(run, pins=pins), run_dir)
        elif task == "score":
            scoring = (run_own_scoring if run.federation.mode is Mode.horizontal
                       else run_scoring)  # each lender on its own, or the parties together
            outcome = scoring(audited_in(grid, run_dir, cap=REPLY_POLL_CAP),
                              scoring_server_settings(run, pins=pins))
        elif run.federation.mode is Mode.vertical:
            parties = tuple(run.federation.parties)
            server = vertical_server_settings(run, parties, run_dir, pins=pins)
            outcome = run_vertical_federation(audited(grid, server, cap=REPLY_POLL_CAP), server)
        else:
            columns = json.loads(str(context.run_config[COLUMNS]))
            server = horizontal_server_settings(run, run.partition.n_lenders,
                                                tuple(columns["numeric"]),
                                                tuple(columns["categorical"]), run_dir,
                                                pins=pins)
            outcome = run_federation(audited(grid, server, cap=REPLY_POLL_CAP), server)
    except BaseException as exc:
        save_outcome(run_dir, {"error": exc})
        raise
    save_outcome(run_dir, {"outcome": outcome})
