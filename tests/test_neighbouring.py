"""One neighbouring relation for every mechanism, recomputed with Google's dp-accounting (issue 30).

Every epsilon this project reports is accounted under add/remove of one customer's record
(``privacy.accounting.NEIGHBOURING``). Each test recomputes one mechanism's epsilon with
dp-accounting's accountants under that relation, from what the mechanism actually does (the
noise it draws, the sensitivity one record has), never from the project's own figures alone:

- the same accountant (RDP at the project's orders): equal within 1e-6 relative;
- the PLD accountant (a tight figure): RDP is an upper bound, within 25% of it here;
- randomized response: dp-accounting's pure epsilon at delta 0, equal within 1e-6.

Before this issue the embedding noise was accounted under replacement (sensitivity 2C) while
the rest used add/remove: the embedding test below fails on that code.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from dp_accounting import NeighboringRelation, dp_event
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from credit_data.errors import PrivacyLedgerError
from credit_data.split import TRAIN
from credit_data.summary import column_counts
from credit_data.vertical import NodeRows
from federation.settings import FederationSettings, Mode
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState, PassiveNode
from fl_server.strategies import CentralPlan
from fl_server.vertical_rounds import _record_privacy
from models.settings import ModelSettings, TrainSettings
from models.split_training import embed
from privacy.accounting import (
    NEIGHBOURING,
    ORDERS,
    embedding_sensitivity,
    epsilon_of,
    flip_probability,
    noise_multiplier_for,
    randomized_response_epsilon,
    update_sensitivity,
)
from privacy.ledger import PartySpend, PrivacyLedger
from privacy.randomness import NoiseSource
from privacy.settings import PrivacySettings
from privacy.summary import noisy_summary, summary_plan, summary_sensitivity

ADD_REMOVE = NeighboringRelation.ADD_OR_REMOVE_ONE
SAME = 1e-6  # relative tolerance where dp-accounting runs the same (RDP) accountant


def _gaussian(noise_multiplier: float, rate: float = 1.0) -> dp_event.DpEvent:
    gaussian = dp_event.GaussianDpEvent(noise_multiplier)
    return gaussian if rate >= 1.0 else dp_event.PoissonSampledDpEvent(rate, gaussian)


def rdp_epsilon(history, delta, relation=ADD_REMOVE) -> float:
    """dp-accounting's RDP accountant at the project's orders, under ``relation``."""
    accountant = RdpAccountant(orders=list(ORDERS), neighboring_relation=relation)
    for sigma, rate, steps in history:
        accountant.compose(_gaussian(sigma, rate), int(steps))
    return accountant.get_epsilon(delta)


def pld_epsilon(history, delta) -> float:
    """dp-accounting's PLD accountant (tight up to its discretisation) under add/remove."""
    accountant = PLDAccountant(neighboring_relation=ADD_REMOVE,
                               value_discretization_interval=1e-3)
    for sigma, rate, steps in history:
        accountant.compose(_gaussian(sigma, rate), int(steps))
    return accountant.get_epsilon(delta)


def test_the_relation_is_add_remove_and_every_ledger_entry_names_it():
    assert NEIGHBOURING == "add_remove"
    ledger = PrivacyLedger("dpsgd")
    ledger.record(1, "lender-0", PartySpend(1.0, 1e-5, "dpsgd", 1.1, 0.01, 100, "rdp"))
    summary = ledger.summary()
    assert summary["neighbouring"] == "add_remove"
    assert summary["parties"]["lender-0"]["neighbouring"] == "add_remove"


def test_the_ledger_refuses_an_entry_under_another_relation():
    ledger = PrivacyLedger("embedding_noise")
    replaced = PartySpend(1.0, 1e-5, "embedding_noise", 2.0, 1.0, 1, "rdp", sensitivity=2.0,
                          neighbouring="replace_one")
    with pytest.raises(PrivacyLedgerError,
                       match="replace_one relation, the ledger composes add_remove"):
        ledger.record(1, "bureau/embedding_noise", replaced)


def test_a_checkpoint_without_the_relation_is_refused():
    ledger = PrivacyLedger("dpsgd")
    ledger.record(1, "lender-0", PartySpend(1.0, 1e-5, "dpsgd", 1.1, 0.01, 100, "rdp"))
    state = ledger.state_dict()
    del state["neighbouring"]
    for entry in state["parties"].values():
        del entry["neighbouring"]
    with pytest.raises(PrivacyLedgerError, match="an unnamed relation, this run under add_remove"):
        PrivacyLedger("dpsgd").load_state_dict(state)


# --- DP-SGD: Poisson-sampled Gaussian, sensitivity C ------------------------------------------

@pytest.mark.parametrize(("history", "delta"), [
    ([(1.1, 0.01, 1000)], 1e-5),
    ([(3.2, 1.0, 1), (0.9, 0.004, 2500)], 1e-6),  # a noisy summary, then DP-SGD's steps
])
def test_dpsgd_epsilon_is_dp_accountings_under_add_remove(history, delta):
    ours = epsilon_of(history, delta=delta)
    assert ours == pytest.approx(rdp_epsilon(history, delta), rel=SAME)
    # the zero-out relation (a vertical party's absent row: a zero gradient) is the same figure
    assert ours == pytest.approx(
        rdp_epsilon(history, delta, NeighboringRelation.REPLACE_SPECIAL), rel=SAME)
    tight = pld_epsilon(history, delta)
    print(f"RDP {ours:.4f}, PLD {tight:.4f}")
    assert tight <= ours <= 1.25 * tight


