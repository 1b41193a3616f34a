"""Issue 30, findings 1 and 3: what leaves outside any epsilon needs the node's own opt-in.

A capped node accepted the default vertical preset (label DP + DP-SGD) although its passive
parties send exact embeddings DP-SGD does not bound and the lender sends per-record gradients,
while the same node refused to score with that model: two checks that disagreed. One function
(:func:`federation.releases.refusal`) now decides both; the deployed ClientApp
(``deployment.client_app.app``, the lifetime-budget mod included) runs in-process behind the
real vertical round loop, each node with its own CSV file, state directory and flags, as
``python -m deployment.node`` gives it. The adversary is the coordinator that submits the
default preset to a capped node.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from credit_data.errors import BudgetRefusal
from deployment import client_app as node_app
from deployment.run_config import RUN_NAME, RUN_SETTINGS
from experiments.deploy import federation as deploy
from federation.lifetime_budget import LifetimeBudget
from federation.releases import Release, outside_epsilon, refusal, run_outside_epsilon
from federation.settings import Mode
from fl_client.scoring_task import ScoringInput, ScoringParty
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from privacy.settings import PrivacyMechanism, PrivacySettings
from tests.fake_grid import InProcessGrid, run_server_app

pytestmark = pytest.mark.unit

PRESET = PrivacySettings(mechanism=PrivacyMechanism.dpsgd, label_epsilon=3.0)
"""The vertical default (conf/privacy/label_dp_dpsgd.yaml): no embedding noise."""
EXACT = frozenset({Release.exact_embeddings})
GRADIENTS = frozenset({Release.record_gradients})


def test_one_function_decides_who_refuses_what_leaves_outside_any_epsilon():
    # Prepare: the preset's releases at each party, and scoring's with and without noise
    bureau = outside_epsilon(PRESET, "bureau", Mode.vertical)
    lender = outside_epsilon(PRESET, "lender", Mode.vertical)
    noisy = outside_epsilon(PrivacySettings(embedding_epsilon=3.0), "bureau", Mode.vertical)
    scoring_exact = outside_epsilon(PRESET, "bureau", Mode.vertical, scoring=True,
                                    embedding_noise=False)
    scoring_noisy = outside_epsilon(PRESET, "bureau", Mode.vertical, scoring=True,
                                    embedding_noise=True)
    # Assert: what the preset releases outside any epsilon, and to whom
    assert [(o.release, o.receiver) for o in bureau] == [
        (Release.exact_embeddings, "lender"), (Release.membership, "lender")]
    assert [o.release for o in lender] == [Release.record_gradients, Release.intersection]
    assert [o.release for o in noisy] == [Release.membership]  # embedding noise: accounted
    # a node, capped or not, sends them only under its own flag; a capped one refuses them
    for capped in (True, False):
        assert "--release-exact-embeddings" in refusal(bureau, capped=capped, opted=frozenset())
        assert refusal(bureau, capped=capped, opted=EXACT) is None
        assert "--release-record-gradients" in refusal(lender, capped=capped, opted=EXACT)
        assert refusal(lender, capped=capped, opted=GRADIENTS) is None
        assert refusal(noisy, capped=capped, opted=frozenset()) is None
    # scoring decides the same way: exact embeddings need the flag, noisy ones do not
    assert "carry no noise" in refusal(scoring_exact, capped=True, opted=frozenset())
    assert refusal(scoring_exact, capped=True, opted=EXACT) is None
    assert refusal(scoring_noisy, capped=True, opted=frozenset()) is None
    # no DP of its own, or central DP: a capped node refuses whatever it opted into
    off = outside_epsilon(PrivacySettings(), "bureau", Mode.vertical)
    assert "no differential privacy" in refusal(off, capped=True, opted=EXACT)
    assert refusal(off, capped=False, opted=EXACT) is None
    central = outside_epsilon(PrivacySettings(mechanism=PrivacyMechanism.central), "lender-0",
                              Mode.horizontal)
    assert "central DP" in refusal(central, capped=True, opted=EXACT | GRADIENTS)
    # a simulation is not a node: nothing to opt into, a capped simulated party still refuses
    assert refusal(bureau, capped=False, opted=None) is None
    assert "caps its epsilon" in refusal(bureau, capped=True, opted=None)
    # results.json states every such release of the run, with the flag that lets it out
    stated = run_outside_epsilon(PRESET, ["lender", "bureau"], Mode.vertical, ("consortium",))
    assert {(r["party"], r["release"], r["opt_in"]) for r in stated} == {
        ("lender", "record_gradients", "--release-record-gradients"),
        ("lender", "intersection", None), ("bureau", "exact_embeddings",
                                           "--release-exact-embeddings"),
        ("bureau", "membership", None), ("consortium", "membership", None)}


VERTICAL = ["federation=vertical", "federation.parties=[lender,bureau]", "data.n_customers=600",
            "train.epochs=1", "verbose=false"]  # the default preset: label DP + DP-SGD
CAP = 20.0


class Coordinator:
    """Submits vertical runs to a lender node and a capped bureau node, each with its flags."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings, self.plain = deploy.compose_settings(VERTICAL)
        self.files, _ = deploy.write_party_files(self.settings, root)
        self.parties = ("lender", "bureau")
        self.flags: dict[str, dict] = {"lender": {"release-record-gradients": True},
                                       "bureau": {"lender-applications": 1_000}}
        self.runs = 0

    def state(self, party: str) -> Path:
        return self.root / "nodes" / party / "state"

    def node_config(self, i: int) -> dict:
        party = self.parties[i]
        path, categorical = self.files[party]
        return {"party": party, "data-path": str(path), "categorical": categorical,
                "state-dir": str(self.state(party)), "max-epsilon": CAP, **self.flags[party]}

    def submit(self) -> tuple[VerticalOutcome, InProcessGrid, str]:
        self.runs += 1
        name = f"run-{self.runs}"
        grid = InProcessGrid(node_app.app, len(self.parties), node_config=self.node_config)
        for context in grid.contexts.values():
            context.run_config = {RUN_SETTINGS: json.dumps(self.plain), RUN_NAME: name}
        outcome = VerticalOutcome()
        run_server_app(make_vertical_server_app(vertical_server_settings(
            self.settings, self.parties, self.root / name), outcome), grid)
        return outcome, grid, name

    def ledger(self, party: str) -> LifetimeBudget:
        return LifetimeBudget.of(self.state(party), CAP)


