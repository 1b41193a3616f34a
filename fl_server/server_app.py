"""The ServerApps: thin shells over the horizontal and the vertical round loops.

See :func:`fl_server.rounds.run_federation` and
:func:`fl_server.vertical_rounds.run_vertical_federation`.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fl_server.rounds import FederationOutcome, GlobalEvaluation, run_federation
from fl_server.settings import ServerSettings
from fl_server.vertical_rounds import Recorder, VerticalOutcome, run_vertical_federation


def make_server_app(settings: ServerSettings, outcome: FederationOutcome,
                    evaluate_global: GlobalEvaluation | None = None) -> ServerApp:
    """Build the ServerApp; it fills ``outcome`` (errors included) instead of raising."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
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
            result = run_vertical_federation(grid, settings, recorder)
        except BaseException as exc:  # handed to the runner, which raises it in its thread
            outcome.error = exc
            return
        outcome.__dict__.update(result.__dict__)

    return app
