"""Every use of Flower's and Ray's internals, behind one gate: an exact version, or stop.

This project reaches into Flower and Ray in a few places where they offer no public setting
(docs/deployment.md, "Flower coupling"). Every private symbol lives in this package, one module
per engine, and nowhere else (``tests/test_architecture.py`` checks the imports):

* :mod:`.simulation`: the simulation engine's polls (Flower) and a one-machine Ray head (Ray);
* :mod:`.deployment`: the SuperNode's idle sleep and object pulls, the deployed Grid's object
  pulls, and the Runtime API calls of the long-lived party worker (:mod:`fl_client.executor`);
* :mod:`.in_process`: Flower's task identity, for the in-process engine
  (:mod:`credit_fl.in_process`, also the unit tier's grid).

One failure policy: :func:`check_engine_versions` runs before any of them, and with another
release installed a simulation, a node or the deployed ServerApp refuses to start, naming the
version found and the one supported (:class:`~credit_data.errors.EngineVersionError`); a patch
whose target is not what it expects refuses the same way (:func:`changed`).

Fallback: ``CREDIT_FL_PLAIN_FLOWER=1`` runs the simulation with plain Flower and Ray behaviour
(none of the tunings; slower polls, the same results) instead of refusing. A deployed node has
no such fallback: its worker speaks Flower's Runtime API and needs the supported release.
"""

from __future__ import annotations

import os
from importlib import metadata

from credit_data.errors import EngineVersionError

SUPPORTED = {"flwr": "1.41.0", "ray": "2.55.1"}
PLAIN_FLOWER = "CREDIT_FL_PLAIN_FLOWER"
QUIET = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
"""The environment of every Flower process of this project: no telemetry, no update check."""
SIMULATION_POLL = 0.01
"""Seconds between looks for new messages in simulation: the engine's (Flower waits 0.1 s) and
the simulated server's for replies (a deployed server looks every 0.05 s)."""


def installed(package: str) -> str | None:
    """Return the installed version of ``package`` (None when it is not installed)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def plain_flower() -> bool:
    """Whether the user asked for plain Flower behaviour (no tuning of its internals)."""
    return os.environ.get(PLAIN_FLOWER, "") in ("1", "true", "yes")


def check_engine_versions(packages: tuple[str, ...] = ("flwr",),
                          found: dict[str, str | None] | None = None) -> None:
    """Refuse to start on a release this project has not been built against.

    >>> check_engine_versions(("flwr",), {"flwr": "1.41.0"})
    >>> check_engine_versions(("flwr",), {"flwr": "1.42.0"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.EngineVersionError: flwr 1.42.0 is installed; this project supports ...
    """
    versions = found if found is not None else {p: installed(p) for p in packages}
    for package in packages:
        have, want = versions.get(package), SUPPORTED[package]
        if have != want:
            raise EngineVersionError(
                f"{package} {have or '(not installed)'} is installed; this project supports "
                f"exactly {package} {want} (it tunes Flower's internals behind this check). "
                f"Install it with: pip install 'flwr[simulation]=={SUPPORTED['flwr']}' (or, for "
                f"a simulation, set {PLAIN_FLOWER}=1 to run with plain Flower behaviour)")


def changed(what: str, package: str = "flwr") -> EngineVersionError:
    """Return the error of a patch whose target is not what it expects (the gate's policy).

    >>> changed("vce_api.add_messages_to_queue")  # doctest: +ELLIPSIS
    EngineVersionError('flwr 1.41.0: vce_api.add_messages_to_queue is not what this project ...')
    """
    return EngineVersionError(
        f"{package} {installed(package)}: {what} is not what this project patches in "
        f"{package} {SUPPORTED[package]}; install the supported release (or, for a simulation, "
        f"set {PLAIN_FLOWER}=1 to run with plain Flower behaviour)")
