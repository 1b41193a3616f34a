"""Issue 29, point 5: a resume refused by a node's budget leaves the run resumable.

A run is continued once at a node (no forks charged as one), but the claim binds only once the
node recorded spend for the continuation: a resume refused before it spent anything, at this
node or at another, holds nothing, and a later resume takes the continuation over.
"""

from __future__ import annotations

import pytest

from credit_data.errors import ConfigError
from deployment.client_app import NodeConfig, continuation, resume_state
from deployment.continuation import RESUMED_BY, SPENT
from federation.lifetime_budget import LifetimeBudget
from federation.run_settings import RunSettings
from tests.test_lifetime_budget import Coordinator

pytestmark = pytest.mark.unit


def _node(tmp_path) -> NodeConfig:
    data = tmp_path / "bureau.csv"
    data.write_text("id,x\na,1\n")
    return NodeConfig(party="bureau", data_path=data, state_dir=tmp_path / "state")


def test_an_unspent_continuation_is_taken_over_and_a_spent_one_binds(tmp_path):
    node = _node(tmp_path)
    budget = LifetimeBudget.of(node.state_dir, 3.0)
    resume_state(node, RunSettings(), "run-1", flower_run=1)
    resuming = RunSettings(resume="run-1")
    resume_state(node, resuming, "run-2", 2)  # refused by its budget: recorded nothing
    assert (node.state_dir / "run-1" / RESUMED_BY).read_text() == "run-2"
    resume_state(node, resuming, "run-3", 3)  # takes the continuation over
    assert (node.state_dir / "run-1" / RESUMED_BY).read_text() == "run-3"
    # the continuation it replaced goes no further: neither a message nor a spend
    with pytest.raises(ConfigError, match="run 'run-3' took the continuation over"):
        resume_state(node, resuming, "run-2", 2)
    with pytest.raises(ConfigError, match="took the continuation over"):
        continuation(node, resuming, "run-2").record_spend(budget, "run-1", {"epsilon": 1.0})
    assert budget.runs() == {}
    # a spend that re-reports what the ledger holds changes nothing and binds nothing
    budget.record("run-1", {"epsilon": 0.5})
    assert continuation(node, resuming, "run-3").record_spend(
        budget, "run-1", {"epsilon": 0.5}) == (True, 0.5)
    assert not (node.state_dir / "run-3" / SPENT).exists()
    # spend refused by the cap records nothing and binds nothing
    recorded, total = continuation(node, resuming, "run-3").record_spend(
        budget, "run-1", {"epsilon": 3.2})
    assert (recorded, total) == (False, pytest.approx(3.2))
    assert not (node.state_dir / "run-3" / SPENT).exists()
    # spend that grows the ledger binds: a run is continued once
    assert continuation(node, resuming, "run-3").record_spend(
        budget, "run-1", {"epsilon": 1.2}) == (True, pytest.approx(1.2))
    assert (node.state_dir / "run-3" / SPENT).is_file()
    with pytest.raises(ConfigError, match="already continued by run 'run-3', which spent"):
        resume_state(node, resuming, "run-4", 4)
    assert not (node.state_dir / "run-4").exists()
    # the claim's files are never copied into a continuation of a continuation
    run_5 = resume_state(node, RunSettings(resume="run-3"), "run-5", 5)
    assert not {RESUMED_BY, SPENT} & {p.name for p in run_5.iterdir()}


ROUNDS = ["federation.rounds=3", "privacy.target_epsilon=2.0", "privacy.max_epsilon=3.0"]


def test_a_resume_refused_by_the_nodes_cap_can_be_resumed_later(tmp_path):
    coordinator = Coordinator(tmp_path, cap=3.0)
    first = coordinator.submit(*ROUNDS, "federation.stop_after=1")
    assert first.error is None, first.error
    assert first.stopped_after == 1
    party = coordinator.parties[0]
    spent = coordinator.budget(party).spent()
    assert 0 < spent < 2.0
    # the partners lower their caps to what is spent: round 2 of the continuation is refused
    coordinator.cap = spent + 0.01
    refused = coordinator.submit(*ROUNDS, f"resume={tmp_path / 'run-1'}")
    reasons = [str(refused.error)] + [e.reason for e in refused.exclusions]
    assert refused.error is not None
    assert any("max_epsilon" in r or "max-epsilon" in r for r in reasons), reasons
    assert coordinator.budget(party).spent() == pytest.approx(spent)  # nothing spent
    state = tmp_path / "nodes" / party / "state"
    assert (state / "run-1" / RESUMED_BY).read_text() == "run-2"
    assert not (state / "run-2" / SPENT).exists()
    # with the caps raised again, a later resume continues the run to its end
    coordinator.cap = 3.0
    resumed = coordinator.submit(*ROUNDS, f"resume={tmp_path / 'run-1'}")
    assert resumed.error is None, resumed.error
    assert resumed.completed_rounds == 3 and resumed.history[0]["round"] == 1
    assert (state / "run-1" / RESUMED_BY).read_text() == "run-3"
    assert (state / "run-3" / SPENT).is_file()
    assert spent < coordinator.budget(party).spent() <= 2.0 + 1e-6
    # and, having spent, it is the run's one continuation
    again = coordinator.submit(*ROUNDS, f"resume={tmp_path / 'run-1'}")
    assert "already continued by run 'run-3'" in str(again.error) + "".join(
        e.reason for e in again.exclusions)
