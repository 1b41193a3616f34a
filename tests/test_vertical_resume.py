"""Issue 19, item 12: a vertical run that stops part-way continues with ``resume=<run dir>``.

The same final model and ledger as an uninterrupted run, the alignment not redone, and no
noise drawn twice (the nodes keep their key, flips, summary and accountant on their own disk).
Driven on the unit tier's in-process grid, the way the runner drives Flower's engines.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from credit_fl.vertical import VerticalSimulationSource, party_settings
from experiments.deploy import federation as deploy
from federation.protocol import VerticalMessage
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from tests.fake_grid import InProcessGrid, run_server_app

pytestmark = pytest.mark.unit

PARTIES = ("lender", "bureau")
BASE = ["federation=vertical", "data.n_customers=1200", "train.epochs=4",
        "train.early_stopping=false", "federation.parties=[lender,bureau]", "verbose=false",
        "federation.exchanges_per_epoch=3"]


def _run(run_dir: Path, overrides: list[str], resume: Path | None = None, unavailable=None):
    settings, _ = deploy.compose_settings(BASE + overrides)
    if resume is not None:
        settings = dataclasses.replace(settings, resume=str(resume))
        shutil.copytree(resume / "parties", run_dir / "parties")  # as the runner does
    clients = party_settings(settings, PARTIES, run_dir / "parties")
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))
    grid = InProcessGrid(app, len(PARTIES), unavailable=unavailable)
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(vertical_server_settings(settings, PARTIES, run_dir),
                                            outcome), grid)
    assert unavailable is not None or outcome.error is None, outcome.error
    return outcome, grid


@pytest.mark.parametrize("privacy", [
    ["privacy=off"],
    ["privacy.reproducible_noise=true"],  # label DP and DP-SGD, noise that can be compared
], ids=["no-dp", "dp"])
def test_a_stopped_vertical_run_resumes_to_the_same_model_and_ledger(tmp_path, privacy):
    whole, _ = _run(tmp_path / "whole", privacy)
    first, _ = _run(tmp_path / "first", privacy + ["federation.stop_after=2"])
    assert first.stopped_after == 2
    second, grid = _run(tmp_path / "second", privacy, resume=tmp_path / "first")
    # the alignment was not redone
    kinds = {m.metadata.message_type for m in grid.sent}
    assert str(VerticalMessage.PSI_SETUP) not in kinds
    assert str(VerticalMessage.PSI_REQUEST) not in kinds
    def counts(alignment):  # whether a party's blinded set came from its cache may differ
        return {p: {k: v for k, v in a.items() if k != "setup_cached"}
                for p, a in alignment.items()}

    assert counts(second.alignment) == counts(whole.alignment)
    # the same model: the same scores on every split, the same history
    assert second.final == whole.final
    assert [r.get("val_auc") for r in second.history] == [r.get("val_auc")
                                                          for r in whole.history]
    # the same ledger: no step, release or flip counted twice or lost
    if whole.ledger is not None:
        assert second.ledger is not None
        assert second.ledger.summary() == whole.ledger.summary()


def _embed_of(epoch: int, chunk: int):
    def gone(message) -> bool:
        config = message.content.config_records.get("config")
        return (message.metadata.message_type == str(VerticalMessage.EMBED) and config is not None
                and int(config["epoch"]) == epoch and int(config["chunk"]) == chunk)
    return gone


@pytest.mark.parametrize("privacy", [
    ["privacy=off"],
    # the repeated exchange spends again, past a budget planned for each step once: the nodes
    # need room above the target to resume (at max_epsilon = target they refuse; below)
    ["privacy.reproducible_noise=true", "privacy.max_epsilon=4"]], ids=["no-dp", "dp"])
def test_a_run_that_failed_mid_epoch_resumes_from_the_epoch_before(tmp_path, privacy):
    whole, _ = _run(tmp_path / "whole", privacy)
    # the bureau's node goes away in epoch 3, after the epoch's first exchange
    failed, _ = _run(tmp_path / "failed", privacy, unavailable=_embed_of(3, 1))
    assert "Node Unavailable" in str(failed.error)
    second, grid = _run(tmp_path / "second", privacy, resume=tmp_path / "failed")
    assert second.resumed_after == 2  # the server's last checkpoint
    assert second.final == whole.final  # the nodes went back to their copy of that point
    if whole.ledger is not None:  # the exchange done twice is counted twice, never lost
        assert second.ledger is not None
        again = second.ledger.summary()["parties"]["bureau/dpsgd"]
        once = whole.ledger.summary()["parties"]["bureau/dpsgd"]
        assert again["steps"] > once["steps"] and again["epsilon"] > once["epsilon"]


def test_a_resume_that_would_spend_past_the_cap_is_refused(tmp_path):
    privacy = ["privacy.reproducible_noise=true"]  # max_epsilon: the target, 3
    _run(tmp_path / "failed", privacy, unavailable=_embed_of(3, 1))
    settings_error, _ = _run(tmp_path / "second", privacy, resume=tmp_path / "failed",
                             unavailable=lambda m: False)
    assert "past this node's max_epsilon 3" in str(settings_error.error)
