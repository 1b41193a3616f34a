"""credit_fl: train, look at, score, save and load a federated credit-risk model from Python.

>>> import credit_fl
>>> settings = credit_fl.settings("federation=local", "data.n_customers=2000")
>>> settings.federation.mode.value
'local'

The command line (``credit-fl run``, ``credit-fl score``) is a thin layer over these names;
the same overrides give the same settings, the same model and the same files
(docs/python-api.md).
"""

from __future__ import annotations

import importlib
import os as _os
from typing import TYPE_CHECKING, Any

from credit_data.errors import ConfigError, CreditFLError, DataError
from credit_fl.config import config_of, settings, settings_of
from federation.run_settings import Engine, RunSettings

LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's public switch for a one-machine cluster (its default on macOS and Windows): Ray then
takes 127.0.0.1 as the node's address, and its GCS, raylet, workers and agents listen there
only. Without it, Ray 2.55 on Linux takes the machine's outside address and its GCS and raylet
listen on every interface (``*:<port>``). Ray reads it once, when it is first imported, so it
is set here, before any module of the runner imports Ray; a user who set it keeps their value.
"""
for _key, _value in LOOPBACK_ONLY.items():
    _os.environ.setdefault(_key, _value)

if TYPE_CHECKING:
    from credit_data.synthetic import synthetic_frames
    from credit_fl.model import TrainedModel, load, train

_LAZY = {"TrainedModel": "credit_fl.model", "load": "credit_fl.model", "train": "credit_fl.model",
         "synthetic_frames": "credit_data.synthetic"}
"""Names whose modules load torch, Flower or pandas: imported on first use, so that the
command line checks a config in a second."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'credit_fl' has no attribute '{name}'")

__all__ = [
    "ConfigError",
    "CreditFLError",
    "DataError",
    "Engine",
    "RunSettings",
    "TrainedModel",
    "config_of",
    "load",
    "settings",
    "settings_of",
    "synthetic_frames",
    "train",
]
