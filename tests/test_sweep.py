"""Issue 5: a Hydra sweep as a researcher runs it, the compare command on its output, and the
audits of its vertical runs (label DP at two budgets and two seeds; the DP-SGD audit of a vertical
run is checked in ``tests/test_vertical.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from experiments.compare import CompareError, compare, main
from tests.conftest import REPO

EPSILONS = (0.1, 8.0)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A real ``-m`` sweep with one bad value per seed (a failing job must not stop it), the
    references trained once per seed."""
    out = tmp_path_factory.mktemp("sweep") / "multirun"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.run", "-m", "federation=vertical",
         "privacy=label_dp", "data.n_customers=3000", "train.epochs=3", "references=true",
         "engine=in_process",  # the sweep is under test, not the engine: no Ray start per job
         "verbose=false", "privacy.target_epsilon=0.1,8,-1", "seed=0,1",
         f"hydra.sweep.dir={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _runs(sweep_dir):
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]


def test_failed_job_is_recorded_and_the_sweep_goes_on(sweep_dir):
    failed = sorted(sweep_dir.glob("*/failed.json"))
    assert len(failed) == 2 and len(_runs(sweep_dir)) == 4
    error = json.loads(failed[0].read_text())["error"]
    assert "privacy.label_epsilon must be positive" in error
    assert {p.name for p in failed[0].parent.iterdir()} <= {"failed.json", ".hydra",
                                                            "run.log"}
    # the references were trained once per seed and shared by that seed's jobs
    assert len(list((sweep_dir / "references").glob("*.json"))) == 2
    for run in _runs(sweep_dir):
        assert set(run["references"]) == {"centralized", "lender_only", "non_private",
                                          "logistic_regression", "logistic_regression_lender"}


def test_compare_writes_table_and_plot_and_auc_grows_with_epsilon(sweep_dir, capsys):
    assert main([str(sweep_dir)]) == 0
    assert "reading runs" in capsys.readouterr().err  # the progress bar
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert list(summary["series"]) == ["vertical label DP"] * 2
    assert list(summary["epsilon"]) == list(EPSILONS) and list(summary["seeds"]) == [2, 2]
    low, high = summary.iloc[0], summary.iloc[1]
    assert high["auc_mean"] > low["auc_mean"] + 0.05
    by_seed: dict[int, dict[float, float]] = {}
    for run in _runs(sweep_dir):
        by_seed.setdefault(run["seed"], {})[run["config"]["privacy"]["target_epsilon"]] = \
            run["metrics"]["test"]["auc"]
    assert all(aucs[EPSILONS[1]] > aucs[EPSILONS[0]] for aucs in by_seed.values())
    assert len(by_seed) == 2
    for column in ("ks_mean", "brier_std", "attack_auc_mean",
                   "empirical_epsilon_lower_bound_mean", "label_leakage_auc_mean"):
        assert summary[column].notna().all(), column
    runs = pd.read_csv(sweep_dir / "runs.csv")
    assert (runs["status"] == "failed").sum() == 2
    table = (sweep_dir / "summary.md").read_text()
    assert "| vertical label DP | 8 | 2 |" in table
    assert "Failed jobs (2)" in table
    assert "non-private" in table and "lender only" in table and "centralized" in table
    png = (sweep_dir / "privacy_utility.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_label_dp_alone_promises_nothing_against_membership(sweep_dir):
    for run in _runs(sweep_dir):
        m = run["audit"]["membership"]
        assert m["theoretical_epsilon"] is None and "without DP-SGD" in m["theory"]
        assert m["attack_auc"] < 0.56


def test_label_leakage_falls_toward_chance_with_label_protection(sweep_dir):
    """Passive parties attack the gradients they receive: near-perfect with no label DP (the
    non-private reference), near 0.5 with randomized response at epsilon 0.1."""
    for run in _runs(sweep_dir):
        open_leak = run["references"]["non_private"]["audit"]["label_leakage"]
        assert open_leak["label_protection"] == "off"
        if run["config"]["privacy"]["target_epsilon"] != EPSILONS[0]:
            continue
        leak = run["audit"]["label_leakage"]
        assert leak["label_protection"] == "randomized response, epsilon 0.1"
        for party in ("bureau", "social"):
            open_auc = open_leak["parties"][party]["attack_auc"]
            protected_auc = leak["parties"][party]["attack_auc"]
            assert open_auc > 0.85, party
            assert protected_auc < 0.6, party
            assert open_auc - protected_auc > 0.25, party


def test_compare_refuses_a_directory_without_runs(tmp_path):
    with pytest.raises(CompareError, match="no results.json"):
        compare([tmp_path])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text("{not json")
    with pytest.raises(CompareError, match="results.json"):
        compare([tmp_path])
    assert not (tmp_path / "summary.csv").exists()


def test_every_node_keeps_a_verifiable_audit_log_without_values(sweep_dir):
    from federation.audit_log import verify

    run_dir = sorted(sweep_dir.glob("*/results.json"))[0].parent
    for party in ("lender", "bureau", "social"):
        log = run_dir / "parties" / party / "audit.jsonl"
        verdict = verify(log)
        assert verdict.ok and verdict.lines > 5, party
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        events = {e["event"] for e in entries}
        assert "evaluate.final" in events
        kind = "train.head" if party == "lender" else "train.embed"
        sent = [e["sent"] for e in entries if e["event"] == kind and e["sent"]]
        assert sent and all(set(v) <= {"shape", "dtype", "bytes"} for s in sent
                            for v in s.values())
        # label DP is the lender's only spend in this sweep; it shows in each training reply
        spent = [e["epsilon"] for e in entries if e["event"] == kind]
        if party == "lender":
            assert spent and all(e.get("label_epsilon") in EPSILONS for e in spent if e)
            assert any(spent)
        else:
            assert not any(spent)
