"""The ServerApp of a real deployment (``flwr run`` on a SuperLink); the round loops of simulation.

Its run config carries the run's settings (``run-settings``, the resolved config as JSON), the
run directory on the coordinator's machine (``run-dir``) and, for horizontal federation, the
columns the lenders agreed on (``columns``). It runs the same round loop as simulation, keeps
its audit log in ``<run-dir>/server/audit.jsonl`` and leaves what it found in
``<run-dir>/server/outcome.pkl`` for :mod:`experiments.deploy` to turn into ``results.json``.
A run that fails leaves the error there instead, and fails.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from deployment.run_config import COLUMNS, OUTCOME, RUN_DIR, RUN_SETTINGS, TASK, run_settings
from federation.flower_compat.deployment import quick_grid_pulls
from federation.settings import Mode
from federation.storage import write_atomic
from fl_server.rounds import run_federation
from fl_server.scoring_rounds import run_own_scoring, run_scoring, scoring_server_settings
from fl_server.scoring_service import run_scoring_service
from fl_server.server_app import audited, audited_in
from fl_server.settings import horizontal_server_settings, vertical_server_settings
from fl_server.vertical_rounds import run_vertical_federation


def save_outcome(run_dir: Path, found: dict[str, Any]) -> None:
    """Leave the server's outcome (or error) for the collector, atomically."""
    write_atomic(run_dir / OUTCOME, pickle.dumps(found))


quick_grid_pulls()  # refuses another Flower release than the supported one
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured federation; leave its outcome in the run directory."""
    run = run_settings(str(context.run_config[RUN_SETTINGS]))
    run_dir = Path(str(context.run_config[RUN_DIR]))
    try:
        task = str(context.run_config.get(TASK, "train"))
        if task == "serve":
            outcome: Any = run_scoring_service(audited_in(grid, run_dir),
                                               scoring_server_settings(run), run_dir)
        elif task == "score":
            scoring = (run_own_scoring if run.federation.mode is Mode.horizontal
                       else run_scoring)  # each lender on its own, or the parties together
            outcome = scoring(audited_in(grid, run_dir), scoring_server_settings(run))
        elif run.federation.mode is Mode.vertical:
            parties = tuple(run.federation.parties)
            server = vertical_server_settings(run, parties, run_dir)
            outcome = run_vertical_federation(audited(grid, server), server)
        else:
            columns = json.loads(str(context.run_config[COLUMNS]))
            server = horizontal_server_settings(run, run.partition.n_lenders,
                                                tuple(columns["numeric"]),
                                                tuple(columns["categorical"]), run_dir)
            outcome = run_federation(audited(grid, server), server)
    except BaseException as exc:
        save_outcome(run_dir, {"error": exc})
        raise
    save_outcome(run_dir, {"outcome": outcome})
