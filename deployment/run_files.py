"""The files a deployed run leaves for its coordinator, as the command line reads and writes them.

The deploy orchestrator (:mod:`experiments.deploy`) drives the federation from outside: it
reads the ServerApp's outcome file, the scoring service's status and request records, and drops
a request into the lender node's inbox. Their names and the one safe reader are the apps' own
(:mod:`fl_server.outcome_file`, :mod:`fl_server.scoring_service`,
:mod:`fl_client.scoring_service`); the command line reaches them here, never the apps directly.
"""

from __future__ import annotations

from fl_client.scoring_service import INBOX, STOP
from fl_client.scoring_service import REQUESTS as NODE_REQUESTS
from fl_server.outcome_file import read_outcome
from fl_server.scoring_service import REQUESTS as SERVER_REQUESTS
from fl_server.scoring_service import SERVICE_FILE

__all__ = ["INBOX", "NODE_REQUESTS", "SERVER_REQUESTS", "SERVICE_FILE", "STOP", "read_outcome"]
