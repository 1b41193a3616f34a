"""``deploy monitor`` on a loopback deployment (issue 33): each node watches its own columns.

One federation, one training run without DP, then monitoring requests: a stable period (the
lender's file with its outcomes) and a downturn (without), each party's file in its node's
``--periods-dir``; both as a series; the bureau capped (noised counts, charged, refused past
its cap); the bureau without ``--release-monitoring`` (refused, named). The model's section,
computed at the lender's node, equals the simulation's computation on the same scores.
Full-size in the sense of the suite's tiers (a federation of its own), so ``slow``;
``tests/test_monitoring_release.py`` tests the node's decision and the lender's figures.
"""

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_data.errors import CreditFLError
from credit_data.loading import load_population
from credit_data.periods import SHIFTED_COLUMNS
from credit_data.settings import Shift
from credit_data.stability import column_index
from credit_fl.monitor_schema import MONITOR_KEYS
from credit_fl.monitoring import MonitorSettings, model_section
from deployment.pins import read_pins
from experiments.deploy import federation as deploy
from experiments.deploy import main as deploy_main
from experiments.deploy.monitor import monitor
from federation.audit_log import verify
from federation.lifetime_budget import LifetimeBudget
from fl_client.monitoring_task import EMBEDDING_NORM, MonitoringInput, party_indices
from models.bundle import read_manifest

pytestmark = pytest.mark.slow

VERTICAL = ["data.n_customers=3000", "train.epochs=1", "verbose=false"]
"""The simulation's monitoring tests watch a run of this size (tests/conftest.py)."""
MIN_COUNT = 50


def _write_period(fed: deploy.Federation, shift: str, name: str, *, outcomes: bool) -> dict:
    """Write period 2 with ``shift`` to each node's periods; the lender's with ``outcomes``."""
    settings, _ = deploy.compose_settings([*VERTICAL, "data.period=2", f"data.shift={shift}"])
    population = load_population(settings.data, settings.seed, labels=True)
    for party in fed.parties:
        deploy._table_csv(population.tables[party], settings.data.id_column,
                          settings.data.label if outcomes else None,
                          fed.periods_dir(party) / name)
    return population.tables


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("monitor_federation")
    out: dict = {}
    with deploy.local_federation(directory, VERTICAL) as fed:
        root = Path(fed.directory)
        results = deploy.run(root, ["privacy=off"])
        run_dir = Path(results["federation"]["server_audit_log"]).parents[1]
        out["tables"] = {shift: _write_period(fed, shift, f"{shift}.csv",
                                              outcomes=shift == "none")
                         for shift in ("none", "downturn")}
        out["none"] = monitor(root, run_dir, ["monitor.period=none.csv"])
        out["series"] = monitor(root, run_dir, ["monitor.period=none.csv,downturn.csv"])
        # through the command line, for its exit code (1 on act: a scheduler's alert)
        out["code"] = deploy_main(["monitor", str(run_dir), "monitor.period=downturn.csv",
                                   "--dir", str(root)])
        latest = sorted((run_dir / "monitoring").glob("*_monitor"),
                        key=lambda d: d.stat().st_mtime)[-1]
        out["downturn"] = latest, json.loads((latest / "monitor.json").read_text())
        # the bureau's partner caps its node: its counts are noised and charged, then refused
        _restart(root, "bureau", cap="1.5")
        out["capped"] = monitor(root, run_dir, ["monitor.period=none.csv",
                                                "monitor.epsilon=1.0"])
        with pytest.raises(CreditFLError) as past:
            monitor(root, run_dir, ["monitor.period=none.csv", "monitor.epsilon=1.0"])
        out["past_cap"] = str(past.value)
        # ... and withdraws its opt-in: refused, named
        _restart(root, "bureau", cap="none", opt_in=False)
        with pytest.raises(CreditFLError) as refused:
            monitor(root, run_dir, ["monitor.period=none.csv"])
        out["refused"] = str(refused.value)
        out["fed"], out["run_dir"] = fed, run_dir
    return out


