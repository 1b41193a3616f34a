"""A partner's grant on the loopback deployment (issue 34): a run outside it is refused.

Each party's node starts with a grant the run falls outside of in one way: the bureau's covers
scoring only (another purpose), the social platform's another lender, the lender's own expired.
The run's hello reaches all three at once: each refuses it naming its grant, and each refusal
is in that node's audit log and in the regulator's report of it. Full-size in the sense of the
suite's tiers: it starts a federation of its own (minutes), so it is ``slow``
(``make test-slow``); ``tests/test_grants.py`` tests the decision and the node's mod.
"""

import json
from pathlib import Path

import pytest

from experiments.deploy import federation as deploy
from federation.usage_report import build_report
from fl_server.horizontal_rounds import FederationError

pytestmark = pytest.mark.slow

GRANTS = {
    "bureau": (["--grant", "bureau-acme-2026", "--grant-purposes", "credit_scoring"],
               "purpose 'credit_training' is outside this node's grant 'bureau-acme-2026'"),
    "social": (["--grant", "social-acme-2026", "--grant-lenders", "acme-bank"],
               "lender 'lender' is outside this node's grant 'social-acme-2026' (lenders: "
               "acme-bank)"),
    "lender": (["--grant", "lender-2025", "--grant-expires", "2026-01-01T00:00:00Z"],
               "this node's grant 'lender-2025' expired at 2026-01-01T00:00:00+00:00"),
}
"""Each party's grant flags, and the refusal its node gives the run (whose lender is the
default party id ``lender``)."""


def test_a_training_run_outside_each_nodes_grant_is_refused_naming_it(tmp_path_factory,
                                                                      monkeypatch):
    flags = deploy.demo_release_flags  # each party's partner starts its node with its grant
    monkeypatch.setattr(deploy, "demo_release_flags", lambda party, *rest: [
        *flags(party, *rest), *GRANTS[party][0]])
    directory = tmp_path_factory.mktemp("grant_federation")
    with deploy.local_federation(directory, ["data.n_customers=1000", "train.epochs=2",
                                             "verbose=false"]) as fed:
        with pytest.raises(FederationError) as refused:
            deploy.run(Path(fed.directory))
        # the run stops at the first refusal it reads, whichever node's
        assert any(f"{party} refused: {party}: {why}" in str(refused.value)
                   for party, (_, why) in GRANTS.items()), refused.value
        for party, (_, why) in GRANTS.items():
            logs = sorted((Path(fed.directory) / "nodes" / party / "state").glob(
                f"*/{party}/audit.jsonl"))
            entries = [json.loads(line) for line in logs[-1].read_text().splitlines()]
            assert any(why in e.get("refused", "") for e in entries), (party, entries)
            (record,) = build_report([logs[-1]])["records"]
            assert record["verified"] and why in record["refusals"][0]["reason"]
