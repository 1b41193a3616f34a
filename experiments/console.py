"""The console shows the run's own progress and results; library noise goes to run.log only.

Flower's database migrations (alembic's INFO lines), its deprecation notice for
``run_simulation``, Ray's FutureWarning and the like are nothing a user of a run can act on.
They stay in ``run.log`` (Hydra's file handler), with the run's own lines; the console handler
passes the ``credit_fl`` logger's lines only.
"""

from __future__ import annotations

import logging

OWN = "credit_fl"


class OwnLinesOnly(logging.Filter):
    """Pass the run's own log lines (the ``credit_fl`` logger), nothing else.

    >>> f = OwnLinesOnly()
    >>> f.filter(logging.LogRecord("credit_fl", 20, "", 0, "epoch 1", None, None))
    True
    >>> f.filter(logging.LogRecord("alembic.runtime", 20, "", 0, "setup plugin", None, None))
    False
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == OWN or record.name.startswith(OWN + ".")


def quiet_console() -> None:
    """Keep library lines off the console (they still reach run.log); warnings become log lines."""
    logging.captureWarnings(True)  # Python warnings (Ray's FutureWarning) go to the log
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            handler.addFilter(OwnLinesOnly())
    flwr = logging.getLogger("flwr")  # Flower prints on a console handler of its own
    for handler in list(flwr.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            flwr.removeHandler(handler)
    flwr.propagate = True  # to run.log
