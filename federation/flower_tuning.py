"""Flower 1.41, quiet and quick: no telemetry or update check; shorter waits in deployment.

``QUIET`` is the environment every Flower process of this project gets: no telemetry events,
no update check against the package index.

Flower waits between polls with fixed sleeps and backoffs tuned for long rounds: a SuperNode
with no message sleeps 3 s, and a component that pulls a message whose parts are not stored yet
retries after 1 s, then 2 s, 4 s. Here one message exchange of a vertical epoch takes a fraction
of a second, so those waits would be most of the run. :func:`quick_object_pulls` retries every
20 ms (doubling up to 0.2 s) in the module given; :mod:`fl_client.supernode` also caps the
SuperNode's idle sleep. Both only shorten waits; what is sent, to whom, and how it is
authenticated stay Flower's.
"""

from __future__ import annotations

import functools
from types import ModuleType

QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
INITIAL_BACKOFF = 0.02
BACKOFF_CAP = 0.2


def quick_object_pulls(module: ModuleType) -> None:
    """Make ``module.pull_objects`` (Flower's object puller, as imported there) retry quickly."""
    from flwr.supercore.inflatable import inflatable_utils

    current = getattr(module, "pull_objects", None)
    if current is None:
        raise RuntimeError(f"{module.__name__} has no pull_objects: Flower changed; remove "
                           "this tuning")
    if isinstance(current, functools.partial):
        return
    module.pull_objects = functools.partial(  # type: ignore[attr-defined]
        inflatable_utils.pull_objects, initial_backoff=INITIAL_BACKOFF,
        backoff_cap=BACKOFF_CAP)
