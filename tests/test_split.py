import numpy as np
import pandas as pd
import pytest

from credit_data.errors import AlignmentError, ConfigError
from credit_data.settings import SplitSettings
from credit_data.split import TEST, TRAIN, VAL, assign_split, reproducible_split_key
from federation.alignment import LenderAlignment, PartyAlignment
from federation.run_settings import RunSettings
from fl_client.node_noise import node_split_key
from fl_client.settings import client_settings
from privacy.settings import PrivacySettings
from privacy.split_key import derive_split_key

pytestmark = pytest.mark.unit

KEY = bytes(range(32))


def test_fractions_and_determinism():
    ids = pd.Index([f"C{i}" for i in range(50_000)])
    s = SplitSettings(val=0.1, test=0.2)
    a = assign_split(ids, KEY, s)
    assert np.array_equal(a, assign_split(ids, KEY, s))
    assert abs((a == VAL).mean() - 0.1) < 0.01
    assert abs((a == TEST).mean() - 0.2) < 0.01
    assert abs((a == TRAIN).mean() - 0.7) < 0.01
    assert (a != assign_split(ids, bytes(32), s)).mean() > 0.3


def test_the_same_key_splits_a_customer_the_same_in_any_table():
    s = SplitSettings()
    lender = pd.Index([f"C{i}" for i in range(0, 10_000)])
    bureau = pd.Index([f"C{i}" for i in range(5_000, 20_000)][::-1])
    a = pd.Series(assign_split(lender, KEY, s), index=lender)
    b = pd.Series(assign_split(bureau, KEY, s), index=bureau)
    shared = lender.intersection(bureau)
    assert len(shared) == 5_000
    assert (a[shared] == b[shared]).all()


@pytest.mark.parametrize(("val", "test", "key"), [(0.0, 0.2, "data.split.val"),
                                                   (0.2, 1.2, "data.split.test"),
                                                   (0.5, 0.5, "data.split.val")])
def test_bad_fractions_name_the_key(val, test, key):
    with pytest.raises(ConfigError, match=key):
        assign_split(pd.Index(["a"]), KEY, SplitSettings(val=val, test=test))


def test_a_split_key_too_short_to_be_secret_is_refused():
    with pytest.raises(ConfigError, match="a split key of 8 bytes"):
        assign_split(pd.Index(["a"]), bytes(8), SplitSettings())


# --- issue 30, finding 9: the split is the node's, not the coordinator's -----------------------

IDS = pd.Index([f"C{i:05d}" for i in range(5_000)])


def _lender_split(seed: int, key_dir, reproducible_noise: bool = False) -> np.ndarray:
    """The lender node's split of IDS in a run whose config (seed included) the coordinator set."""
    run = RunSettings(seed=seed, privacy=PrivacySettings(reproducible_noise=reproducible_noise))
    settings = client_settings(run, "lender", None, key_dir=str(key_dir))
    return assign_split(IDS, node_split_key(settings), run.data.split)


def test_the_coordinator_cannot_move_a_customer_out_of_training_by_picking_seeds(tmp_path):
    # Prepare: a customer the lender trains on, and the seeds a coordinator would try
    first = _lender_split(0, tmp_path / "lender")
    target = int(np.flatnonzero(first == TRAIN)[0])
    # Execute: every run the coordinator configures, each with its own seed
    splits = [_lender_split(seed, tmp_path / "lender") for seed in range(1, 40)]
    # Assert: the node's key alone decides; no seed moves the customer, or any other
    assert all(s[target] == TRAIN for s in splits)
    assert all(np.array_equal(s, first) for s in splits)
    # the attack the key stops: where the seed decides (reproducible research runs), a few
    # seeds move the customer out of training
    moved = [seed for seed in range(1, 40)
             if _lender_split(seed, tmp_path / "lender", reproducible_noise=True)[target] != TRAIN]
    assert moved


def test_nodes_with_different_keys_split_differently(tmp_path):
    a = _lender_split(0, tmp_path / "node-a")
    b = _lender_split(0, tmp_path / "node-b")
    assert (a != b).mean() > 0.3  # unrelated keys: about 46% of customers split otherwise
    assert derive_split_key(tmp_path / "node-a", "lender", seed=0, reproducible=False) != \
        derive_split_key(tmp_path / "node-b", "lender", seed=0, reproducible=False)


def test_a_deployed_node_keys_its_split_on_its_own_master_key_whatever_the_run_asks(tmp_path):
    from deployment.client_app import NodeConfig, _split_key

    node = NodeConfig("lender", tmp_path / "data.csv", tmp_path / "state")
    runs = [RunSettings(seed=seed, privacy=PrivacySettings(reproducible_noise=True))
            for seed in (0, 7, 123)]
    keys = {_split_key(run, node) for run in runs}
    assert keys == {derive_split_key(tmp_path / "state", "lender", seed=0, reproducible=False)}
    assert (tmp_path / "state" / "master.key").stat().st_mode & 0o077 == 0


def test_a_passive_party_gets_the_lenders_split_of_the_customers_they_share():
    # Prepare: the lender's applicants and split; a bureau that knows some of them
    applicants = [f"C{i}" for i in range(300)]
    split = assign_split(pd.Index(applicants), KEY, SplitSettings())
    customers = [f"C{i}" for i in range(150, 600)][::-1]
    lender, bureau = LenderAlignment(applicants), PartyAlignment("bureau", customers)
    setup = bureau.setup(len(applicants))
    request, lender_key = lender.request()
    response, party_key = bureau.answer(request, lender_key)
    # Execute
    sealed, known = lender.intersect("bureau", setup, response, party_key, splits=split)
    positions, splits = bureau.receive_split(sealed)
    # Assert: the shared customers, each with the lender's split (not the bureau's own key's)
    shared = [customers[i] for i in positions]
    assert sorted(shared) == sorted(np.asarray(applicants)[known].tolist())
    assert splits.tolist() == [int(split[applicants.index(c)]) for c in shared]
    own = assign_split(pd.Index(shared), reproducible_split_key(0, "bureau"), SplitSettings())
    assert (own != splits).any()
    with pytest.raises(AlignmentError, match="carries no split"):  # sealed without splits
        PartyAlignment("bureau", customers, key=bureau.channel_key).receive_split(
            lender.intersect("bureau", setup, response, party_key)[0])
