"""Issue 30, finding 5: a node's noise key never rests beside what it protects.

The attack: the lender's ``noise.key``, left in the run directory after a stop, a resume or the
end of a run, undoes the label flips of whoever also holds the flipped labels (the server's
``checkpoint.pt`` keeps the last chunk's gradients, whose signs give them): 613 of 613 rows
exact. Now the run directory holds the key only sealed under the party's master key, which lives
outside it, and the key is removed when the run ends. Driven in-process on the unit tier's fake
grid, as tests/test_vertical_resume.py drives a stopped and resumed run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from credit_data.errors import PrivacyLedgerError
from credit_fl.vertical import VerticalSimulationSource, party_settings
from experiments.deploy import federation as deploy
from fl_client.node_noise import NOISE_KEY_FILE, kept_noise
from fl_client.vertical_app import make_vertical_client_app
from fl_client.vertical_task import LenderNode
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from privacy.accounting import flip_probability
from privacy.randomness import NoiseSource
from privacy.sealed_key import KEY_BYTES, MASTER_KEY_FILE, unseal
from tests.fake_grid import InProcessGrid, run_server_app

pytestmark = pytest.mark.unit

PARTIES = ("lender", "bureau")
BASE = ["federation=vertical", "data.n_customers=1200", "train.epochs=3",
        "train.early_stopping=false", "federation.parties=[lender,bureau]", "verbose=false",
        "privacy.target_epsilon=1"]  # label DP and DP-SGD, the node's secret noise


def _run(run_dir: Path, overrides: list[str], resume: Path | None = None):
    settings, _ = deploy.compose_settings(BASE + overrides)
    if resume is not None:
        settings = dataclasses.replace(settings, resume=str(resume))
        shutil.copytree(resume / "parties", run_dir / "parties")  # as the runner does
    clients = party_settings(settings, PARTIES, run_dir / "parties")
    source = VerticalSimulationSource(clients, settings.data, settings.seed)
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(vertical_server_settings(settings, PARTIES, run_dir),
                                            outcome),
                   InProcessGrid(make_vertical_client_app(source), len(PARTIES)))
    assert outcome.error is None, outcome.error
    return outcome, clients, source


def _flip_digests(run_dir: Path) -> list[str]:
    lines = (run_dir / "parties" / "lender" / "audit.jsonl").read_text().splitlines()
    return [e["node"]["label_flips_sha256"] for e in map(json.loads, lines)
            if "label_flips_sha256" in e.get("node", {})]


def _recovered(flipped: np.ndarray, truth: np.ndarray, node_with_key: LenderNode) -> float:
    """The attack: undo the flips with the flip mask a key draws; the share of exact rows."""
    mask = node_with_key.y_train != truth
    return float(np.mean(np.where(mask, 1 - flipped, flipped) == truth))


def test_a_run_directory_alone_holds_no_key_that_undoes_the_label_flips(tmp_path):
    first, clients, source = _run(tmp_path / "first", ["federation.stop_after=1"])
    assert first.stopped_after == 1
    lender = clients["lender"]
    party_dir = tmp_path / "first" / "parties" / "lender"
    # a stopped run keeps its key to be resumed, sealed, never in the clear
    assert not (party_dir / NOISE_KEY_FILE).exists()
    sealed = (party_dir / f"{NOISE_KEY_FILE}.sealed").read_bytes()
    assert lender.key_dir is not None
    key_dir = Path(lender.key_dir)
    assert tmp_path not in key_dir.parents  # the master key lives outside the run
    master = (key_dir / MASTER_KEY_FILE).read_bytes()
    assert (key_dir / MASTER_KEY_FILE).stat().st_mode & 0o077 == 0
    key = unseal(sealed, master, "lender", "sealed")  # the node (with its master key) opens it
    with pytest.raises(PrivacyLedgerError, match="does not open"):
        unseal(sealed, bytes(KEY_BYTES), "lender", "sealed")  # nobody else does

    # the attack, as the finding ran it: the flipped labels (what the last gradients' signs give
    # the server) undone with the flip mask drawn from a key found in the run directory
    rows = source._rows("lender", NoiseSource(key, True))
    node = LenderNode(lender, rows, ("bureau",), NoiseSource(key, True))
    truth, flipped = rows.y[node.train_rows], node.y_train
    flip = flip_probability(epsilon=1.0)
    assert np.mean(flipped != truth) == pytest.approx(flip, abs=0.06)
    assert _recovered(flipped, truth, node) == 1.0  # with the node's key: every row exact
    candidates = [p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()]
    keys = [c for c in candidates if len(c) == KEY_BYTES]
    keys += [sealed[i:i + KEY_BYTES] for i in range(len(sealed) - KEY_BYTES + 1)]
    best = max(_recovered(flipped, truth, LenderNode(lender, rows, ("bureau",),
                                                     NoiseSource(k, True))) for k in keys)
    # no better than keeping the flipped labels as they are (1 - flip), with a margin
    assert best <= 1 - flip + 0.05, best

    # the resumed run opens the same sealed key: the same flips (the lender's own audit log)
    second, _, _ = _run(tmp_path / "second", [], resume=tmp_path / "first")
    assert second.stopped_after is None and second.error is None
    digests = _flip_digests(tmp_path / "second")
    assert len(digests) > len(_flip_digests(tmp_path / "first")) > 0
    assert set(digests) == set(_flip_digests(tmp_path / "first"))
    # the finished run leaves no key, sealed or clear, in its directory, and draws no new one
    left = [p for p in (tmp_path / "second").rglob(f"{NOISE_KEY_FILE}*")
            if not p.name.endswith(".removed")]
    assert left == []
    assert (tmp_path / "second" / "parties" / "lender" / f"{NOISE_KEY_FILE}.removed").is_file()
    with pytest.raises(PrivacyLedgerError, match="key was removed"):
        kept_noise(tmp_path / "second" / "parties" / "lender" / NOISE_KEY_FILE, key_dir,
                   "lender")


def test_a_master_key_inside_the_run_directory_is_refused(tmp_path):
    from credit_data.errors import ConfigError

    with pytest.raises(ConfigError, match="inside the run's directory"):
        kept_noise(tmp_path / "run" / "lender" / NOISE_KEY_FILE, tmp_path / "run" / "keys")


def test_a_key_an_older_version_left_in_the_clear_is_sealed_and_removed(tmp_path):
    clear = tmp_path / "run" / "lender" / NOISE_KEY_FILE
    clear.parent.mkdir(parents=True)
    clear.write_bytes(b"k" * KEY_BYTES)
    source = kept_noise(clear, tmp_path / "keys", "lender")
    assert source.key == b"k" * KEY_BYTES  # the same draws as before
    assert not clear.exists()
    assert (clear.parent / f"{NOISE_KEY_FILE}.sealed").read_bytes() != b"k" * KEY_BYTES
