"""The simulation's ServerApps: thin shells over the horizontal and the vertical round loops.

A deployment's ServerApp (``deployment/server_app.py``) runs the same loops.

See :func:`fl_server.horizontal_rounds.run_federation` and
:func:`fl_server.vertical_rounds.run_vertical_federation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.audit_log import AuditLog
from federation.flower_compat import SIMULATION_POLL
from fl_server.audited_grid import AuditedGrid
from fl_server.horizontal_rounds import FederationOutcome, GlobalEvaluation, run_federation
from fl_server.scoring_rounds import ScoringOutcome, ScoringServerSettings, run_scoring
from fl_server.settings import ServerSettings
from fl_server.vertical_rounds import Recorder, VerticalOutcome, run_vertical_federation


def audited(grid: Grid, settings: ServerSettings, poll: float = 0.05,
            cap: float | None = None) -> Grid:
    """Wrap Flower's Grid so every message is in the server's audit log.

    ``poll``: seconds between looks for replies. A deployed server asks the SuperLink over the
    network: every 0.05 s and, with a ``cap`` (the deployed ServerApp's ``REPLY_POLL_CAP``), then
    a fortieth of the time waited up to ``cap``
    (:func:`federation.polling.next_wait`); in simulation a look reads the engine's memory
    (``SIMULATION_POLL``). Without a ``cap``, always the same interval.
    """
    return audited_in(grid, Path(settings.run_dir), poll, cap)


def audited_in(grid: Grid, run_dir: Path, poll: float = 0.05,
               cap: float | None = None) -> Grid:
    """:func:`audited`, with the log in ``<run_dir>/server/audit.jsonl``."""
    return cast(Grid, AuditedGrid(grid, AuditLog(run_dir / "server" / "audit.jsonl"), poll,
                                  cap))


def make_server_app(settings: ServerSettings, outcome: FederationOutcome,
                    evaluate_global: GlobalEvaluation | None = None) -> ServerApp:
    """Build the ServerApp; it fills ``outcome`` (errors included) instead of raising."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            grid = audited(grid, settings, SIMULATION_POLL)
            result = run_federation(grid, settings, evaluate_global)
        except BaseException as exc:  # handed to the runner, which raises it in its thread
            outcome.error = exc
            return
        outcome.__dict__.update(result.__dict__)

    return app


def make_vertical_server_app(settings: ServerSettings, outcome: VerticalOutcome,
                             recorder: Recorder | None = None) -> ServerApp:
    """Build the vertical ServerApp; it fills ``outcome`` (errors included) instead of raising.

    ``recorder`` sees every message the server routes (tests use it to check what travels).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            grid = audited(grid, settings, SIMULATION_POLL)
            result = run_vertical_federation(grid, settings, recorder)
        except BaseException as exc:  # handed to the runner, which raises it in its thread
            outcome.error = exc
            return
        outcome.__dict__.update(result.__dict__)

    return app


def make_scoring_server_app(settings: ScoringServerSettings, outcome: ScoringOutcome,
                            out_dir: Path, recorder: Recorder | None = None) -> ServerApp:
    """Build the scoring ServerApp (its audit log in ``out_dir/server``); it fills ``outcome``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result = run_scoring(audited_in(grid, out_dir, SIMULATION_POLL), settings, recorder)
        except BaseException as exc:  # handed to the runner, which raises it in its thread
            outcome.error = exc
            return
        outcome.__dict__.update(result.__dict__)

    return app
