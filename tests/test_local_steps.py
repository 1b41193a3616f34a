"""``federation.local_steps``: FedBCD's Q local steps per batch in vertical training (issue 36).

One step per batch is the training from before local steps, bit for bit; Q steps take Q
optimizer steps on each batch; under DP-SGD a batch's Q steps are accounted as one Gaussian of
multiplier ``sigma / sqrt(Q)`` amplified once by the batch's sampling, not as Q sampled batches.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from credit_data.errors import ConfigError
from credit_data.split import TRAIN
from credit_data.vertical import NodeRows
from federation.settings import FederationSettings, Mode, check_federation
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState, PassiveNode
from fl_server.vertical_rounds import _record_privacy
from models.networks import PartyEncoder
from models.settings import ModelSettings, TrainSettings
from models.split_training import DPPlan, InnerProductLoss, fit_chunk
from privacy.accounting import epsilon_of, noise_multiplier_after, party_delta
from privacy.ledger import PrivacyLedger
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism, PrivacySettings
from tests.conftest import CONF_DIR

pytestmark = pytest.mark.unit


def _chunk(n: int = 300, width: int = 5, dim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return (rng.normal(size=(n, width)).astype(np.float32),
            rng.normal(size=(n, dim)).astype(np.float32))


def _encoder() -> PartyEncoder:
    torch.manual_seed(11)
    return PartyEncoder(5, (8,), 4, 0.1)  # dropout on: its draws must match too


def _loop_before_local_steps(model, optimizer, x, target, criterion, *, batch_size, passes,
                             generator) -> tuple[float, int]:
    """fit_chunk's plain path as it was before ``local_steps`` (one step per batch)."""
    torch.manual_seed(generator.initial_seed())
    xt, tt = torch.as_tensor(x), torch.as_tensor(target)
    model.train()
    total, seen, steps = 0.0, 0, 0
    for _ in range(passes):
        order = torch.randperm(len(xt), generator=generator)
        for i in range(0, len(order), batch_size):
            batch = order[i:i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xt[batch]), tt[batch])
            loss.backward()
            optimizer.step()
            total, seen, steps = total + loss.item() * len(batch), seen + len(batch), steps + 1
    return total / max(seen, 1), steps


def _train(local_steps: int | None) -> tuple[dict[str, torch.Tensor], tuple[float, int], dict]:
    x, grads = _chunk()
    model = _encoder()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(7)
    if local_steps is None:
        out = _loop_before_local_steps(model, optimizer, x, grads, InnerProductLoss(),
                                       batch_size=64, passes=2, generator=generator)
    else:
        out = fit_chunk(model, optimizer, x, grads, InnerProductLoss(), batch_size=64, passes=2,
                        generator=generator, local_steps=local_steps)
    return model.state_dict(), out, optimizer.state_dict()


def test_one_local_step_is_the_training_before_local_steps_exactly():
    # Prepare / Execute: the same seed, non-private, today's loop and local_steps=1
    before, (loss_before, steps_before), _ = _train(None)
    now, (loss_now, steps_now), _ = _train(1)
    # Assert: the same weights to the bit, the same loss and step count
    assert before.keys() == now.keys()
    for name in before:
        assert torch.equal(before[name], now[name]), name
    assert (loss_now, steps_now) == (loss_before, steps_before) == (loss_before, 10)


def test_q_local_steps_take_q_optimizer_steps_on_each_batch():
    one, (_, batches_one), _ = _train(1)
    three, (_, batches_three), state = _train(3)
    # 2 passes over 300 rows in batches of 64: 10 batches, each 3 Adam steps
    assert batches_one == batches_three == 10
    assert {int(s["step"]) for s in state["state"].values()} == {30}
    assert any(not torch.equal(one[k], three[k]) for k in one)


def test_local_steps_defaults_agree_in_python_and_hydra_and_zero_is_refused():
    yaml = OmegaConf.load(CONF_DIR / "federation" / "vertical.yaml")
    assert FederationSettings().local_steps == yaml.federation.local_steps
    with pytest.raises(ConfigError, match=r"federation\.local_steps is out of range: 0"):
        check_federation(FederationSettings(local_steps=0), 3)


# --- DP-SGD: a batch's Q steps compose into one Gaussian, sampled once -------------------------

TARGET, Q, N = 3.0, 2, 600


def _passive(local_steps: int) -> tuple[PassiveNode, NodeState]:
    rng = np.random.default_rng(1)
    rows = NodeRows("bureau", [f"c{i}" for i in range(N)],
                    rng.normal(size=(N, 5)).astype(np.float32), np.full(N, TRAIN),
                    tuple(f"x{i}" for i in range(5)), None)
    settings = ClientSettings(
        party="bureau", seed=0,
        model=ModelSettings(hidden=(8,), encoder_hidden=(8,), embedding_dim=4, dropout=0.0),
        train=TrainSettings(epochs=3, batch_size=64),
        federation=FederationSettings(mode=Mode.vertical, exchanges_per_epoch=2,
                                      local_steps=local_steps),
        privacy=PrivacySettings(mechanism=PrivacyMechanism.dpsgd, target_epsilon=TARGET,
                                max_grad_norm=1.0))
    node = PassiveNode(settings, rows, NoiseSource.fresh())
    return node, NodeState(positions=np.arange(N), splits=rows.split)