def _restart(root: Path, party: str, *, cap: str, opt_in: bool = True) -> None:
    """Start ``party``'s node again with other flags, once the SuperLink counts it offline."""
    fed = deploy.Federation.load(root)
    cmd = list(fed.commands[party])
    cmd[cmd.index("--max-epsilon") + 1] = cap
    if not opt_in:
        cmd.remove("--release-monitoring")
    fed.commands[party] = cmd
    fed.save()
    deploy._stop([fed.pids[party]])
    node = read_pins(fed.runs)[party]
    deadline = time.monotonic() + 90
    while True:  # a node rejoins only once the SuperLink no longer counts it online
        listed = subprocess.run([deploy.flwr_bin(), "supernode", "list", deploy.CONNECTION,
                                 "--format", "json"], env=fed.env(), cwd=deploy.ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        status = {int(n["node-id"]): n["status"] for n in json.loads(listed.stdout)["nodes"]}
        if status.get(node) != "online":
            break
        assert time.monotonic() < deadline, status
        time.sleep(1)
    deploy.restart_node(root, party)


def _statuses(report) -> dict[tuple[str, str], str]:
    return {(p, c): v["status"] for p, e in report["parties"].items()
            for c, v in e["columns"].items()}


def test_a_stable_period_is_stable_at_every_node(deployed):
    _, report = deployed["none"]
    assert report["status"] == "stable" and report["model"]["status"] == "stable"
    assert set(_statuses(report).values()) == {"stable"}
    assert set(report["parties"]) == {"lender", "bureau", "social"}
    assert report["model"]["outcomes"] is not None  # the lender's period file has them


def _model_of_simulation(fed, run_dir, out, tables, inputs_act: bool, outcomes: bool) -> dict:
    """The simulation's model section (experiments.monitor) on the scores the lender kept."""
    lender = fed.node_state("lender")
    kept = np.load(lender / run_dir.name / "lender" / "scores.npz")
    settings, _ = deploy.compose_settings(VERTICAL)
    training = load_population(settings.data, settings.seed, labels=True).tables["lender"]
    y = training.labels[settings.data.label].to_numpy()
    reference = pd.DataFrame({"score": kept["test_scores"], "label": y[kept["test_rows"]]})
    scores = pd.read_csv(lender / out.name / "lender" / "scores.csv", dtype={"id": str})
    period = tables["lender"]  # its file held the outcomes only if written with them
    labels = period.labels[settings.data.label].reindex(scores["id"]) if outcomes else None
    return model_section(reference, scores, labels, read_manifest(
        lender / run_dir.name / "lender" / "model"), MonitorSettings(),
        inputs_act=inputs_act)


def _close(got, expected, path=""):
    if isinstance(expected, dict):
        assert set(got) == set(expected), path
        for key in expected:
            _close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, float) and got is not None:
        assert abs(got - expected) <= 1e-9, (path, got, expected)
    else:
        assert got == expected, path


def test_the_lenders_node_computes_the_simulations_model_section(deployed):
    # the figures the lender's node sent equal experiments.monitor's on the same scores
    fed, run_dir = deployed["fed"], deployed["run_dir"]
    for shift in ("none", "downturn"):
        out, report = deployed[shift]
        inputs_act = any(p["status"] == "act" for p in report["parties"].values())
        expected = _model_of_simulation(fed, run_dir, out, deployed["tables"][shift], inputs_act,
                                        outcomes=shift == "none")  # as _write_period wrote
        got = report["model"]
        _close(got, expected)
        assert report["period"]["applicants"] == got["rows"] == len(
            deployed["tables"][shift]["lender"].frame)
    none, downturn = deployed["none"][1]["model"], deployed["downturn"][1]["model"]
    assert downturn["score_psi"] > none["score_psi"]  # the model's PSI moves
    # without outcomes and with inputs at act, the label-free estimate is marked unverified
    assert downturn["outcomes"] is None and not downturn["estimate"]["trusted"]
    # the monitor.json of a deployment has the simulation's keys, at every level
    assert set(deployed["none"][1]) == {k for k, _, _ in MONITOR_KEYS}
    assert (deployed["none"][0] / "monitor.png").is_file()


def test_several_period_files_give_a_series_as_simulation_does(deployed):
    out, report = deployed["series"]
    assert [e["period"]["period"] for e in report["series"]] == ["none.csv", "downturn.csv"]
    for entry, alone in zip(report["series"], (deployed["none"][1], deployed["downturn"][1]),
                            strict=True):  # each period's entry is that period watched alone
        assert _statuses(entry) == _statuses(alone)
        for party, columns in entry["parties"].items():
            for column, value in columns["columns"].items():
                assert value["counts"] == alone["parties"][party]["columns"][column]["counts"]
        _close(entry["model"], alone["model"])
    assert report["status"] == "act" and report["model"] == report["series"][-1]["model"]
    assert report["released"]["bureau"]["counts"] == sum(
        e["released"]["bureau"]["counts"] for e in report["series"])
    assert {f.name for f in out.iterdir()} >= {"monitor.json", "report.md", "monitor.png",
                                                "monitor_series.png"}
    assert "## Over periods" in (out / "report.md").read_text()
    fed = deployed["fed"]
    for k in (1, 2):  # one Flower run per period, each in the nodes' audit logs
        assert (fed.node_state("bureau") / f"{out.name}-{k}" / "bureau" / "audit.jsonl").is_file()


