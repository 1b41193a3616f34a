"""A vertical run assembled on the in-process grid, for tests that read its outcome directly."""

from __future__ import annotations

from pathlib import Path

from credit_data.loading import load_population
from credit_fl.vertical import VerticalSimulationSource, party_settings, vertical_outcome
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from tests.fake_grid import InProcessGrid, run_server_app


def vertical_in_process(settings, run_dir: Path):
    """Train ``settings``' vertical model on the in-process grid; return the run's outcome."""
    population = load_population(settings.data, settings.seed)
    parties = tuple(p for p in settings.federation.parties if p in population.tables)
    clients = party_settings(settings, parties, run_dir / "parties")
    server = vertical_server_settings(settings, parties, run_dir)
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(server, outcome), InProcessGrid(app, len(parties)))
    assert outcome.error is None, outcome.error
    return vertical_outcome(settings, parties, outcome, 0.0, 1.0)
