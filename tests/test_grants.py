"""A partner's grant (issue 34): the decision, and the node's mod that refuses outside it."""

import json
from datetime import UTC, datetime

import pytest
from flwr.app import Context, Message, RecordDict

from credit_data.errors import ConfigError
from deployment.client_app import NodeConfig, grant_mod
from deployment.run_config import LENDER_NAME, RUN_NAME, RUN_SETTINGS, TASK
from federation.grants import Grant, grant_refusal, run_purpose
from federation.protocol import CONFIG
from tests.fake_grid import serving

pytestmark = pytest.mark.unit

GRANT = Grant.parse("bureau-acme-2026", "credit_training,credit_scoring", "acme-bank",
                    "2027-01-01T00:00:00Z")
JUNE = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(("purpose", "lender", "now", "why"), [
    ("credit_training", "acme-bank", JUNE, None),
    ("credit_scoring", "acme-bank", JUNE, None),
    ("fraud_check", "acme-bank", JUNE, "purpose 'fraud_check' is outside this node's grant "
     "'bureau-acme-2026'"),
    ("credit_scoring", "other-bank", JUNE, "lender 'other-bank' is outside this node's grant "
     "'bureau-acme-2026' (lenders: acme-bank)"),
    ("credit_scoring", "acme-bank", datetime(2027, 1, 1, tzinfo=UTC),
     "grant 'bureau-acme-2026' expired at 2027-01-01T00:00:00+00:00"),
])
def test_a_request_outside_the_grant_is_refused_naming_it(purpose, lender, now, why):
    reason = grant_refusal(GRANT, party="bureau", purpose=purpose, lender=lender, now=now)
    if why is None:
        assert reason is None
    else:
        assert reason is not None and why in reason and reason.startswith("bureau: ")


def test_no_grant_serves_everything_and_a_bad_grant_is_named():
    assert grant_refusal(None, party="b", purpose="monitoring", lender="x", now=JUNE) is None
    assert [run_purpose(t, False) for t in ("train", "score", "serve")] == [
        "credit_training", "credit_scoring", "credit_scoring"]
    with pytest.raises(ConfigError, match="'grant-expires' must be an ISO 8601 time"):
        Grant.parse("g", expires="next year")
    with pytest.raises(ConfigError, match="'grant' must name the grant"):
        Grant.parse("")


def _context(tmp_path, task, lender=None):
    node = {"party": "bureau", "data-path": str(tmp_path / "b.csv"),
            "state-dir": str(tmp_path / "state"), "max-epsilon": 3.0,
            "grant": GRANT.name, "grant-purposes": "credit_training",
            "grant-lenders": "acme-bank", "grant-expires": "2999-01-01T00:00:00Z"}
    run = {RUN_SETTINGS: json.dumps({}), RUN_NAME: "run-1", TASK: task}
    if lender is not None:
        run[LENDER_NAME] = lender
    return Context(run_id=1, node_id=1, state=RecordDict(), node_config=node, run_config=run)


def test_the_node_refuses_before_any_handler_runs(tmp_path):
    assert NodeConfig.from_context(_context(tmp_path, "train").node_config).grant == Grant(
        GRANT.name, ("credit_training",), ("acme-bank",),
        datetime(2999, 1, 1, tzinfo=UTC))
    handled = []

    def handler(msg, context):
        handled.append(msg)
        return Message(RecordDict(), reply_to=msg)

    def ask(context):
        with serving():
            msg = Message(RecordDict(), dst_node_id=1, message_type="query.hello")
            return grant_mod(msg, context, handler)

    reply = ask(_context(tmp_path, "train", lender="acme-bank"))
    assert len(handled) == 1 and CONFIG not in reply.content.config_records
    scoring = ask(_context(tmp_path, "score", lender="acme-bank"))
    assert "purpose 'credit_scoring' is outside this node's grant 'bureau-acme-2026'" in str(
        scoring.content.config_records[CONFIG]["refused"])
    other = ask(_context(tmp_path, "train"))  # the run names no lender: the party id 'lender'
    assert "lender 'lender' is outside this node's grant" in str(
        other.content.config_records[CONFIG]["refused"])
    assert len(handled) == 1
