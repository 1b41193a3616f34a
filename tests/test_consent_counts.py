"""A deployed node's consent counts travel with its hello reply (issue 34); some opted in."""

import json

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from credit_data.errors import ConfigError
from credit_fl.consent_results import consent_lines
from deployment.client_app import consent_counts_mod
from deployment.run_config import RUN_NAME, RUN_SETTINGS, TASK
from experiments.deploy import federation as deploy
from federation.consent_counts import CONSENT_KEY, consent_released, received, run_summary
from federation.lifetime_budget import LifetimeBudget
from federation.protocol import CONFIG
from tests.fake_grid import serving

pytestmark = pytest.mark.unit


def _context(tmp_path, release: bool, task: str = "train") -> Context:
    data = tmp_path / "bureau.csv"
    data.write_text("customer_id,x\n" + "".join(f"c{i},{i}\n" for i in range(40)))
    consent = tmp_path / "consent.csv"  # c0..c36 granted, c37 withdrawn, c38-c39 no record
    consent.write_text("customer_id,purpose,status,time,receipt_id\n" + "".join(
        f"c{i},credit_training,granted,2026-01-01,r{i}\n" for i in range(38))
        + "c37,credit_training,withdrawn,2026-02-01,w37\n" + "".join(  # c0..c29 may be scored
            f"c{i},credit_scoring,granted,2026-01-01,s{i}\n" for i in range(30)))
    _, plain = deploy.compose_settings(["federation=vertical", "privacy=off"])
    node = {"party": "bureau", "data-path": str(data), "state-dir": str(tmp_path / "state"),
            "max-epsilon": "none", "consent": str(consent)}
    if release:
        node["release-consent-counts"] = True
    return Context(run_id=1, node_id=1, state=RecordDict(), node_config=node,
                   run_config={RUN_SETTINGS: json.dumps(plain), RUN_NAME: "run-1",
                               TASK: task})


def _hello(context: Context, message_type: str = "query.hello") -> Message:
    def handler(msg, context):  # the hello handler's reply: the node's ID shape
        return Message(RecordDict({CONFIG: ConfigRecord({"id_shape": "{}"})}), reply_to=msg)

    with serving():
        msg = Message(RecordDict(), dst_node_id=1, message_type=message_type)
        return consent_counts_mod(msg, context, handler)


@pytest.mark.parametrize("release", [False, True])
def test_the_hello_reply_carries_the_counts_the_node_lets_leave(tmp_path, release):
    # Prepare
    context = _context(tmp_path, release)
    # Execute
    config = _hello(context).content.config_records[CONFIG]
    counts = received(str(config[CONSENT_KEY]), "bureau")
    # Assert: the rows used (its set size) always; what the set size does not tell, opted in
    assert (counts["purpose"], counts["rows_used"], counts["consented"]) == (
        "credit_training", 37, 37)
    assert (counts["rows_held"], counts["withdrawn"], counts["no_record"]) == (
        (40, 1, 2) if release else (None, None, None))
    assert (counts["file_sha256"] is None) is not release
    ledger = LifetimeBudget.of(tmp_path / "state", None, data_path=tmp_path / "bureau.csv")
    assert ledger.opt_ins() == ({"run-1": ["consent_counts"]} if release else {})
    summary = run_summary({"bureau": counts}, ["lender", "bureau"], "credit_training")
    assert summary is not None and summary["parties"]["lender"] == {"records": False}
    # results.json names the opted-in counts among the releases outside any epsilon
    assert consent_released(summary) == ([{
        "party": "bureau", "release": "consent_counts", "receiver": "server",
        "opt_in": "--release-consent-counts"}] if release else [])
    table = consent_lines(summary)
    assert ("| bureau | 40 | 37 | 37 | 1 | 2 |" if release
            else "| bureau | not sent | 37 | 37 | not sent | not sent |") in table


def test_a_scoring_hello_carries_the_scoring_counts(tmp_path):
    reply = _hello(_context(tmp_path, True, task="score"), "query.score_hello")
    counts = received(str(reply.content.config_records[CONFIG][CONSENT_KEY]), "bureau")
    assert (counts["purpose"], counts["rows_held"], counts["rows_used"], counts["withdrawn"],
            counts["no_record"]) == ("credit_scoring", 40, 30, 0, 10)


def test_only_the_hello_reply_carries_them(tmp_path):
    reply = _hello(_context(tmp_path, True), "train.embed")
    assert CONSENT_KEY not in reply.content.config_records[CONFIG]
    assert run_summary({}, ["lender", "bureau"], "credit_training") is None


@pytest.mark.parametrize(("text", "message"), [
    ('{"purpose": "marketing"}', "do not name a purpose"),
    ('{"purpose": "credit_training", "rows_used": true}', "'rows_used' must be a count"),
    ('{"purpose": "credit_training", "withdrawn": -1}', "'withdrawn' must be a count"),
    ('{"purpose": "credit_training", "dpv": 3}', "'dpv' must be text"),
    ("rows", "are not JSON"),
])
def test_the_server_refuses_counts_that_are_not_counts(text, message):
    with pytest.raises(ConfigError, match=f"bureau's consent counts.*{message}|{message}"):
        received(text, "bureau")
