"""A coordinator that replays a node's messages (review of issue 19's resume).

A repeated exchange in the middle of an epoch would train on the same records again while the
node counts them once; a final request before training would release every aligned row from an
encoder no release counted; a rollback that drew a release anew from another encoder with the
same noise would reveal the difference of two clean embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest

from credit_data.errors import BudgetRefusal
from fl_client.node_store import at_epoch_start
from fl_client.vertical_task import NodeState, PassiveNode
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism, PrivacySettings
from tests.test_secret_randomness import _rows, _settings

pytestmark = pytest.mark.unit

NOISY = PrivacySettings(mechanism=PrivacyMechanism.dpsgd, target_epsilon=3.0,
                        embedding_epsilon=3.0, embedding_releases=2)


def _passive(tmp_path, privacy=NOISY):
    import dataclasses

    settings = dataclasses.replace(_settings("bureau", privacy, epochs=3),
                                   state_dir=str(tmp_path))
    rows = _rows("bureau")
    node = PassiveNode(settings, rows, NoiseSource.fresh())
    state = NodeState(positions=np.arange(len(rows.ids)), splits=rows.split)
    return settings, node, state


def _exchange(settings, node, state, epoch, chunk, prev=None):
    state = at_epoch_start(settings, state, epoch, chunk)
    grads = None
    if prev is not None:
        rows = node._chunk_positions(state, *prev)
        grads = np.ones((len(rows), 4), np.float32) * 0.01
    train, _, metrics = node.exchange(state, epoch=epoch, chunk=chunk, grads=grads, prev=prev,
                                      val_epoch=0)
    state.last = [epoch, chunk]
    return state, train, metrics


def test_a_repeated_exchange_in_the_middle_of_an_epoch_is_refused(tmp_path):
    settings, node, state = _passive(tmp_path)
    state, _, _ = _exchange(settings, node, state, 1, 0)
    state, _, _ = _exchange(settings, node, state, 1, 1, prev=(1, 0))
    with pytest.raises(RuntimeError, match="epoch 1, chunk 1 was already exchanged"):
        _exchange(settings, node, state, 1, 1, prev=(1, 0))


def test_a_final_request_before_training_is_refused(tmp_path):
    _, node, state = _passive(tmp_path)
    with pytest.raises(BudgetRefusal, match="before this node has trained"):
        node.final(state, 0)


def test_a_replayed_epoch_start_sends_the_same_noisy_release_again(tmp_path):
    from fl_client.node_store import save_state, state_path

    settings, node, state = _passive(tmp_path)
    state, first, _ = _exchange(settings, node, state, 1, 0)  # the first release (epoch 1)
    state, _, _ = _exchange(settings, node, state, 1, 1, prev=(1, 0))
    state_path(settings).parent.mkdir(parents=True, exist_ok=True)
    save_state(settings, None, state)  # type: ignore[arg-type]
    # the coordinator sends epoch 1's first exchange again: the node goes back to its copy,
    # keeps the release it made, and sends the very same values
    again, second, metrics = _exchange(settings, node, state, 1, 0)
    assert np.array_equal(first, second)
    assert again.releases == [1]
    assert metrics["embedding_releases"] == 1
    assert again.abandoned_steps > 0  # the DP-SGD steps of chunk (1, 0) stay counted


def test_a_new_alignment_after_training_is_refused(tmp_path):
    # issue 19, item 2: re-sending the alignment step started a fresh node state (and a fresh
    # accountant) within a run
    from flwr.app import ConfigRecord, Message, RecordDict

    from credit_fl.vertical import VerticalSimulationSource, party_settings
    from experiments.deploy import federation as deploy
    from federation.protocol import CONFIG, VerticalMessage
    from fl_client.vertical_app import make_vertical_client_app
    from fl_server.app_factory import make_vertical_server_app
    from fl_server.settings import vertical_server_settings
    from fl_server.vertical_rounds import VerticalOutcome
    from tests.fake_grid import InProcessGrid, run_server_app, serving

    settings, _ = deploy.compose_settings([
        "federation=vertical", "data.n_customers=400", "train.epochs=2", "verbose=false",
        "federation.parties=[lender,bureau]", "federation.stop_after=1"])  # the run goes on
    parties = ("lender", "bureau")
    clients = party_settings(settings, parties, tmp_path / "parties")
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))
    grid = InProcessGrid(app, 2)
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(vertical_server_settings(settings, parties,
                                                                     tmp_path), outcome), grid)
    assert outcome.error is None, outcome.error
    with serving():
        ids = grid.push_messages([Message(RecordDict({CONFIG: ConfigRecord({"lender_rows": 400})}),
                                          dst_node_id=101,
                                          message_type=str(VerticalMessage.PSI_SETUP))])
        reply = list(grid.pull_messages(ids))[0]
    assert "already trained at this node" in str(reply.content[CONFIG]["refused"])
