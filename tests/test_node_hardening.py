"""A partner's node against a hostile coordinator and a careless machine (issue 19, first part)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from credit_data.errors import ConfigError
from deployment.client_app import run_state_dir
from federation.credentials import make_node_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["../../../escaped", "..", ".", "a/b", "/etc", "x/../../y",
                                  "", "run\x00name", "~root"])
def test_a_run_name_that_would_leave_the_state_directory_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="run-name"):
        run_state_dir(tmp_path / "state", name)
    assert not any(tmp_path.iterdir())  # nothing written anywhere


def test_a_plain_run_name_stays_inside_the_state_directory(tmp_path):
    path = run_state_dir(tmp_path, "2026-12-05_10-00-00_vertical")
    assert path.parent == tmp_path.resolve()


def test_a_private_key_written_over_a_loose_file_is_owner_only(tmp_path):
    key = tmp_path / "bureau"
    key.write_text("old")
    os.chmod(key, 0o644)  # a file left readable by everyone
    make_node_key(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def _node(tmp_path):
    from deployment.client_app import NodeConfig

    data = tmp_path / "bureau.csv"
    data.write_text("id,x\na,1\n")
    return NodeConfig(party="bureau", data_path=data, state_dir=tmp_path / "state")


def _resuming(path: str):
    from federation.run_settings import RunSettings

    return RunSettings(resume=path)


def test_a_resumed_run_copies_only_the_nodes_own_earlier_run(tmp_path):
    from deployment.client_app import lifetime_run, resume_state
    from federation.run_settings import RunSettings

    node = _node(tmp_path)
    first = resume_state(node, RunSettings(), "run-1", flower_run=11) / "bureau"
    first.mkdir(parents=True)
    (first / "node_state.pt").write_bytes(b"state")
    (first / "audit.jsonl").write_text("{}\n")
    # the coordinator's path is read for its last component only, checked as a run name
    second = resume_state(node, _resuming("/coordinator/runs/run-1"), "run-2", 12)
    assert (second / "bureau" / "node_state.pt").read_bytes() == b"state"
    assert not (second / "bureau" / "audit.jsonl").exists()  # a log of its own
    # the lifetime ledger counts a chain of resumed runs as its first run
    assert lifetime_run(node, _resuming("/x/run-1"), "run-2", 12) == "run-1"
    resume_state(node, _resuming("/x/run-2"), "run-3", 13)
    assert lifetime_run(node, _resuming("/x/run-2"), "run-3", 13) == "run-1"
    with pytest.raises(ConfigError, match="run-name '..' from the coordinator"):
        resume_state(node, _resuming("/x/.."), "run-4", 14)
    with pytest.raises(ConfigError, match="kept no state of run 'run-9'"):
        resume_state(node, _resuming("/x/run-9"), "run-5", 15)
    assert not (node.state_dir / "run-4").exists() and not (node.state_dir / "run-5").exists()


def test_a_run_is_continued_once_with_its_own_settings_and_data(tmp_path):
    import dataclasses

    from deployment.client_app import resume_state
    from federation.run_settings import RunSettings

    node = _node(tmp_path)
    resume_state(node, RunSettings(), "run-1", flower_run=1)
    # a name belongs to one Flower run
    with pytest.raises(ConfigError, match="belongs to another run"):
        resume_state(node, RunSettings(), "run-1", flower_run=2)
    # other privacy settings: the same noise rescaled would reveal the clean values
    other = _resuming("/x/run-1")
    other = dataclasses.replace(other, privacy=dataclasses.replace(other.privacy,
                                                                   embedding_epsilon=9.0))
    with pytest.raises(ConfigError, match="the settings differ"):
        resume_state(node, other, "run-2", 3)
    # another data file under the same path
    node.data_path.write_text("id,x\na,2\n")
    with pytest.raises(ConfigError, match="the data file differs"):
        resume_state(node, _resuming("/x/run-1"), "run-2", 3)
    node.data_path.write_text("id,x\na,1\n")
    resume_state(node, _resuming("/x/run-1"), "run-2", 3)
    # once run-2 spent at this node, a second continuation of run-1 (a fork that would be
    # charged once) is refused (one that spent nothing does not hold run-1: issue 29)
    from deployment.client_app import continuation
    from federation.lifetime_budget import LifetimeBudget

    budget = LifetimeBudget.of(node.state_dir, None)
    continuation(node, _resuming("/x/run-1"), "run-2").record_spend(budget, "run-1",
                                                                    {"epsilon": 0.5})
    with pytest.raises(ConfigError, match="already continued by run 'run-2'"):
        resume_state(node, _resuming("/x/run-1"), "run-3", 4)


def test_reserved_names_and_a_short_noise_key_are_refused(tmp_path):
    from credit_data.errors import PrivacyLedgerError
    from fl_client.node_noise import kept_noise

    with pytest.raises(ConfigError, match="names the node's own files"):
        run_state_dir(tmp_path, "budget")
    key = tmp_path / "run" / "bureau" / "noise.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"")  # a crash between creating and writing it, in an older version
    with pytest.raises(PrivacyLedgerError, match="0 bytes"):
        kept_noise(key, tmp_path / "keys")


def test_a_node_keeps_its_blinded_sets_under_its_own_state_dir_whatever_the_run_says(tmp_path):
    # issue 20 review: federation.psi_cache in the run config would let a coordinator choose
    # where a node writes its PSI key; a deployed node uses <state-dir>/psi-cache
    import json

    from flwr.app import Context, RecordDict

    from deployment.client_app import PSI_CACHE, _settings
    from deployment.run_config import RUN_NAME, RUN_SETTINGS
    from experiments.deploy import federation as deploy

    data = tmp_path / "bureau.csv"
    data.write_text("customer_id,x\na,1\nb,2\n")
    _, plain = deploy.compose_settings([f"federation.psi_cache={tmp_path / 'elsewhere'}"])
    context = Context(run_id=1, node_id=1, state=RecordDict(),
                      node_config={"party": "bureau", "data-path": str(data),
                                   "state-dir": str(tmp_path / "state"), "max-epsilon": 3.0},
                      run_config={RUN_SETTINGS: json.dumps(plain), RUN_NAME: "run-1"})
    _, _, client = _settings(context)
    assert client.psi_cache == str(tmp_path / "state" / PSI_CACHE)


@pytest.mark.unit
def test_an_applicants_file_error_names_scoring_applicants(tmp_path: Path) -> None:
    # issue 29, item 7: `scoring.applicants=../data.csv` was reported as a bad run name, and an
    # empty applicants file was blamed on data.parties.lender.path
    from credit_data.errors import ConfigError, DataError
    from credit_data.files import load_party
    from credit_data.settings import DataSettings, PartySource
    from deployment.client_app import applicants_file

    with pytest.raises(ConfigError, match=r"scoring.applicants='\.\./data.csv': one plain file"):
        applicants_file(tmp_path, "../data.csv")
    assert applicants_file(tmp_path, "batch-0042.csv") == tmp_path / "batch-0042.csv"
    (tmp_path / "empty.csv").write_text("")
    source = PartySource(path=str(tmp_path / "empty.csv"),
                         named_by="scoring.applicants, in the node's --applicants-dir")
    with pytest.raises(DataError, match=r"empty.csv: file is empty \(scoring.applicants, in "):
        load_party("lender", source, DataSettings(), labels=False)
