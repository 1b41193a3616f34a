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
