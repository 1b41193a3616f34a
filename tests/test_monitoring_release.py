"""A deployed node's monitoring opt-in (issue 33): refused, exact or noised, by its own config.

The decision (:mod:`federation.monitoring_release`), the node's mod over it
(:mod:`deployment.monitoring_node`: the refusal reply, the opt-in line of its ledger), the
charge past a cap (:func:`fl_client.monitoring_task._charge`), the node's flags and the
coordinator's options. ``tests/test_monitor_deploy.py`` runs it on a loopback deployment.
"""

import json

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from credit_data.errors import BudgetRefusal, ConfigError
from deployment.client_app import NodeConfig
from deployment.monitoring_node import decision, monitoring_mod, period_table
from deployment.node import _parser, node_config
from deployment.run_config import MODEL_RUN, MONITOR_REQUEST, RUN_NAME, RUN_SETTINGS, TASK
from experiments import deploy
from experiments.deploy_monitor import split_period
from federation.lifetime_budget import LifetimeBudget
from federation.monitoring_release import MONITORING_FLAG, monitoring_release
from federation.protocol import CONFIG, STATUS
from federation.releases import Release
from fl_client.monitoring_task import _charge
from tests.fake_grid import serving

pytestmark = pytest.mark.unit

OPTED = frozenset({Release.monitoring_counts})


def test_without_the_flag_a_node_refuses_by_name_whatever_its_budget():
    for capped, dp in ((False, False), (True, False), (False, True)):
        why = monitoring_release("social", opted=frozenset({Release.exact_embeddings}),
                                 capped=capped, trained_under_dp=dp, epsilon=1.0,
                                 left=5.0 if capped else None)
        assert why.refused is not None and why.epsilon is None
        assert why.refused.startswith("social: ") and why.refused.endswith(MONITORING_FLAG)


def test_with_the_flag_exact_counts_unless_under_a_dp_budget():
    exact = monitoring_release("bureau", opted=OPTED, capped=False, trained_under_dp=False,
                               epsilon=1.0, left=None)
    assert (exact.refused, exact.epsilon) == (None, None)
    for capped, dp, left in ((True, False, 2.0), (False, True, None), (True, True, 1.0)):
        noised = monitoring_release("bureau", opted=OPTED, capped=capped, trained_under_dp=dp,
                                    epsilon=0.5, left=left)
        assert (noised.refused, noised.epsilon) == (None, 0.5)


def test_a_request_past_the_cap_is_refused_naming_it():
    past = monitoring_release("bureau", opted=OPTED, capped=True, trained_under_dp=False,
                              epsilon=1.0, left=0.4)
    assert past.epsilon is None and "past its max-epsilon (0.400 left)" in past.refused
    assert monitoring_release("bureau", opted=OPTED, capped=True, trained_under_dp=False,
                              epsilon=0.4, left=0.4).epsilon == 0.4  # exactly what is left


def test_a_charge_past_the_cap_records_nothing(tmp_path):
    _charge(tmp_path, 0.6, "bureau", cap=1.0, request="m-1")
    with pytest.raises(BudgetRefusal, match="bureau: .* to 1.200, past its max-epsilon 1"):
        _charge(tmp_path, 0.6, "bureau", cap=1.0, request="m-2")
    assert LifetimeBudget.of(tmp_path, 1.0).runs() == {"m-1": {"monitoring_epsilon": 0.6}}


def test_the_nodes_flags_reach_its_config(tmp_path):
    periods = tmp_path / "periods"
    periods.mkdir()
    base = ["--party", "bureau", "--data", "b.csv", "--superlink", "x:1", "--state-dir", "s",
            "--max-epsilon", "none"]
    opted = node_config(_parser().parse_args([*base, "--release-monitoring", "--periods-dir",
                                              str(periods)]))
    node = NodeConfig.from_context(opted)
    assert node.opt_in == OPTED and node.periods_dir == periods.resolve()
    assert NodeConfig.from_context(node_config(_parser().parse_args(base))).opt_in == frozenset()


def _context(tmp_path, *, opted: bool, cap: float | str = "none", epsilon: float = 1.0,
             period: str | None = None) -> Context:
    data = tmp_path / "bureau.csv"
    data.write_text("customer_id,x\n" + "".join(f"c{i},{i}\n" for i in range(40)))
    _, plain = deploy.compose_settings(["federation=vertical", "privacy=off"])
    node = {"party": "bureau", "data-path": str(data), "state-dir": str(tmp_path / "state"),
            "max-epsilon": cap}
    if opted:
        node["release-monitoring"] = True
    return Context(run_id=1, node_id=1, state=RecordDict(), node_config=node, run_config={
        RUN_SETTINGS: json.dumps(plain), RUN_NAME: "m-1", TASK: "monitor",
        MODEL_RUN: "train-1", MONITOR_REQUEST: json.dumps(
            {"min_count": 5, "epsilon": epsilon, "period": period})})