# --- noisy summary: Gaussian, sensitivity sqrt(cells per record) ------------------------------

def _cells(counts) -> dict[tuple[str, str], float]:
    cells = {("numeric", f"{c}:{i}"): float(x) for c, v in counts.numeric.items()
             for i, x in enumerate(v)}
    cells |= {(c, n): float(x) for c, seen in counts.categorical.items() for n, x in seen.items()}
    cells[("positives", "")] = float(counts.positives)
    return cells


def _distance(a, b) -> float:
    keys = set(a) | set(b)
    return math.sqrt(sum((a.get(k, 0.0) - b.get(k, 0.0)) ** 2 for k in keys))


def test_the_summary_noise_is_calibrated_to_one_added_or_removed_record():
    # Prepare: a record with a category of its own, and one that moves to other cells
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"amount": rng.lognormal(5, 1, 200), "age": rng.uniform(18, 80, 200),
                          "city": rng.choice(["a", "b", "c"], 200)})
    frame.loc[0, "city"] = "only-me"
    labels = (rng.random(200) < 0.3).astype(float)
    labels[0] = 1.0

    def counts(f, y):
        return column_counts(f.reset_index(drop=True), ("amount", "age"), ("city",), y)

    full = counts(frame, labels)
    # Execute: remove record 0; replace it by a record elsewhere in every column
    removed = counts(frame.iloc[1:], labels[1:])
    other = frame.copy()
    other.loc[0] = [1e6, 99.0, "a"]
    replaced = counts(other, np.r_[0.0, labels[1:]])
    # Assert: add/remove moves the cells by sqrt(cells) at most (here exactly); replacement
    # moves two cells per column (and the positive count by one): sqrt(2 * 3 + 1). The
    # summary's noise is calibrated to the former
    cells = full.cells_per_record
    assert cells == 4
    assert _distance(_cells(full), _cells(removed)) == pytest.approx(math.sqrt(cells))
    assert _distance(_cells(full), _cells(replaced)) == pytest.approx(math.sqrt(7))
    plan = summary_plan(target_epsilon=3.0, share=0.1, delta=1e-6)
    release = noisy_summary(full, plan=plan, noise=NoiseSource.fresh())
    assert summary_sensitivity(cells_per_record=cells) == math.sqrt(cells)
    assert release["noise_std"] == pytest.approx(plan.noise_multiplier * math.sqrt(cells))
    # its epsilon is dp-accounting's Gaussian at noise_std / (add/remove sensitivity)
    independent = rdp_epsilon([(release["noise_std"] / math.sqrt(cells), 1.0, 1)], plan.delta)
    assert plan.epsilon() == pytest.approx(independent, rel=SAME)
    assert plan.epsilon() <= 0.3


# --- embedding noise: Gaussian per release, sensitivity C -------------------------------------

CLIP = 0.5


def _passive(summary: float) -> tuple[PassiveNode, NodeRows, NodeState]:
    rng = np.random.default_rng(1)
    n = 600
    rows = NodeRows("bureau", [f"c{i}" for i in range(n)],
                    rng.normal(size=(n, 5)).astype(np.float32), np.full(n, TRAIN),
                    tuple(f"x{i}" for i in range(5)), None)
    rows = dataclasses.replace(rows, summary_history=((summary, 1.0, 1),),
                               summary_selection_delta=1e-6)
    settings = ClientSettings(
        party="bureau", seed=0,
        model=ModelSettings(hidden=(8,), encoder_hidden=(8,), embedding_dim=4, dropout=0.0),
        train=TrainSettings(epochs=2, batch_size=64),
        federation=FederationSettings(mode=Mode.vertical, exchanges_per_epoch=2),
        privacy=PrivacySettings(embedding_epsilon=8.0, embedding_clip=CLIP,
                                embedding_releases=1))
    node = PassiveNode(settings, rows, NoiseSource.fresh())
    return node, rows, NodeState(positions=np.arange(n), splits=rows.split)  # all aligned


