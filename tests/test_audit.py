"""Issue 5: the empirical privacy audit (membership inference, label leakage).

Vertical runs' audits are checked on the runs of a real sweep, in ``tests/test_sweep.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from privacy.attacks import (
    epsilon_lower_bound,
    label_leakage_attack,
    leakage_scores,
    membership_attack,
    membership_epsilon,
)
from privacy.settings import AuditSettings
from tests.conftest import run_experiment

SMALL = ["data.n_customers=3000"]


def test_lower_bound_is_valid_at_its_confidence_and_has_power():
    """Against a mechanism that is exactly epsilon-DP (randomized response on membership), the
    bound passes epsilon no more often than its confidence allows, and gets close to it."""
    rng = np.random.default_rng(0)
    n, trials, confidence = 4000, 200, 0.95
    for eps in (0.5, 1.0, 2.0):
        p = math.exp(eps) / (1 + math.exp(eps))
        bounds = np.array([epsilon_lower_bound(rng.binomial(n, p), n, rng.binomial(n, 1 - p), n,
                                               0.0, confidence)["epsilon_lower_bound"]
                           for _ in range(trials)])
        assert (bounds > eps).mean() <= 1 - confidence
        assert bounds.mean() > 0.8 * eps


def test_membership_audit_separates_members_and_holds_for_identical_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4000).astype(float)
    same = rng.uniform(0.01, 0.99, 4000)
    settings = AuditSettings()
    audit = membership_attack(y[:2000], same[:2000], y[2000:], same[2000:], delta=1e-5,
                             settings=settings, seed=0)
    assert abs(audit["attack_auc"] - 0.5) < 0.05
    assert audit["epsilon_lower_bound"] < 0.3
    # members scored confidently right, held-out rows not: the attack sees it
    member_scores = np.where(y[:2000] > 0.5, 0.999, 0.001)
    leaky = membership_attack(y[:2000], member_scores, y[2000:], same[2000:], delta=1e-5,
                             settings=settings, seed=0)
    assert leaky["attack_auc"] > 0.9
    assert leaky["epsilon_lower_bound"] > 2.0


def test_label_leakage_scores_find_defaults_from_gradients_alone():
    rng = np.random.default_rng(2)
    y = (rng.random(2000) < 0.2).astype(float)
    p = np.full(2000, 0.2)
    direction = rng.normal(size=8)
    grads = (p - y)[:, None] * direction[None, :] + rng.normal(scale=0.01, size=(2000, 8))
    norm, projected = leakage_scores(grads)
    audit = label_leakage_attack(y, norm, projected)
    assert audit["norm_auc"] > 0.95 and audit["direction_auc"] > 0.95


def test_theoretical_membership_epsilon_per_mode():
    horizontal = {"mechanism": "dpsgd", "epsilon": 2.0, "delta": 1e-5,
                  "parties": {"lender-0": {"epsilon": 2.0, "delta": 1e-5, "mechanism": "dpsgd"}}}
    assert membership_epsilon("horizontal", horizontal)["epsilon"] == 2.0
    vertical = {"mechanism": "label_dp+dpsgd", "epsilon": 3.0, "delta": 1e-5, "parties": {
        "lender/label_dp": {"epsilon": 3.0, "delta": 0.0, "mechanism": "label_dp"},
        "lender/dpsgd": {"epsilon": 2.5, "delta": 1e-5, "mechanism": "dpsgd"},
        "bureau/dpsgd": {"epsilon": 2.5, "delta": 1e-5, "mechanism": "dpsgd"}}}
    assert membership_epsilon("vertical", vertical)["epsilon"] == pytest.approx(8.0)
    label_only = {"mechanism": "label_dp", "epsilon": 3.0, "delta": 0.0, "parties": {
        "lender/label_dp": {"epsilon": 3.0, "delta": 0.0, "mechanism": "label_dp"}}}
    assert math.isinf(membership_epsilon("vertical", label_only)["epsilon"])
    assert math.isinf(membership_epsilon("centralized", None)["epsilon"])


@pytest.fixture(scope="module")
def audited_runs(tmp_path_factory):
    """A deliberately overfit non-private model and a DP-SGD model of horizontal federation."""
    root = tmp_path_factory.mktemp("audit")
    overfit = run_experiment(["federation=centralized", "data.n_customers=1000",
                              "train.epochs=150", "train.early_stopping=false",
                              "train.batch_size=32", "train.weight_decay=0", "model.dropout=0",
                              "model.hidden=[256,256]",
                              # research run: its split keyed by the seed, the same every session
                              "privacy.reproducible_noise=true"], root / "overfit")
    horizontal = run_experiment(["federation=horizontal", "privacy=dpsgd",
                                 "privacy.target_epsilon=1", "federation.rounds=5",
                                 "partition.n_lenders=3", *SMALL], root / "horizontal")
    return {"overfit": overfit, "horizontal": horizontal, "root": root}


def test_empirical_lower_bound_never_exceeds_theoretical_epsilon(audited_runs):
    # the overfit model has no bound to hold (no record-level DP); its attack: the test below
    assert audited_runs["overfit"]["audit"]["membership"]["theoretical_epsilon"] is None
    m = audited_runs["horizontal"]["audit"]["membership"]
    assert m["epsilon_lower_bound"] <= m["theoretical_epsilon"]
    assert m["bound_holds"]
    horizontal = audited_runs["horizontal"]
    assert horizontal["audit"]["membership"]["theoretical_epsilon"] == pytest.approx(
        horizontal["privacy"]["epsilon"])


def test_overfit_model_leaks_membership_clearly_more_than_dp_models(audited_runs):
    overfit = audited_runs["overfit"]["audit"]["membership"]["attack_auc"]
    dp = audited_runs["horizontal"]["audit"]["membership"]["attack_auc"]
    assert overfit > 0.6
    assert dp < 0.56
    assert overfit - dp > 0.07


def test_report_states_theory_bound_and_attack_auc(audited_runs):
    from credit_fl.report import render_report

    report = render_report(audited_runs["horizontal"])
    m = audited_runs["horizontal"]["audit"]["membership"]
    assert "## Empirical privacy audit" in report
    assert f"| {m['theoretical_epsilon']:.3f} | {m['epsilon_lower_bound']:.3f} | " \
           f"{m['attack_auc']:.4f} |" in report


def test_every_lender_keeps_a_verifiable_audit_log(audited_runs):
    from federation.audit_log import verify

    logs = sorted((audited_runs["root"] / "horizontal" / "parties").glob("*/audit.jsonl"))
    assert len(logs) == 3
    # a finished run leaves no node's noise key in its directory (kept only to resume)
    assert not list((audited_runs["root"] / "horizontal" / "parties").glob("*/noise.key"))
    anchors = audited_runs["horizontal"]["audit_logs"]
    assert sorted(anchors["nodes"]) == [log.parent.name for log in logs]
    server = audited_runs["root"] / "horizontal" / "server" / "audit.jsonl"
    assert verify(server, head=anchors["server"]["head"], key=anchors["server"]["key"]).ok
    server_heads = {json.loads(line)["server_log"]["head"] for log in logs
                    for line in log.read_text().splitlines() if "server_log" in line}
    assert server_heads and server_heads <= {json.loads(line)["hash"]
                                             for line in server.read_text().splitlines()}
    for log in logs:  # each node's log ends where the server's log says it stood
        anchor = anchors["nodes"][log.parent.name]
        verdict = verify(log, head=anchor["head"], key=anchor["key"])
        assert verdict.ok and verdict.lines >= 5, log
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        trained = [e for e in entries if e["event"] == "train"]
        assert len(trained) == 5  # one per round
        for entry in trained:
            assert entry["sent"] and all(set(v) == {"shape", "dtype", "bytes"}
                                         for v in entry["sent"].values())
        spent = [e["epsilon"]["epsilon"] for e in trained]
        assert spent == sorted(spent) and 0 < spent[-1] <= 1.0 + 1e-6


@pytest.mark.parametrize(("override", "key"), [("audit.fpr=0.7", "audit.fpr"),
                                               ("audit.confidence=1.5", "audit.confidence"),
                                               ("audit.max_members=3", "audit.max_members")])
def test_bad_audit_settings_fail_naming_the_key_with_nothing_written(tmp_path, override, key):
    from credit_data.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        run_experiment(["federation=centralized", "data.n_customers=500", override],
                       tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_membership_audit_compares_like_with_like_labels():
    """Members with many more defaults than the held-out rows, scored the same way per label:
    a label-blind comparison would see an attack; the stratified one sees none."""
    rng = np.random.default_rng(5)

    def scored(y):  # the same score distribution within each label, members or not
        return np.where(y > 0.5, rng.uniform(0.2, 0.6, len(y)), rng.uniform(0.05, 0.3, len(y)))

    members = (rng.random(6000) < 0.5).astype(float)
    held = (rng.random(6000) < 0.1).astype(float)
    audit = membership_attack(members, scored(members), held, scored(held), delta=1e-5,
                             settings=AuditSettings(), seed=0)
    assert audit["stratified_by_label"]
    assert abs(audit["attack_auc"] - 0.5) < 0.03
    low, high = audit["attack_auc_interval"]
    assert low <= audit["attack_auc"] <= high and high - low < 0.06
    assert all(abs(v - 0.5) < 0.06 for v in audit["attack_auc_by_label"].values())
    # the members compared carry the held-out rows' default rate (about 10%): most of the
    # members' defaults are left out
    assert audit["members"] < 4000


def test_auc_interval_covers_the_true_auc_at_its_confidence():
    from sklearn.metrics import roc_auc_score

    from privacy.attacks import auc_interval

    rng = np.random.default_rng(6)
    misses = 0
    for _ in range(200):
        pos, neg = rng.normal(0.5, 1, 300), rng.normal(0.0, 1, 300)  # true AUC 0.638
        auc = roc_auc_score(np.r_[np.ones(300), np.zeros(300)], np.r_[pos, neg])
        low, high = auc_interval(auc, 300, 300, 0.95)
        misses += not low <= 0.6382 <= high
    assert misses <= 200 * 0.08
