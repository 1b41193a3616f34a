"""The ServerApp: a thin shell over :func:`fl_server.rounds.run_federation`."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fl_server.rounds import FederationOutcome, GlobalEvaluation, run_federation
from fl_server.settings import ServerSettings


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
