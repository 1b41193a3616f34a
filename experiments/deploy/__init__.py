"""``credit-fl deploy``: a whole federation on this machine (:mod:`experiments.deploy.cli`).

:mod:`~experiments.deploy.federation` brings it up, runs and scores on it and takes it down;
:mod:`~experiments.deploy.scoring_service` (a scoring service) and
:mod:`~experiments.deploy.monitor` (the deployed monitor) build on it, never the reverse.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """``credit-fl deploy <command> ...``; see :mod:`experiments.deploy.cli`."""
    from experiments.deploy.cli import main as deploy

    return deploy(argv)
