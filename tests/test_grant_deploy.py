"""A partner's grant on the loopback deployment (issue 34): a run outside it is refused.

Full-size in the sense of the suite's tiers: it starts a federation of its own (minutes), so it
is ``slow`` (``make test-slow``); ``tests/test_grants.py`` tests the decision and the node's mod.
"""

import json
from pathlib import Path

import pytest

from experiments.deploy import federation as deploy
from federation.usage_report import build_report
from fl_server.horizontal_rounds import FederationError

pytestmark = pytest.mark.slow


def test_a_training_run_outside_the_bureaus_grant_is_refused_naming_it(tmp_path_factory,
                                                                       monkeypatch):
    flags = deploy.demo_release_flags  # the bureau's partner starts its node with its grant
    monkeypatch.setattr(deploy, "demo_release_flags", lambda party, *rest: [
        *flags(party, *rest), *(["--grant", "bureau-acme-2026", "--grant-purposes",
                                 "credit_scoring"] if party == "bureau" else [])])
    directory = tmp_path_factory.mktemp("grant_federation")
    with deploy.local_federation(directory, ["data.n_customers=1000", "train.epochs=2",
                                             "verbose=false"]) as fed:
        with pytest.raises(FederationError, match=r"bureau refused: .*purpose "
                                                  r"'credit_training' is outside this node's "
                                                  r"grant 'bureau-acme-2026'"):
            deploy.run(Path(fed.directory))
        logs = sorted((Path(fed.directory) / "nodes" / "bureau" / "state").glob(
            "*/bureau/audit.jsonl"))
        entries = [json.loads(line) for line in logs[-1].read_text().splitlines()]
        assert any("grant 'bureau-acme-2026'" in e.get("refused", "") for e in entries)
        (record,) = build_report([logs[-1]])["records"]
        assert record["verified"] and "bureau-acme-2026" in record["refusals"][0]["reason"]
