"""The privacy randomness holds against an adversary who knows every public value (issue 16).

Each test replays an attack that worked when the noise was a function of the config seed:
the attacker knows the seed, the party names, the round and epoch numbers, the sizes and the
code, and tries every way the old code derived its randomness from them (and the research
switch's derivation). Against the node's secret key it must do no better than chance.
"""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from credit_data.errors import PrivacyLedgerError
from credit_data.settings import DataSettings, Scaler
from credit_data.split import TRAIN, assign_split, reproducible_split_key
from credit_data.summary import column_counts
from credit_data.tables import PartyTable
from credit_data.vertical import NodeRows, node_rows
from federation.settings import FederationSettings, Mode
from fl_client.node_noise import private_node_rows
from fl_client.settings import ClientSettings
from fl_client.vertical_task import LenderNode, NodeState, PassiveNode
from models.local_training import DPRound, poisson_sample_rate, train_round
from models.networks import MLP
from models.settings import ModelSettings, TrainSettings
from models.split_training import embed
from privacy.accounting import flip_probability
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism, PrivacySettings
from privacy.summary import noisy_summary, summary_plan
from tests.conftest import run_experiment

SEED = 0


def _old_seed(*parts: object) -> int:
    """How the code before issue 16 derived every mechanism's seed from public values."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def _settings(party: str, privacy: PrivacySettings, epochs: int = 2) -> ClientSettings:
    return ClientSettings(
        party=party, seed=SEED,
        model=ModelSettings(hidden=(8,), encoder_hidden=(8,), embedding_dim=4, dropout=0.0),
        train=TrainSettings(epochs=epochs, batch_size=64),
        federation=FederationSettings(mode=Mode.vertical, exchanges_per_epoch=2),
        privacy=privacy)


def _rows(party: str, n: int = 600, labels: bool = False) -> NodeRows:
    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(n)]
    y = (rng.random(n) < 0.3).astype(np.float32) if labels else None
    split = np.full(n, TRAIN)
    return NodeRows(party, ids, rng.normal(size=(n, 5)).astype(np.float32), split,
                    tuple(f"x{i}" for i in range(5)), y)


# --- label flips ---------------------------------------------------------------------------

def test_a_passive_party_cannot_rebuild_the_lenders_label_flips_from_public_values():
    # Prepare: label DP at epsilon 1 (flip probability 0.27)
    privacy = PrivacySettings(label_epsilon=1.0)
    rows = _rows("lender", n=4000, labels=True)
    lender = LenderNode(_settings("lender", privacy), rows, ("bureau",), NoiseSource.fresh())
    truth = lender.y_train != rows.y
    p = flip_probability(epsilon=1.0)
    # Execute: every public derivation the attacker can think of
    guesses = {
        "old seed": np.random.default_rng(_old_seed(SEED, "labels")).random(len(truth)) < p,
        "research switch": NoiseSource.reproducible(SEED, "lender").numpy("label flips")
        .random(len(truth)) < p,
    }
    # Assert: among the flipped labels, each guess finds about p of them (chance), not all
    assert 0.2 < truth.mean() < 0.34
    for name, guess in guesses.items():
        found = guess[truth].mean()
        print(f"{name}: finds {found:.3f} of the flips (chance {p:.3f})")
        assert found < 0.4, name


def test_the_flip_digest_in_the_lenders_log_needs_the_key_to_check_a_guess():
    privacy = PrivacySettings(label_epsilon=1.0)
    rows = _rows("lender", n=200, labels=True)
    key = NoiseSource.fresh()
    lender = LenderNode(_settings("lender", privacy), rows, ("bureau",), key)
    mask = np.packbits(lender.y_train != rows.y).tobytes()
    assert lender.flip_digest() == key.commitment(mask)  # the node's own key checks the guess
    assert lender.flip_digest() != hashlib.sha256(mask).hexdigest()
    # a key derived from public values (the research switch's) does not
    assert lender.flip_digest() != NoiseSource.reproducible(0, "lender").commitment(mask)


def test_each_run_of_a_node_draws_with_a_key_of_its_own():
    key = NoiseSource.fresh()
    assert key.for_run(1).key != key.for_run(2).key
    assert key.for_run(1).key == key.for_run(1).key


def test_label_flips_are_drawn_once_and_kept_with_the_nodes_key():
    privacy = PrivacySettings(label_epsilon=1.0)
    rows = _rows("lender", n=2000, labels=True)
    key = NoiseSource.fresh()
    settings = _settings("lender", privacy)
    # every message builds the node again: with the key kept in the node's state, same flips
    first = LenderNode(settings, rows, ("bureau",), key)
    again = LenderNode(settings, rows, ("bureau",), key)
    other = LenderNode(settings, rows, ("bureau",), NoiseSource.fresh())
    assert first.flip_digest() == again.flip_digest()
    assert np.array_equal(first.y_train, again.y_train)
    assert first.flip_digest() != other.flip_digest()


# --- embedding noise -----------------------------------------------------------------------

def _releasing_party() -> tuple[PassiveNode, NodeRows, NodeState]:
    """A passive party releasing noisy embeddings (clip 1, epsilon 8), aligned on all rows."""
    privacy = PrivacySettings(embedding_epsilon=8.0, embedding_releases=1)
    rows = _rows("bureau")
    node = PassiveNode(_settings("bureau", privacy), rows, NoiseSource.fresh())
    return node, rows, NodeState(positions=np.arange(len(rows.ids)), splits=rows.split)


def _first_release(node: PassiveNode, state: NodeState) -> np.ndarray:
    released, _, _ = node.exchange(state, epoch=1, chunk=0, grads=None, prev=None, val_epoch=0)
    return released


def test_the_lender_cannot_subtract_a_partys_embedding_noise():
    # Prepare
    node, rows, state = _releasing_party()
    released = _first_release(node, state)
    chunk = node._chunk_positions(state, 1, 0)
    clean = embed(node._encoder(state.snapshots[1]), rows.x[chunk], clip=1.0)
    std = node._noise_std()
    # Execute: regenerate the noise from every public value and subtract it
    full = node._split_positions(state, TRAIN)
    where = np.searchsorted(full, chunk)
    attempts = {
        "old seed": torch.randn((len(full), 4), generator=torch.Generator().manual_seed(
            _old_seed(SEED, "bureau", "release", 1, TRAIN))).numpy() * std,
        "research switch": NoiseSource.reproducible(SEED, "bureau").numpy(
            "release", 1, TRAIN).normal(0, std, (len(full), 4)),
    }
    # Assert: what is left is the noise itself, not the clipped embedding to 1e-6
    for name, noise in attempts.items():
        error = np.abs(released - noise[where] - clean).mean()
        print(f"{name}: mean error {error:.3f} against noise std {std:.3f}")
        assert error > 0.5 * std, name
    assert np.abs(released - clean).mean() > 0.5 * std  # the release is noisy at all


def test_a_release_is_the_same_values_every_time_it_is_sent():
    node, _, state = _releasing_party()
    # re-sent, not redrawn: the receiver gains nothing
    assert np.array_equal(_first_release(node, state), _first_release(node, state))


# --- DP-SGD --------------------------------------------------------------------------------

def _dp_round(secret, n=1200):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, 6)).astype(np.float32), (rng.random(n) < 0.3).astype(np.float32)
    torch.manual_seed(0)
    model = MLP(6, (8,), 0.0)
    rate = poisson_sample_rate(n, 128)
    train_round(model, x, y, epochs=1, batch_size=128, lr=0.01, weight_decay=0.0, seed=7,
                dp=DPRound(1.0, 1.0, rate, 1e-5), secret=secret)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_dpsgd_round_cannot_be_replayed_from_public_values():
    key = NoiseSource.fresh()
    node = _dp_round((key.torch("sampling", 1), key.torch("dpsgd", 1)))
    # the attacker replays the round with every public seed the old code used
    public = torch.Generator().manual_seed(7)
    replays = [_dp_round((public, torch.Generator().manual_seed(7))),
               _dp_round((NoiseSource.reproducible(SEED, "lender-0").torch("sampling", 1),
                          NoiseSource.reproducible(SEED, "lender-0").torch("dpsgd", 1)))]
    for replay in replays:
        assert (node - replay).abs().max() > 1e-3
    # a step run again draws anew from the OS: never the same noise on other inputs
    again = _dp_round((key.fresh_torch("sampling", 1), key.fresh_torch("dpsgd", 1)))
    assert not torch.equal(_dp_round((key.fresh_torch("sampling", 1),
                                      key.fresh_torch("dpsgd", 1))), again)


def test_dpsgd_refuses_to_run_without_secret_generators():
    with pytest.raises(PrivacyLedgerError, match="DP-SGD needs generators from the party's "
                                                 "secret source"):
        _dp_round(None)


# --- noisy summaries (horizontal schema statistics, preprocessing under DP) --------------

def test_two_summaries_with_and_without_a_target_record_do_not_reveal_it():
    # Prepare: a lender's training rows, and the same rows with one target record added
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"income": rng.lognormal(10, 0.5, 5000), "age": rng.integers(18, 80,
                          5000).astype(float), "region": rng.choice(["n", "s", "e"], 5000)})
    target = pd.DataFrame({"income": [1_234_567.0], "age": [99.0], "region": ["rare-town"]})
    plan = summary_plan(target_epsilon=3.0, share=0.1, delta=1e-5)
    hits = 0
    trials = 40
    for _ in range(trials):
        # Execute: the server differences the two messages (each with the lender's own noise)
        without = noisy_summary(column_counts(frame, ("income", "age"), ("region",)), plan=plan,
                                noise=NoiseSource.fresh())
        with_target = noisy_summary(column_counts(pd.concat([frame, target]), ("income", "age"),
                                                  ("region",)), plan=plan,
                                    noise=NoiseSource.fresh())
        diff = np.asarray(with_target["numeric"]["income"]) - np.asarray(without["numeric"]
                                                                         ["income"])
        true_cell = int(np.flatnonzero(column_counts(target, ("income",), ()).numeric["income"]
                                       [:-1])[0])
        hits += int(np.argmax(diff[:-1]) == true_cell)
        # the rare category never appears; no exact sum or count is sent
        assert "rare-town" not in with_target["categorical"]["region"]
        assert "sum" not in json.dumps(with_target)
    # Assert: the target's cell is found no more often than chance would allow
    print(f"the difference points at the target's income cell in {hits} of {trials} trials")
    assert hits <= 3


def test_exact_statistics_did_reveal_the_record():
    """The attack the noisy summary stops (so the test above can fail)."""
    from credit_data.federated_scaling import local_moments
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"income": rng.lognormal(10, 0.5, 5000)})
    target = pd.DataFrame({"income": [1_234_567.0]})
    a = local_moments(frame, ("income",), ())
    b = local_moments(pd.concat([frame, target]), ("income",), ())
    assert b["numeric"]["income"][1] - a["numeric"]["income"][1] == pytest.approx(1_234_567.0)


def test_dp_preprocessing_never_holds_the_exact_minimum_or_maximum():
    rng = np.random.default_rng(4)
    n = 20_000
    frame = pd.DataFrame({"x": rng.normal(50, 10, n), "c": rng.choice(["a", "b"], n)})
    frame.index = pd.Index([f"id{i}" for i in range(n)], name="id")
    data = DataSettings(scaler=Scaler.quantile)
    key = reproducible_split_key(SEED, "bureau")
    first, second = np.flatnonzero(assign_split(frame.index, key, data.split) == TRAIN)[:2]
    frame.iloc[first, 0], frame.iloc[second, 1] = 1e6, "only-one"  # in the training rows
    table = PartyTable("bureau", frame, ("x",), ("c",), "test")
    privacy = PrivacySettings(mechanism=PrivacyMechanism.dpsgd)
    private = private_node_rows(table, data, SEED, privacy, NoiseSource.fresh(), key)
    exact = node_rows(table, data, SEED, key)
    assert "c=only-one" in exact.names and "c=only-one" not in private.names
    assert private.summary_history and private.summary_selection_delta > 0
    # the outlier is an ordinary "high" value, not the end point the transform pins
    train = private.split == TRAIN
    assert exact.x[first, 0] > 5  # the exact transform pins the maximum far out
    assert private.x[first, 0] < 3.5
    assert private.x[first, 0] <= private.x[train, 0].max()


# --- whole runs ----------------------------------------------------------------------------

VERTICAL = ["federation=vertical", "data.n_customers=3000", "train.epochs=2"]


@pytest.fixture(scope="module")
def twice(vertical_pairs):
    """Two private runs and two plain ones of the same config (shared with other modules)."""
    return vertical_pairs


def test_the_same_private_run_twice_draws_different_noise(twice):
    (a_dir, a), (b_dir, b) = twice["private"]
    scores_a = pd.read_csv(a_dir / "predictions.csv")["score"]
    scores_b = pd.read_csv(b_dir / "predictions.csv")["score"]
    assert not np.allclose(scores_a, scores_b)
    assert a["privacy"]["guarantee"] and a["privacy"]["parties"]["lender/dpsgd"]["noise"] == "os"
    # nothing computed from the training rows' labels or scores is published under DP
    assert a["dataset"]["positive_rate"]["train"] is None
    assert a["metrics"]["test"]["psi_reference"] == "val"
    assert b["dataset"]["positive_rate"]["test"] is not None


def test_the_same_plain_run_twice_is_identical(twice):
    (a_dir, a), (b_dir, b) = twice["plain"]
    assert pd.read_csv(a_dir / "predictions.csv").equals(pd.read_csv(b_dir / "predictions.csv"))
    assert a["metrics"]["test"] == b["metrics"]["test"]


def _flip_digests(run_dir):
    lines = [json.loads(x) for x in
             (run_dir / "parties" / "lender" / "audit.jsonl").read_text().splitlines()]
    return [x["node"]["label_flips_sha256"] for x in lines if x.get("node")]


def test_label_flips_stay_the_same_across_messages_and_differ_between_runs(twice):
    (a_dir, _), (b_dir, _) = twice["private"]
    a, b = _flip_digests(a_dir), _flip_digests(b_dir)
    assert len(a) >= 4 and len(set(a)) == 1  # every train.head message: the same flips
    assert set(a) != set(b)


def test_reproducible_noise_is_labelled_no_guarantee(tmp_path):
    r = run_experiment(VERTICAL + ["privacy=label_dp_dpsgd", "privacy.reproducible_noise=true"],
                       tmp_path)
    assert r["privacy"]["guarantee"] is False
    assert all(e["noise"] == "reproducible" for e in r["privacy"]["parties"].values())
    assert "NO guarantee" in (tmp_path / "report.md").read_text()