def test_a_downturn_flags_the_columns_the_simulation_flags(deployed):
    # the simulation's acceptance (tests/test_monitoring.py): exactly the shifted columns act
    out, report = deployed["downturn"]
    shifted = {(p, c) for p, cols in SHIFTED_COLUMNS[Shift.downturn].items() for c in cols}
    columns = {k: s for k, s in _statuses(report).items() if k[1] != EMBEDDING_NORM}
    assert {k for k, s in columns.items() if s == "act"} == shifted
    assert {s for k, s in columns.items() if k not in shifted} == {"stable"}
    parties = {p: e["status"] for p, e in report["parties"].items()}
    assert parties == {"lender": "act", "bureau": "act", "social": "stable"}
    assert report["status"] == "act"
    assert deployed["code"] == 1 and (out / "report.md").is_file()
    assert report["period"] == {"data": "synthetic", "source": "deployment",
                                "period": "downturn.csv", "shift": None,
                                "applicants": len(deployed["tables"]["downturn"]["lender"].frame)}


def test_each_nodes_indices_equal_the_central_computation_without_dp(deployed):
    fed, run_dir = deployed["fed"], deployed["run_dir"]
    for shift in ("none", "downturn"):
        _, report = deployed[shift]
        for party, entry in report["parties"].items():
            bundle = fed.node_state(party) / run_dir.name / party / "model"
            specs = read_manifest(bundle)["stability"]["columns"]
            table = deployed["tables"][shift][party]
            for column, spec in specs.items():
                central = column_index(table.frame[column], spec, MIN_COUNT)
                got = entry["columns"][column]
                assert abs(got["index"] - central.index) <= 1e-9, (party, column)
                assert got["counts"] == list(central.current) and got["rows"] == central.rows
            if EMBEDDING_NORM in entry["columns"]:
                norm = party_indices(MonitoringInput(bundle, table), party,
                                     min_count=MIN_COUNT)[EMBEDDING_NORM]
                assert abs(entry["columns"][EMBEDDING_NORM]["index"] - norm.index) <= 1e-9
        assert all(r["epsilon"] is None for r in report["released"].values())


def test_only_indices_and_counts_left_the_nodes_logged_with_purpose_monitoring(deployed):
    fed = deployed["fed"]
    out, report = deployed["none"]
    for entry in report["parties"].values():  # what the server received, per column
        assert all(set(v) == {"index", "rows", "counts", "status"}
                   for v in entry["columns"].values())
    for party in fed.parties:
        log = fed.node_state(party) / out.name / party / "audit.jsonl"
        assert verify(log).ok
        lines = [json.loads(t) for t in log.read_text().splitlines()]
        asked = [e for e in lines if e["event"] == "query.monitor"]
        assert len(asked) == 1 and asked[0]["purpose"] == "monitoring"
        assert asked[0]["sent"] == {}  # no array, no byte string: config values only
        # every message of the run (the period's scoring too) is logged as monitoring
        assert {e["purpose"] for e in lines if e["event"] != "consent"} == {"monitoring"}
        model = [e for e in lines if e["event"] == "query.monitor_model"]
        assert len(model) == (party == "lender") and all(e["sent"] == {} for e in model)
        # exact counts left under the node's opt-in: its ledger says so, per request; a
        # passive party's exact embeddings for the lender's scoring under its own opt-in
        opted = LifetimeBudget.of(fed.node_state(party), None).opt_ins()
        assert set(opted[out.name]) == ({"monitoring_counts"} if party == "lender"
                                        else {"monitoring_counts", "exact_embeddings"})


def test_a_capped_node_noises_charges_and_refuses_past_its_cap(deployed):
    fed = deployed["fed"]
    out, report = deployed["capped"]
    assert report["released"]["bureau"]["epsilon"] == 1.0
    assert report["released"]["lender"]["epsilon"] is None  # uncapped, no DP: exact
    runs = LifetimeBudget.of(fed.node_state("bureau"), None).runs()
    assert runs[out.name] == {"monitoring_epsilon": 1.0}
    assert "bureau: this monitoring request (epsilon 1) would take the node's lifetime " \
           "epsilon past its max-epsilon (0.500 left)" in deployed["past_cap"]


def test_a_node_without_the_opt_in_refuses_by_name(deployed):
    fed = deployed["fed"]
    assert "bureau: " in deployed["refused"] and "--release-monitoring" in deployed["refused"]
    logs = sorted(fed.node_state("bureau").glob("*_monitor/bureau/audit.jsonl"))
    last = [json.loads(t) for t in logs[-1].read_text().splitlines()]
    refused = [e for e in last if e["event"] == "query.monitor"]
    assert refused and "--release-monitoring" in refused[0]["refused"]
    assert refused[0]["purpose"] == "monitoring" and refused[0]["sent"] == {}
