"""A deployed node's monitoring opt-in (issue 33): refused, exact or noised, by its own config.

The decision (:mod:`federation.monitoring_release`), the node's mod over it
(:mod:`deployment.monitoring_node`: the refusal reply, the opt-in line of its ledger), the
charge past a cap (:func:`fl_client.monitoring_task._charge`), the node's flags and the
coordinator's options; the lender's node's model section (its figures equal the simulation's
on the same scores; refused without the opt-in, under a DP budget, on a changed training file).
``tests/test_monitor_deploy.py`` runs it on a loopback deployment.
"""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from credit_data.errors import BudgetRefusal, ConfigError, DataError
from credit_data.files import load_party
from credit_data.settings import PartySource
from credit_data.split import SPLITS, assign_split
from deployment.client_app import NodeConfig
from deployment.monitoring_node import decision, monitoring_mod, period_table
from deployment.node import _parser, node_config
from deployment.run_config import MODEL_RUN, MONITOR_REQUEST, RUN_NAME, RUN_SETTINGS, TASK
from experiments.deploy import federation as deploy
from experiments.deploy.monitor import split_period
from federation.lifetime_budget import LifetimeBudget
from federation.monitoring_release import MONITORING_FLAG, monitoring_release
from federation.protocol import CONFIG, STATUS
from federation.releases import Release
from fl_client.audit_log_mod import AUDIT_NOTE
from fl_client.monitoring_task import _charge
from fl_client.scoring_task import scorecard_of
from models.bundle import FORMAT
from models.scorecard import grades_of, points
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
        ["q3.csv"], ["monitor.act=0.3"])
    assert split_period([]) == ([None], [])
    assert split_period(["monitor.period=q2.csv,q3.csv"])[0] == ["q2.csv", "q3.csv"]  # series
    with pytest.raises(ConfigError, match="'data.shift=downturn': each node reads"):
        split_period(["data.shift=downturn"])
    with pytest.raises(ConfigError, match="give monitor.period once"):
        split_period(["monitor.period=a.csv", "monitor.period=b.csv"])
    with pytest.raises(ConfigError, match="names a file twice"):
        split_period(["monitor.period=a.csv,a.csv"])
    with pytest.raises(ConfigError, match="an empty file name"):
        split_period(["monitor.period=a.csv,"])


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


def _lender_context(tmp_path, *, opted: bool = True, cap: float | str = "none") -> Context:
    """A lender's node that trained ``train-1`` and scored period ``p2.csv`` in ``m-1``."""
    rng = np.random.default_rng(7)
    periods = tmp_path / "periods"
    periods.mkdir(parents=True, exist_ok=True)
    train = pd.DataFrame({"customer_id": [f"c{i}" for i in range(400)],
                          "x": rng.normal(size=400), "default_12m": rng.integers(0, 2, 400)})
    train.to_csv(tmp_path / "lender.csv", index=False)
    period = pd.DataFrame({"customer_id": [f"n{i}" for i in range(300)],
                           "x": rng.normal(size=300), "default_12m": rng.integers(0, 2, 300)})
    period.to_csv(periods / "p2.csv", index=False)
    _, plain = deploy.compose_settings(["federation=vertical", "privacy=off"])
    node = {"party": "lender", "data-path": str(tmp_path / "lender.csv"),
            "state-dir": str(tmp_path / "state"), "max-epsilon": cap,
            "periods-dir": str(periods)}
    if opted:
        node["release-monitoring"] = True
    return Context(run_id=1, node_id=1, state=RecordDict(), node_config=node, run_config={
        RUN_SETTINGS: json.dumps(plain), RUN_NAME: "m-1", TASK: "monitor",
        MODEL_RUN: "train-1", MONITOR_REQUEST: json.dumps(
            {"min_count": 5, "epsilon": 1.0, "period": "p2.csv"})})