def test_embedding_noise_is_accounted_at_sensitivity_c_not_2c():
    # Prepare: a party with a noisy summary behind it, releasing once at epsilon 8
    summary = noise_multiplier_for(target_epsilon=0.8, delta=1e-5, sample_rate=1.0, steps=1)
    node, rows, state = _passive(summary)
    # Execute: one release, and the ledger entry the server writes from the node's metrics
    released, _, metrics = node.exchange(state, epoch=1, chunk=0, grads=None, prev=None,
                                         val_epoch=0)
    chunk = node._chunk_positions(state, 1, 0)
    clean = embed(node._encoder(state.snapshots[1]), rows.x[chunk], clip=CLIP)
    ledger = PrivacyLedger("embedding_noise")
    _record_privacy(ledger, 1, "bureau", metrics, "os")
    entry = ledger.summary()["parties"]["bureau/embedding_noise"]
    # Assert: the noise drawn is noise_multiplier x C (C the clip), as the entry says
    noise_std = node.scoring_noise_std()
    assert entry["sensitivity"] == embedding_sensitivity(clip=CLIP) == CLIP
    assert entry["neighbouring"] == "add_remove" and entry["unit"] == "record"
    assert noise_std == pytest.approx(entry["noise_multiplier"] * CLIP)
    measured = float(np.std(released - clean))
    print(f"noise std {noise_std:.4f}, measured {measured:.4f}")
    assert measured == pytest.approx(noise_std, rel=0.1)
    # the entry's epsilon is dp-accounting's under add/remove for the noise actually drawn: the
    # summary, then one Gaussian release at noise_std / C
    delta = entry["delta"] - entry["selection_delta"]
    add_remove = rdp_epsilon([(summary, 1.0, 1), (noise_std / CLIP, 1.0, 1)], delta)
    replace = rdp_epsilon([(summary, 1.0, 1), (noise_std / (2 * CLIP), 1.0, 1)], delta)
    print(f"ledger {entry['epsilon']:.4f}, add/remove {add_remove:.4f}, "
          f"replacement {replace:.4f}")
    assert entry["epsilon"] == pytest.approx(add_remove, rel=SAME)
    assert entry["epsilon"] <= 8.0 * (1 + 1e-9)
    # under replacement the same noise buys a much larger epsilon: not what the ledger says
    assert replace > 1.5 * entry["epsilon"]


def test_a_scoring_release_is_accounted_at_sensitivity_c():
    # the scoring path's multiplier comes from the bundle's noise and clip alone
    z = noise_multiplier_for(target_epsilon=2.0, delta=1e-5, sample_rate=1.0, steps=1)
    noise_std = z * embedding_sensitivity(clip=CLIP)
    assert noise_std / CLIP == pytest.approx(z)
    assert epsilon_of([(noise_std / CLIP, 1.0, 1)], delta=1e-5) == pytest.approx(
        rdp_epsilon([(noise_std / CLIP, 1.0, 1)], 1e-5), rel=SAME)


# --- central DP: C per client, 2C per record ------------------------------------------------

def test_central_dp_epsilons_are_dp_accountings_at_c_and_2c():
    # Prepare: server noise 2.4 x C, after a lender's summary at noise 3, 12 aggregates
    prior = ((3.0, 1.0, 1),)
    plan = CentralPlan(noise_multiplier=2.4, delta=1e-6, selection_delta=1e-7, prior=prior)
    clip = 0.7
    std = plan.noise_multiplier * clip
    # Execute
    client, record = plan.spend(12)
    # Assert: client level at sensitivity C, record level at 2C (one record moves its
    # lender's clipped update anywhere in the ball of radius C), both add/remove
    assert update_sensitivity(clip=clip, unit="client") == clip
    assert update_sensitivity(clip=clip, unit="record") == 2 * clip
    assert client == pytest.approx(rdp_epsilon([(std / clip, 1.0, 12)], 1e-6), rel=SAME)
    assert record == pytest.approx(
        rdp_epsilon([*prior, (std / (2 * clip), 1.0, 12)], 1e-6), rel=SAME)


# --- label DP: randomized response ----------------------------------------------------------

@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_randomized_response_is_dp_accountings_pure_epsilon(epsilon):
    flip = flip_probability(epsilon=epsilon)
    # dp-accounting's randomized response keeps the label with 1 - p and draws a uniform one
    # of k buckets with p: a 0/1 label flips with p / 2
    event = dp_event.RandomizedResponseDpEvent(noise_parameter=2 * flip, num_buckets=2)

    def pure(relation):
        accountant = PLDAccountant(neighboring_relation=relation,
                                   value_discretization_interval=1e-6)
        return accountant.compose(event).get_epsilon(0.0)

    ours = randomized_response_epsilon(flip=flip)
    assert ours == pytest.approx(epsilon, rel=1e-12)
    # any change of one label (dp-accounting's REPLACE_ONE): the figure the ledger records
    assert ours == pytest.approx(pure(NeighboringRelation.REPLACE_ONE), rel=SAME)
    # the label of a record that comes or goes (zero-out): bounded by it
    assert pure(NeighboringRelation.REPLACE_SPECIAL) <= ours
    # dp-accounting has no plain add/remove figure for a label's release: its slot would vanish
    assert not PLDAccountant(neighboring_relation=ADD_REMOVE).supports(event)


def test_the_label_dp_ledger_entry_names_the_relation():
    ledger = PrivacyLedger("label_dp")
    flip = flip_probability(epsilon=2.0)
    _record_privacy(ledger, 1, "lender", {"label_epsilon": randomized_response_epsilon(flip=flip),
                                          "label_flip_probability": flip}, "os")
    entry = ledger.summary()["parties"]["lender/label_dp"]
    assert entry["neighbouring"] == "add_remove" and entry["unit"] == "label"
    assert entry["epsilon"] == pytest.approx(2.0)
