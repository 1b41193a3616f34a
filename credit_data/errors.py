"""The project's exceptions, one module for all of them.

Every error names what is at fault: the config key, the file, the column.
"""

from __future__ import annotations


class CreditFLError(ValueError):
    """Base class of every error this project raises on bad input."""


class ConfigError(CreditFLError):
    """A config value is missing, of the wrong type or out of range; the message names the key."""


class DataError(CreditFLError):
    """A data file or table is malformed; the message names the file and the column."""


class FederationError(CreditFLError):
    """The federation cannot go on (too few usable clients, nodes that never connected)."""


class DeployError(CreditFLError):
    """The local federation could not be started, run or collected."""


class CompareError(CreditFLError):
    """Nothing to compare, or a file that is not a run's results."""


class BudgetRefusal(RuntimeError):
    """A party refuses a request that would spend past its own ``max_epsilon`` (or its delta).

    The party says so in its reply, its audit log and the run's error; the run goes on
    without it where the mode allows.
    """


class PrivacyLedgerError(RuntimeError):
    """The privacy ledger was asked to record something inconsistent: always raised."""


class AlignmentError(RuntimeError):
    """The two ends of an alignment disagree, or a sealed message does not open."""


class EngineVersionError(ConfigError):
    """The installed Flower or Ray is not the exact release this project was built against."""


class ReportedError(CreditFLError):
    """An error of another kind (Python's own, a library's) read back from a file.

    Files this project reads back hold only its own classes, so an outcome or checkpoint keeps
    another error as its type's name (``original``) and message: ``ValueError: bad value``.
    """

    original: str = ""
