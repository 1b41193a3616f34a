"""The ServerApps: thin shells over the horizontal and the vertical round loops.

See :func:`fl_server.rounds.run_federation` and
:func:`fl_server.vertical_rounds.run_vertical_federation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.audit_log import AuditLog
from fl_server.audited_grid import AuditedGrid
from fl_server.rounds import FederationOutcome, GlobalEvaluation, run_federation
from fl_server.settings import ServerSettings
from fl_server.vertical_rounds import Recorder, VerticalOutcome, run_vertical_federation


def server_audit_log(settings: ServerSettings) -> AuditLog:
    """Return the server's own audit log: ``<run dir>/server/audit.jsonl``."""
    return AuditLog(Path(settings.run_dir) / "server" / "audit.jsonl")


def audited(grid: Grid, settings: ServerSettings) -> Grid:
    """Wrap Flower's Grid so every message is in the server's audit log."""
    return cast(Grid, AuditedGrid(grid, server_audit_log(settings)))


def make_server_app(settings: ServerSettings, outcome: FederationOutcome,
                    evaluate_global: GlobalEvaluation | None = None) -> ServerApp:
    """Build the ServerApp; it fills ``outcome`` (errors included) instead of raising."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result = run_federation(audited(grid, settings), settings, evaluate_global)
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
            result = run_vertical_federation(audited(grid, settings), settings, recorder)
        except BaseException as exc:  # handed to the runner, which raises it in its thread
            outcome.error = exc
            return
        outcome.__dict__.update(result.__dict__)

    return app
