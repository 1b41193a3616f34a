"""The one gate in front of every use of Flower's and Ray's internals: an exact version, or stop.

This project tunes Flower in a few places where Flower offers no public setting (see
docs/deployment.md, "Flower coupling"): the simulation engine's polls, Ray's one-machine head,
the SuperNode's idle sleep and object pulls, a long-lived party worker. Each relies on
internals of the exact releases below. :func:`check_engine_versions` runs before any of them:
with another release installed, a simulation or a node refuses to start and says which
versions it found and which it supports.

Fallback: ``CREDIT_FL_PLAIN_FLOWER=1`` runs the simulation with plain Flower and Ray behaviour
(none of the tunings; slower polls, the same results) instead of refusing. A deployed node has
no such fallback yet: it needs the supported release.
"""

from __future__ import annotations

import os
from importlib import metadata

from credit_data.errors import EngineVersionError

SUPPORTED = {"flwr": "1.41.0", "ray": "2.55.1"}
PLAIN_FLOWER = "CREDIT_FL_PLAIN_FLOWER"


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
