"""Experiment runner, Hydra configuration, reports and benchmarks.

The only layer that imports Hydra.
"""

import os as _os

LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Ray's public switch for a one-machine cluster (its default on macOS and Windows): Ray then
takes 127.0.0.1 as the node's address, and its GCS, raylet, workers and agents listen there
only. Without it, Ray 2.55 on Linux takes the machine's outside address and its GCS and raylet
listen on every interface (``*:<port>``). Ray reads it once, when it is first imported, so it
is set here, before any module of the runner imports Ray; a user who set it keeps their value.
"""
for _key, _value in LOOPBACK_ONLY.items():
    _os.environ.setdefault(_key, _value)
