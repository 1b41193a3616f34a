"""The coordinator's paths are its own: a run config names a run, never a path (issue 29, item 2).

The ServerApp of a deployment derives every directory it writes from checked names under the
coordinator's own directory of runs, and runs only what the coordinator's command line prepared
there. These tests drive it as a local process would that submits a run config of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from credit_data.errors import ConfigError
from deployment import server_app
from deployment.coordinator import (
    PREPARED,
    RUNS_ENV,
    check_prepared,
    check_run_name,
    prepare,
    server_dir,
)
from deployment.run_config import MODEL_RUN, RUN_NAME, RUN_SETTINGS, TASK

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "", ".hidden", "..", "a..b",
                                  "x" * 200, "run name", "run\nname"])
def test_a_run_name_that_is_a_path_is_refused_naming_the_key(name: str) -> None:
    with pytest.raises(ConfigError, match="run config 'run-name'.*not a run name"):
        check_run_name(name, "run-name")


def test_each_task_has_its_directory_under_the_coordinators_runs(tmp_path: Path) -> None:
    assert server_dir(tmp_path, "train", "r1") == tmp_path / "r1"
    assert server_dir(tmp_path, "score", "s1", "r1") == tmp_path / "r1" / "scoring" / "s1"
    assert server_dir(tmp_path, "serve", "v1", "r1") == tmp_path / "r1" / "service" / "v1"
    with pytest.raises(ConfigError, match="'model-run'"):
        server_dir(tmp_path, "score", "s1", "../r1")
    with pytest.raises(ConfigError, match="'task'"):
        server_dir(tmp_path, "attack", "s1", "r1")


def _context(config: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(run_config=config, run_id=7)


def _config(name: str, **extra: str) -> dict[str, str]:
    return {RUN_SETTINGS: "{}", RUN_NAME: name, TASK: "train", MODEL_RUN: "", **extra}


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "runs"
    root.mkdir(mode=0o700)
    monkeypatch.setenv(RUNS_ENV, str(root))
    return root


def test_the_serverapp_refuses_a_run_its_coordinator_did_not_prepare(runs: Path) -> None:
    # a local process submits a run of this app through the open Control API: nothing is
    # prepared under its name, so the ServerApp refuses it before writing anything
    with pytest.raises(ConfigError, match="not prepared by this coordinator"):
        server_app._run_dir(_context(_config("2026-12-07_01-00-00_vertical")))
    assert list(runs.iterdir()) == []


def test_the_serverapp_refuses_a_path_as_a_run_name_and_writes_nowhere(runs: Path,
                                                                        tmp_path: Path) -> None:
    target = tmp_path / "attacker"
    for name in (str(target), f"../{target.name}", "../../etc"):
        with pytest.raises(ConfigError, match="not a run name"):
            server_app._run_dir(_context(_config(name)))
    assert not target.exists() and list(runs.iterdir()) == []


def test_a_prepared_run_runs_once_with_its_own_config_only(runs: Path) -> None:
    config = _config("r1")
    prepare(runs / "r1", config)
    assert (runs / "r1").stat().st_mode & 0o777 == 0o700
    assert (runs / "r1" / PREPARED).stat().st_mode & 0o777 == 0o600
    # another config under the prepared name (other settings, or pointed at a model run)
    with pytest.raises(ConfigError, match=r"submitted \['run-settings'\] differ"):
        server_app._run_dir(_context(config | {RUN_SETTINGS: '{"seed": 1}'}))
    root, run_dir = server_app._run_dir(_context(config))
    assert (root, run_dir) == (runs, runs / "r1")
    assert (run_dir / "server").stat().st_mode & 0o777 == 0o700
    # the same run submitted again would append to its signed audit log: refused
    with pytest.raises(FileExistsError):
        server_app._run_dir(_context(config))


def test_a_link_in_the_coordinators_runs_is_not_followed(runs: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / PREPARED).write_text(json.dumps(_config("r2")))
    (runs / "r2").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="a link"):
        check_prepared(runs, runs / "r2", _config("r2"))
    assert not (elsewhere / "server").exists()


def test_without_the_coordinators_launcher_the_serverapp_runs_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNS_ENV, raising=False)
    with pytest.raises(ConfigError, match=RUNS_ENV):
        server_app._run_dir(_context(_config("r1")))


def test_resume_names_a_run_of_the_coordinator_never_a_path(runs: Path) -> None:
    import pickle

    from federation.run_settings import RunSettings
    from fl_server.checkpoint import CHECKPOINT, save_checkpoint

    save_checkpoint(runs / "r1", {"round": 1})
    resumed = server_app._resumed(RunSettings(resume="r1"), runs)
    assert resumed.resume == str(runs / "r1")
    # a checkpoint that is not a safe file is refused before any message is sent
    (runs / "r2").mkdir()
    (runs / "r2" / CHECKPOINT).write_bytes(pickle.dumps({"round": 1}))
    with pytest.raises(ConfigError, match="not a file this project wrote"):
        server_app._resumed(RunSettings(resume="r2"), runs)
    with pytest.raises(ConfigError, match="run-settings.resume"):
        server_app._resumed(RunSettings(resume="/tmp/planted"), runs)
    with pytest.raises(ConfigError, match="no run of that name"):
        server_app._resumed(RunSettings(resume="r9"), runs)
