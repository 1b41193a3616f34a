"""A vertical node's privacy bookkeeping, driven in-process (no Flower, no Ray)."""

import numpy as np
import pytest

from fl_client.vertical_task import LenderNode, NodeState
from privacy.accounting import epsilon_of
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism, PrivacySettings
from tests.test_secret_randomness import _rows, _settings


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
    assert m["dpsgd_epsilon"] == pytest.approx(epsilon_of(history, spend["delta"]
                                                          - spend["selection_delta"]))
    assert "train_loss" not in m  # the training loss stays at the lender under DP


def test_without_dp_the_training_loss_is_reported():
    node, state = _lender(PrivacySettings())
    m = _exchange(node, state, 1, 0)
    assert m["train_loss"] > 0 and "dpsgd_steps" not in m
