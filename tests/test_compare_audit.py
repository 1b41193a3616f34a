"""``compare`` sets the one-run canary audit's bound (and RMIA's TPR at 0.1% FPR) beside each
budget: the means over seeds worked out here from hand-made results.json files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from experiments.compare import compare

pytestmark = pytest.mark.unit

RUNS = [  # (budget, seed, one-run bound, twin accounted, RMIA TPR at 0.1% FPR)
    (1.0, 0, 0.0, 0.99, 0.001), (1.0, 1, 0.2, 0.99, 0.003),
    (8.0, 0, 1.3, 7.9, 0.004), (8.0, 1, 1.7, 7.9, 0.002)]


def _results(budget: float, seed: int, bound: float, accounted: float, tpr: float) -> dict:
    return {"mode": "vertical", "seed": seed,
            "metrics": {"test": {"auc": 0.7, "ks": 0.3, "brier": 0.1}},
            "config": {"privacy": {"target_epsilon": budget, "label_epsilon": budget}},
            "privacy": {"mechanism": "label_dp+dpsgd", "epsilon": 2 * budget,
                        "party_totals": {"lender": {"epsilon": 2 * budget}}},
            "audit": {"membership": {"attack_auc": 0.5, "epsilon_lower_bound": 0.0,
                                     "theoretical_epsilon": 4 * budget},
                      "one_run": {"epsilon_lower_bound": bound, "accounted_epsilon": accounted},
                      "rmia": {"tpr_at_fpr": {"0.001": {"tpr": tpr}}}}}


def test_the_compare_table_holds_the_audited_bound_per_budget(tmp_path: Path) -> None:
    # Prepare
    for k, run in enumerate(RUNS):
        (tmp_path / f"job{k}").mkdir()
        (tmp_path / f"job{k}" / "results.json").write_text(json.dumps(_results(*run)))
    # Execute
    paths = compare([tmp_path])
    # Assert: mean over the two seeds of each budget
    summary = pd.read_csv(paths["summary.csv"]).set_index("epsilon")
    assert summary.loc[1.0, "one_run_epsilon_lower_bound_mean"] == pytest.approx(0.1)
    assert summary.loc[8.0, "one_run_epsilon_lower_bound_mean"] == pytest.approx(1.5)
    assert summary.loc[8.0, "one_run_accounted_epsilon_mean"] == pytest.approx(7.9)
    assert summary.loc[1.0, "rmia_tpr_at_0.1%_fpr_mean"] == pytest.approx(0.002)
    table = paths["summary.md"].read_text()
    assert "one-run canary eps lower bound (mean ± sd)" in table
    assert "| 8 | 2 |" in table and "1.5000 ± 0.2828" in table
    assert paths["privacy_utility.png"].stat().st_size > 0
