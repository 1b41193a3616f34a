"""A ServerApp's outcome (or error) in a file, for the process that started the run.

A deployed ServerApp leaves ``{"outcome": ...}`` or ``{"error": ...}`` in its run directory;
the coordinator's command line reads it back. Both go through :mod:`federation.safe_files`:
reading an outcome runs no code, and an error comes back as a project error (its class, or a
:class:`~credit_data.errors.ReportedError` naming the original type).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from credit_data.errors import DeployError
from federation.safe_files import load_objects, save_objects
from fl_server.horizontal_rounds import FederationOutcome
from fl_server.scoring_rounds import ScoringOutcome
from fl_server.screening import Exclusion
from fl_server.vertical_rounds import Traffic, VerticalOutcome

OUTCOME_CLASSES = (FederationOutcome, VerticalOutcome, ScoringOutcome, Traffic, Exclusion)
"""The classes an outcome file may hold beyond :data:`federation.safe_files.PLAIN_CLASSES`."""


def write_outcome(path: Path, found: dict[str, Any]) -> None:
    """Write ``{"outcome": ...}`` or ``{"error": exception}`` to ``path`` atomically."""
    save_objects(path, found, OUTCOME_CLASSES)


def read_outcome(path: Path) -> dict[str, Any]:
    """Read an outcome :func:`write_outcome` wrote; refuse any other file, running nothing."""
    found = load_objects(path, "the ServerApp's outcome", OUTCOME_CLASSES, error=DeployError)
    if not isinstance(found, dict) or not {"outcome", "error"} & set(found):
        raise DeployError(f"the ServerApp's outcome: {path} holds neither an outcome nor an "
                          "error")
    return found