def _answer(msg, context):  # the handler's reply: indices and counts only
    return Message(RecordDict({STATUS: ConfigRecord({"party": "bureau"}), CONFIG: ConfigRecord(
        {"index.x": 0.01, "rows.x": 40, "counts.x": [20, 20]})}), reply_to=msg)


def _mod(context: Context, handler) -> Message:
    with serving():
        msg = Message(RecordDict({CONFIG: ConfigRecord({"min_count": 5})}), dst_node_id=1,
                      message_type="query.monitor")
        return monitoring_mod(msg, context, handler)


def _called(msg, context):
    raise AssertionError("the handler ran for a refused request")


def test_the_nodes_mod_refuses_without_the_flag_and_records_its_opt_in_with_it(tmp_path):
    refused = _mod(_context(tmp_path, opted=False), _called)
    assert MONITORING_FLAG in str(refused.content.config_records[CONFIG]["refused"])
    assert "index.x" not in refused.content.config_records[CONFIG]
    context = _context(tmp_path, opted=True)
    reply = _mod(context, _answer)
    assert reply.content.config_records[CONFIG]["index.x"] == 0.01
    budget = LifetimeBudget.of(tmp_path / "state", None)
    assert budget.opt_ins() == {"m-1": ["monitoring_counts"]}  # exact counts, outside epsilon


def test_a_node_whose_rows_trained_under_dp_noises_and_a_capped_one_refuses_past_its_cap(
        tmp_path):
    context = _context(tmp_path, opted=True)
    node = NodeConfig.from_context(dict(context.node_config))
    assert decision(context, node).epsilon is None
    LifetimeBudget.of(node.state_dir, None).record("train-1", {"epsilon": 0.8})
    assert decision(context, node).epsilon == 1.0  # the model's run spent at this node
    capped = _context(tmp_path, opted=True, cap=1.5)
    refused = _mod(capped, _called)  # 0.8 spent, 1.0 asked
    assert "past its max-epsilon (0.700 left)" in str(
        refused.content.config_records[CONFIG]["refused"])


def test_a_period_is_one_plain_name_in_the_nodes_periods_dir(tmp_path):
    context = _context(tmp_path, opted=True)
    node = NodeConfig.from_context(dict(context.node_config))
    run = deploy.compose_settings(["federation=vertical"])[0]
    assert period_table(run, node, None).n_rows == 40  # its --data
    with pytest.raises(ConfigError, match="no --periods-dir"):
        period_table(run, node, "q3.csv")
    with pytest.raises(ConfigError, match="no path; refused"):
        period_table(run, node, "../bureau.csv")


def test_deploy_monitor_takes_a_period_file_and_monitor_options_only():
    assert split_period(["monitor.period=q3.csv", "monitor.act=0.3"]) == (
        "q3.csv", ["monitor.act=0.3"])
    assert split_period([]) == (None, [])
    with pytest.raises(ConfigError, match="'data.shift=downturn': each node reads"):
        split_period(["data.shift=downturn"])
    with pytest.raises(ConfigError, match="names one file"):
        split_period(["monitor.period=a.csv", "monitor.period=b.csv"])


def test_the_nodes_period_rows_are_those_consenting_to_monitoring(tmp_path):
    from deployment.monitoring_node import monitoring_source

    context = _context(tmp_path, opted=True)
    consent = tmp_path / "consent.csv"  # c0..c29 consent to monitoring, c30 withdrew
    consent.write_text("customer_id,purpose,status,time,receipt_id\n" + "".join(
        f"c{i},monitoring,granted,2026-01-01,m{i}\n" for i in range(31))
        + "c30,monitoring,withdrawn,2026-02-01,w30\n" + "".join(  # scoring consent: not this
            f"c{i},credit_scoring,granted,2026-01-01,s{i}\n" for i in range(40)))
    context.node_config["consent"] = str(consent)
    party, data = monitoring_source(context)
    assert party == "bureau" and data.epsilon is None and data.request == "m-1"
    assert sorted(data.table.frame.index, key=lambda i: int(i[1:])) == [
        f"c{i}" for i in range(30)]
    assert data.bundle_dir == (tmp_path / "state").resolve() / "train-1" / "bureau" / "model"
    log = tmp_path / "state" / "m-1" / "bureau" / "audit.jsonl"
    logged = [json.loads(t) for t in log.read_text().splitlines()]
    assert [(e["purpose"], e["rows_used"]) for e in logged if e["event"] == "consent"] == [
        ("monitoring", 30)]
