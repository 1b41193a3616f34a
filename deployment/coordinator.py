"""The coordinator's own directory: where its ServerApps write, derived from checked run names.

A run config names a run; it never names a path. The coordinator's launcher
(:mod:`deployment.serverapp_launcher` ``--runs-dir``) tells each ServerApp it starts where the
coordinator keeps its runs (:data:`RUNS_ENV`); the ServerApp derives its directory from the run
config's run name, task and model run, each checked to be one plain name:

* ``train``: ``<runs>/<run-name>``;
* ``score``: ``<runs>/<model-run>/scoring/<run-name>``;
* ``serve``: ``<runs>/<model-run>/service/<run-name>``;
* ``monitor``: ``<runs>/<model-run>/monitoring/<run-name>``.

It runs only what the coordinator's own command line prepared there (:func:`prepare` writes the
run config it is about to submit, readable by the coordinator alone): a run that a local
process submits through the open Control API with a config of its own finds nothing prepared
and is refused before it sends a message or writes a file (:func:`check_prepared`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from credit_data.errors import ConfigError
from federation.credentials import write_private

RUNS_ENV = "CREDIT_FL_COORDINATOR_RUNS"
"""The coordinator's directory of runs, set by its launcher for each ServerApp it starts."""
PREPARED = "prepared.json"
"""In a run's coordinator directory: the run config the coordinator's command line submits."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TASK_DIRS = {"score": "scoring", "serve": "service", "monitor": "monitoring"}


def check_run_name(value: str, key: str) -> str:
    """Return ``value`` if it is one plain name (no path); raise naming ``key`` otherwise.

    >>> check_run_name("2026-12-07_01-30-00_vertical", "run-name")
    '2026-12-07_01-30-00_vertical'
    >>> check_run_name("../elsewhere", "run-name")
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: run config 'run-name': '../elsewhere' is not a run name ...
    """
    if not NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"run config '{key}': {value!r} is not a run name (letters, digits, "
                          "'_', '-' and '.', no path); a run config names a run, never a path")
    return value


def runs_root() -> Path:
    """Return the coordinator's directory of runs, as its launcher set it."""
    value = os.environ.get(RUNS_ENV)
    if not value:
        raise ConfigError(f"{RUNS_ENV} is not set: this ServerApp runs only under the "
                          "coordinator's launcher (python -m deployment.serverapp_launcher "
                          "--runs-dir <dir>)")
    root = Path(value)
    if not root.is_dir() or root.is_symlink():
        raise ConfigError(f"{RUNS_ENV}={value}: not a directory")
    return root


def server_dir(root: Path, task: str, name: str, model_run: str = "") -> Path:
    """Return the directory of run ``name`` under ``root`` (see the module doc)."""
    name = check_run_name(name, "run-name")
    if task == "train":
        return root / name
    if task not in TASK_DIRS:
        raise ConfigError(f"run config 'task': {task!r} is not one of train, score, serve, "
                          "monitor")
    return root / check_run_name(model_run, "model-run") / TASK_DIRS[task] / name


def prepare(directory: Path, config: dict[str, str]) -> None:
    """Make a run's coordinator directory (0700) and record the config about to be submitted."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=False)
    os.chmod(directory, 0o700)
    write_private(directory / PREPARED, json.dumps(config, sort_keys=True).encode())


def check_prepared(root: Path, directory: Path, config: dict[str, str]) -> None:
    """Refuse a run the coordinator did not prepare, or whose config differs from what it did.

    ``directory`` must lie inside ``root`` with no link on the way (a link planted by another
    user would lead the ServerApp's writes elsewhere).
    """
    relative = directory.relative_to(root)
    here = root
    for part in relative.parts:
        here = here / part
        if here.is_symlink():
            raise ConfigError(f"{here}: a link; the coordinator writes only in its own "
                              "directories")
    path = directory / PREPARED
    if not path.is_file():
        raise ConfigError(f"run '{directory.name}' was not prepared by this coordinator (no "
                          f"{path}); it runs only what its own command line submits")
    prepared = json.loads(path.read_text())
    differs = sorted(k for k in prepared if str(config.get(k, "")) != prepared[k])
    if differs:
        raise ConfigError(f"run '{directory.name}': the submitted {differs} differ from what "
                          "this coordinator prepared; refused")