def _lender_kept(context: Context) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Write what the lender's node keeps: the run's test scores, its bundle's manifest, the
    period's scores; return the reference and the scores, as simulation's model section takes."""
    from deployment.client_app import _split_key, run_state_dir
    from deployment.monitoring_node import _settings

    run, node, _ = _settings(context)
    rng = np.random.default_rng(8)
    table = load_party("lender", PartySource(path=str(node.data_path)), run.data)
    split = assign_split(table.frame.index, _split_key(run, node), run.data.split)
    model = run_state_dir(node.state_dir, "train-1") / "lender"
    (model / "model").mkdir(parents=True)
    rows = {name: np.flatnonzero(split == code) for code, name in SPLITS.items()}
    test_scores = rng.beta(2, 6, len(rows["test"]))
    np.savez(model / "scores.npz", test_scores=test_scores,
             **{f"{name}_rows": r for name, r in rows.items()})
    manifest = {"format": FORMAT, "model_id": "m", "party": "lender", "role": "lender",
                "files": {}, "table": {"fingerprint": table.fingerprint(), "rows": 400},
                "scorecard": dataclasses.asdict(run.scorecard)}
    (model / "model" / "model.json").write_text(json.dumps(manifest))
    p = rng.beta(2, 5, 300)  # the period's scores, kept at the lender in this run
    card = scorecard_of(manifest)
    score_points = points(p, card)
    scores = pd.DataFrame({"id": [f"n{i}" for i in range(300)], "probability": p,
                           "points": np.round(score_points, 2),
                           "grade": grades_of(score_points, card)})
    kept = node.state_dir.resolve() / "m-1" / "lender" / "scores.csv"
    kept.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(kept, index=False, float_format="%.17g")
    y = table.labels["default_12m"].to_numpy()
    return pd.DataFrame({"score": test_scores, "label": y[rows["test"]]}), scores, manifest


def test_the_lenders_node_sends_the_model_figures_of_the_simulation(tmp_path):
    from credit_fl.monitoring import MonitorSettings, model_section
    from deployment.monitoring_node import model_source
    from fl_client.model_monitoring import judge

    context = _lender_context(tmp_path)
    reference, scores, manifest = _lender_kept(context)
    party, figures = model_source(context)
    labels = pd.read_csv(tmp_path / "periods" / "p2.csv").set_index("customer_id")[
        "default_12m"]
    expected = model_section(reference, scores, labels.reindex(scores["id"]), manifest,
                             MonitorSettings(), inputs_act=False)
    got = judge(json.loads(json.dumps(figures)), watch=0.1, act=0.25, inputs_act=False)
    assert party == "lender" and got.keys() == expected.keys()
    assert got["outcomes"] is not None and got["rows"] == 300
    for key in ("score_psi", "grade_psi"):
        assert abs(got[key] - expected[key]) <= 1e-12
    for part in ("training", "estimate", "outcomes"):
        for key, value in expected[part].items():
            assert (got[part][key] == value if not isinstance(value, float)
                    else abs(got[part][key] - value) <= 1e-12), (part, key)
    assert got["grade_mix"] == expected["grade_mix"] and got["status"] == expected["status"]


def test_the_lenders_node_refuses_the_model_section_by_name(tmp_path):
    from deployment.monitoring_node import model_source

    with pytest.raises(ConfigError, match=MONITORING_FLAG):
        model_source(_lender_context(tmp_path / "a", opted=False))
    capped = _lender_context(tmp_path / "b", cap=2.0)
    with pytest.raises(ConfigError, match="withheld: this node is under a DP budget"):
        model_source(capped)
    changed = _lender_context(tmp_path / "c")
    _lender_kept(changed)
    frame = pd.read_csv(tmp_path / "c" / "lender.csv")
    frame.iloc[:-1].to_csv(tmp_path / "c" / "lender.csv", index=False)  # a customer left
    with pytest.raises(DataError, match=r"lender.csv: the lender's training rows differ"):
        model_source(changed)


def test_a_monitoring_runs_other_messages_need_the_opt_in_and_log_as_monitoring(tmp_path):
    for node in ("a", "b"):
        (tmp_path / node).mkdir()
    with serving():
        msg = Message(RecordDict(), dst_node_id=1, message_type="query.score_hello")
        refused = monitoring_mod(msg, _context(tmp_path / "a", opted=False), _called)
        assert MONITORING_FLAG in str(refused.content.config_records[CONFIG]["refused"])
        context = _context(tmp_path / "b", opted=True)
        reply = monitoring_mod(msg, context, _answer)
    assert "index.x" in reply.content.config_records[CONFIG]
    assert context.state.config_records[AUDIT_NOTE]["purpose"] == "monitoring"
    # the scoring of the period records no monitoring opt-in: its own mods record its releases
    assert LifetimeBudget.of(tmp_path / "b" / "state", None).opt_ins() == {}


def test_the_lenders_node_sends_no_figure_of_fewer_rows_than_its_floor(tmp_path):
    # a period or a grade of one applicant would be that applicant's outcome and score: the
    # node's own --monitor-min-count bounds both, whatever the request's min_count (5 here)
    from deployment.monitoring_node import model_source

    context = _lender_context(tmp_path)
    _, scores, _ = _lender_kept(context)
    context.node_config["monitor-min-count"] = 301  # the period has 300 scored applicants
    with pytest.raises(DataError, match=r"300 scored applicants, fewer than "
                                        r"monitor\.min_count=301"):
        model_source(context)
    context.node_config["monitor-min-count"] = 60
    _, figures = model_source(context)
    sizes = scores["grade"].value_counts()
    rates = figures["outcomes"]["default_rate_by_grade"]
    assert any(rate is None for rate in rates.values())  # a small grade this period
    for grade, rate in rates.items():
        assert (rate is None) == (sizes.get(grade, 0) < 60), grade
    assert NodeConfig.from_context(node_config(_parser().parse_args(
        ["--party", "bureau", "--data", str(tmp_path / "lender.csv"), "--superlink", "x:1",
         "--state-dir", str(tmp_path / "s"), "--insecure", "--max-epsilon", "none",
         "--monitor-min-count", "75"]))).monitor_min_count == 75


def test_a_periods_scoring_at_a_node_keeps_customers_consenting_to_scoring_too(tmp_path):
    # scoring sends each known row's embedding to the lender: a row-level release that the
    # aggregate purpose monitoring alone does not cover (the review's finding)
    from deployment.monitoring_node import period_scoring_source

    context = _context(tmp_path, opted=True)  # the bureau's 40 customers c0..c39
    consent = tmp_path / "consent.csv"
    consent.write_text("customer_id,purpose,status,time,receipt_id\n" + "".join(
        f"c{i},monitoring,granted,2026-01-01,m{i}\n" for i in range(30)) + "".join(
        f"c{i},credit_scoring,granted,2026-01-01,s{i}\n" for i in range(20, 40)))
    context.node_config["consent"] = str(consent)
    _, scoring = period_scoring_source(context)
    assert sorted(scoring.table.frame.index, key=lambda c: int(c[1:])) == [
        f"c{i}" for i in range(20, 30)]
