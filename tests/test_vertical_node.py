"""A vertical node's privacy bookkeeping, driven in-process (no Flower, no Ray)."""

import numpy as np
import pytest

from fl_client.vertical_task import LenderNode, NodeState
from privacy.accounting import epsilon_of
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism, PrivacySettings
from tests.test_secret_randomness import _rows, _settings

pytestmark = pytest.mark.unit


def _lender(privacy: PrivacySettings) -> tuple[LenderNode, NodeState]:
    rows = _rows("lender", n=900, labels=True)
    node = LenderNode(_settings("lender", privacy), rows, ("bureau",), NoiseSource.fresh())
    state = NodeState(masks={"bureau": np.ones(len(rows.ids), bool)})
    return node, state


def _exchange(node: LenderNode, state: NodeState, epoch: int, chunk: int) -> dict:
    rows = node.train_rows[node._chunk(epoch, chunk)]
    embeddings = {"bureau": np.zeros((len(rows), 4), np.float32)}
    _, metrics = node.exchange(state, epoch=epoch, chunk=chunk, embeddings=embeddings, val=None,
                               val_epoch=0)
    return metrics


def test_the_ledger_counts_the_dpsgd_steps_that_ran():
    # Prepare: DP-SGD at the lender, two chunks per epoch
    node, state = _lender(PrivacySettings(mechanism=PrivacyMechanism.dpsgd))
    ran: dict[int, int] = {}
    # Execute: two epochs of two chunks
    for epoch in (1, 2):
        for chunk in (0, 1):
            m = _exchange(node, state, epoch, chunk)
            ran[epoch] = max(ran.get(epoch, 0), int(m["steps"]))
    # Assert: a record sits in one chunk per epoch, so its steps are the largest chunk's
    assert m["dpsgd_steps"] == sum(ran.values()) > 0
    spend = node._dp_spend(state, len(node.train_rows))
    history = [tuple(h) for h in spend["history"]]
    assert history[-1] == (m["dpsgd_noise_multiplier"], m["dpsgd_sample_rate"], sum(ran.values()))
    assert m["dpsgd_epsilon"] == pytest.approx(epsilon_of(history, delta=spend["delta"]
                                                          - spend["selection_delta"]))
    assert "train_loss" not in m  # the training loss stays at the lender under DP


def test_without_dp_the_training_loss_is_reported():
    node, state = _lender(PrivacySettings())
    m = _exchange(node, state, 1, 0)
    assert m["train_loss"] > 0 and "dpsgd_steps" not in m


def test_a_nodes_state_stays_on_its_own_disk_and_loads_no_code(tmp_path):
    import pickle

    from flwr.app import Context, RecordDict

    from fl_client.node_store import load_state, save_state, state_path
    from fl_client.settings import ClientSettings

    # Prepare: a lender's state after two exchanges
    node, state = _lender(PrivacySettings())
    for chunk in (0, 1):
        _exchange(node, state, 1, chunk)
    settings = ClientSettings(**{**node.settings.__dict__, "state_dir": str(tmp_path)})
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    # Execute
    save_state(settings, context, state)
    again = load_state(settings, context)
    # Assert: on the node's disk, not in the state Flower ships with each message
    assert state_path(settings).is_file() and not context.state.config_records
    assert np.array_equal(again.masks["bureau"], state.masks["bureau"])
    assert again.history == state.history and again.best_epoch == state.best_epoch
    assert all(np.array_equal(a, b) for a, b in zip(again.model.values(), state.model.values(),
                                                    strict=True))
    # a state file replaced by a pickle that would run code is refused, not run
    state_path(settings).write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed|Unsupported"):
        load_state(settings, context)


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))