def test_a_capped_node_takes_the_default_preset_only_with_its_opt_in(tmp_path):
    coordinator = Coordinator(tmp_path)
    # Execute: the default preset, the capped bureau without --release-exact-embeddings
    refused, _, first = coordinator.submit()
    # Assert: refused before anything left it, and said why
    assert refused.error is not None
    assert ("bureau refused: bureau: the run sends the lender the exact embedding of every "
            "aligned customer") in str(refused.error)
    assert "only with its own --release-exact-embeddings" in str(refused.error)
    assert not (coordinator.state("bureau") / first / "bureau" / "node_state.pt").exists()
    assert coordinator.ledger("bureau").runs() == {}
    # the lender without --release-record-gradients refuses the same way
    coordinator.flags["lender"] = {}
    coordinator.flags["bureau"]["release-exact-embeddings"] = True
    lender_refused, _, _ = coordinator.submit()
    assert "only with its own --release-record-gradients" in str(lender_refused.error)
    # with both opt-ins the run goes through, and each node's ledger records its opt-in
    coordinator.flags["lender"] = {"release-record-gradients": True}
    done, grid, name = coordinator.submit()
    assert done.error is None, done.error
    assert coordinator.ledger("bureau").opt_ins() == {name: ["exact_embeddings"]}
    assert coordinator.ledger("lender").opt_ins() == {name: ["record_gradients"]}
    assert 0 < coordinator.ledger("bureau").spent() <= CAP
    # the training alignment charged the bureau's query ledger (the lender's 600 IDs)
    assert done.alignment["bureau"]["asked"] == 600
    book = json.loads((coordinator.state("bureau") / "queries.json").read_text())
    assert [c for k, c in book["lender"].items() if len(k) == 7] == [{"training": 600}]
    # the scoring check agrees, for the same node config: with the opt-in it sends the model's
    # exact embeddings, without it (capped or not) it refuses them
    context = next(c for c in grid.contexts.values() if c.node_config["party"] == "bureau")
    _, node, client = node_app._settings(context)
    bundle = coordinator.state("bureau") / name / "bureau" / "model"
    table = node_app._scoring_table(json.dumps(coordinator.plain), node)
    ScoringParty(client, ScoringInput(bundle, table)).refuse_unaccounted()
    assert node_app.training_refusal(coordinator.settings, node)[0] is None
    for cap in (CAP, None):
        without = dataclasses.replace(node, opt_in=frozenset(), max_epsilon=cap)
        training = node_app.training_refusal(coordinator.settings, without)[0]
        party = ScoringParty(dataclasses.replace(client, opt_in=frozenset()),
                             ScoringInput(bundle, table))
        with pytest.raises(BudgetRefusal, match="carry no noise .* outside any epsilon; this "
                                                "node sends it only with its own "
                                                "--release-exact-embeddings"):
            party.refuse_unaccounted()
        assert training is not None and "--release-exact-embeddings" in training