def test_dp_sgd_accounts_a_batchs_local_steps_as_one_gaussian_sampled_once():
    # Prepare: a party with DP-SGD at epsilon 3 and two local steps per batch
    node, state = _passive(Q)
    plan = node._dp_plan(N)
    assert plan is not None and plan.local_steps == Q
    chunk = node._chunk_positions(state, 1, 0)
    grads = np.random.default_rng(2).normal(size=(len(chunk), 4)).astype(np.float32)
    # Execute: the party trains on the lender's gradients for chunk (1, 0); the server records
    _, _, metrics = node.exchange(state, epoch=1, chunk=1, grads=grads, prev=(1, 0),
                                  val_epoch=0)
    ledger = PrivacyLedger("dpsgd")
    _record_privacy(ledger, 1, "bureau", metrics, "os")
    entry = ledger.summary()["parties"]["bureau/dpsgd"]
    # Assert: each step's noise is sqrt(Q) times the calibrated multiplier, and the ledger
    # composes one Gaussian of sigma_step / sqrt(Q) per sampled batch
    delta = party_delta(delta=None, n_rows=N)
    q = plan.sample_rate
    planned = 3 * plan.steps_per_pass  # train.epochs x passes x batches per pass
    calibrated = noise_multiplier_after(target_epsilon=TARGET, delta=delta, sample_rate=q,
                                        steps=planned, prior=())
    assert plan.noise_multiplier == pytest.approx(calibrated * math.sqrt(Q))
    assert entry["noise_multiplier"] == pytest.approx(calibrated)
    batches = plan.steps_per_pass
    assert entry["steps"] == batches
    adam_steps = {int(s["step"]) for s in state.optimizer["state"].values()}
    assert adam_steps == {Q * batches}  # every local step touched the rows, with noise
    assert entry["epsilon"] == pytest.approx(epsilon_of([(calibrated, q, batches)], delta=delta))
    # the whole planned training lands on the target ...
    full = epsilon_of([(plan.batch_multiplier, q, planned)], delta=delta)
    assert full == pytest.approx(TARGET, rel=0.01) and full <= TARGET
    # ... where counting the Q steps as Q freshly sampled batches would have understated it
    naive = epsilon_of([(plan.noise_multiplier, q, Q * planned)], delta=delta)
    print(f"epsilon over the plan: per batch {full:.3f}, as independent steps {naive:.3f}")
    assert naive < 0.95 * full


def test_one_local_step_keeps_the_dp_plan_before_local_steps():
    node_one, _ = _passive(1)
    plan = node_one._dp_plan(N)
    assert plan is not None
    assert plan.batch_multiplier == plan.noise_multiplier
    assert dataclasses.replace(plan, local_steps=4).batch_multiplier == pytest.approx(
        plan.noise_multiplier / 2)
    assert DPPlan(plan.noise_multiplier, 1.0, plan.sample_rate) == dataclasses.replace(
        plan, max_grad_norm=1.0)


@pytest.mark.parametrize("local_steps", [1, 4])
def test_opacus_adds_the_plans_noise_on_every_local_step(local_steps):
    """What the ledger accounts is what Opacus draws: the plan's multiplier on each of Q steps.

    Zero gradients (the lender's gradients all zero) leave only the noise: after Q steps on each
    of the pass's batches, plain SGD at rate 1 has moved every weight by the sum of Q x batches
    Gaussian draws of ``multiplier x clip / expected batch``. 4,304 weights measure that
    deviation within about 1%; a step without noise, or noise at ``batch_multiplier`` (the
    accountant's per-batch view), would miss it by half or more.
    """
    # Prepare
    n, width, dim, rate = 600, 50, 16, 0.1
    plan = DPPlan(2.0, 0.5, rate, local_steps=local_steps)
    x = np.random.default_rng(0).normal(size=(n, width)).astype(np.float32)
    torch.manual_seed(0)
    encoder = PartyEncoder(width, (64,), dim, 0.0)
    before = torch.cat([p.detach().flatten().clone() for p in encoder.parameters()])
    # Execute
    _, batches = fit_chunk(encoder, torch.optim.SGD(encoder.parameters(), lr=1.0), x,
                           np.zeros((n, dim), np.float32), InnerProductLoss(), batch_size=60,
                           passes=1, generator=NoiseSource.fresh().torch("sampling"),
                           dp=plan, noise=NoiseSource.fresh().torch("noise"),
                           local_steps=local_steps)
    moved = torch.cat([p.detach().flatten() for p in encoder.parameters()]) - before
    # Assert
    per_step = float(moved.std()) / math.sqrt(local_steps * batches)
    assert batches == plan.steps_per_pass
    assert per_step == pytest.approx(plan.noise_multiplier * plan.max_grad_norm / (rate * n),
                                     rel=0.05)
