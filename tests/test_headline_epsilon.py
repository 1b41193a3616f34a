"""Issue 30, finding 10: the headline epsilon is the largest party total, not the largest entry.

A default vertical run (label DP at 3 and DP-SGD at 3) reported epsilon 3.000 while its lender
spent both: label DP's 3 and DP-SGD's 2.999 on the same customers' records, 5.999 in all, and
``compare`` plotted the 3. The ledger below holds that run's entries as its results.json
recorded them (the default preset at 20,000 customers, ``outputs/2026-12-07/01-55-23_vertical_
synthetic``); no federation runs here.
"""

from __future__ import annotations

import json
import math

import matplotlib.axes
import pandas as pd
import pytest

from credit_fl.report import _privacy_section
from experiments.compare import SPENT, compare
from federation.lifetime_budget import run_spend
from privacy.ledger import PartySpend, PrivacyLedger
from tests.conftest import independent_epsilon

pytestmark = pytest.mark.unit

FLIP = 0.04742587317756678  # randomized response at epsilon 3: 1 / (1 + e^3)
DEFAULT_RUN = {
    "lender/label_dp": PartySpend(3.0, 0.0, "label_dp", 0.0, 1.0, 1, "randomized response",
                                  flip_probability=FLIP, unit="label"),
    "lender/dpsgd": PartySpend(2.999004642599952, 7.914238434419743e-06, "dpsgd", 2.423828125,
                               0.07142857142857142, 420, "rdp",
                               history=[[12.65625, 1.0, 1], [2.423828125, 0.07142857142857142,
                                                             420]],
                               selection_delta=7.194762213108857e-07),
    "bureau/dpsgd": PartySpend(2.9972606406921374, 8.225828296083343e-06, "dpsgd", 2.498046875,
                               0.07692307692307693, 390, "rdp",
                               history=[[13.125, 1.0, 1], [2.498046875, 0.07692307692307693,
                                                           390]],
                               selection_delta=3.740695021134927e-07),
    "social/dpsgd": PartySpend(2.998975278397487, 8.036243522709318e-06, "dpsgd", 2.498046875,
                               0.07692307692307693, 390, "rdp",
                               history=[[13.28125, 1.0, 1], [2.498046875, 0.07692307692307693,
                                                             390]],
                               selection_delta=2.951071238859706e-07),
}


def _default_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger("label_dp", "dpsgd")
    for entry, spend in DEFAULT_RUN.items():
        ledger.record(1, entry, spend)
    return ledger


def _lender_total() -> float:
    """Worked out apart from the ledger: label DP's epsilon from its flip probability, plus
    DP-SGD's recomputed with Google's dp-accounting (the summary, then the 420 steps)."""
    label = math.log((1 - FLIP) / FLIP)
    dpsgd = DEFAULT_RUN["lender/dpsgd"]
    return label + independent_epsilon({"history": dpsgd.history, "delta": dpsgd.delta,
                                        "selection_delta": dpsgd.selection_delta})


def test_the_old_headline_was_the_largest_entry():
    # what the summary reported: the maximum over entries, 3.000, half of the lender's spend
    assert max(s.epsilon for s in DEFAULT_RUN.values()) == pytest.approx(3.0)
    assert _lender_total() == pytest.approx(6.0, abs=0.01)


def test_the_headline_is_the_lenders_total():
    # Execute
    privacy = _default_ledger().summary()
    # Assert: label DP + DP-SGD at the lender, not either entry
    assert privacy["largest_party"] == "lender"
    assert privacy["epsilon"] == pytest.approx(_lender_total(), rel=0.005)
    assert privacy["epsilon"] > 5.9
    assert privacy["epsilon"] == max(t["epsilon"] for t in privacy["party_totals"].values())
    assert privacy["party_totals"]["lender"]["mechanisms"] == ["dpsgd", "label_dp"]
    # a passive party's one entry is its total, as recorded
    assert privacy["party_totals"]["bureau"]["epsilon"] == DEFAULT_RUN["bureau/dpsgd"].epsilon
    assert privacy["delta"] == max(s.delta for s in DEFAULT_RUN.values())


def test_the_lifetime_budget_charges_the_same_total():
    # the figures the lender's node reports (label_epsilon, and DP-SGD's as "epsilon") add up,
    # in the node's lifetime budget, to the headline: one definition of a party's spend
    figures = {"label_epsilon": 3.0, "epsilon": DEFAULT_RUN["lender/dpsgd"].epsilon}
    assert run_spend(figures) == pytest.approx(_default_ledger().summary()["epsilon"], rel=1e-9)


def test_the_report_names_the_headline():
    text = "\n".join(_privacy_section(_default_ledger().summary()))
    assert "epsilon (largest party total: lender) 5.999" in text
    assert "lender epsilon 5.999 (dpsgd + label_dp)" in text


def test_a_horizontal_headline_is_the_largest_lender_as_before():
    ledger = PrivacyLedger("dpsgd")
    ledger.record(1, "lender-0", PartySpend(1.25, 1e-5, "dpsgd", 1.1, 0.01, 100, "rdp"))
    ledger.record(1, "lender-1", PartySpend(1.5, 2e-5, "dpsgd", 1.0, 0.01, 100, "rdp"))
    privacy = ledger.summary()
    assert (privacy["epsilon"], privacy["delta"], privacy["largest_party"]) == (1.5, 2e-5,
                                                                                "lender-1")


def test_central_dp_reports_its_record_level_entry():
    # the client and record entries are one mechanism seen two ways: never added
    ledger = PrivacyLedger("central")
    ledger.record(1, "server/client", PartySpend(0.8, 1e-5, "central", 3.0, 1.0, 10, "rdp",
                                                 unit="client"))
    ledger.record(1, "server/record", PartySpend(2.0, 1e-5, "central", 1.5, 1.0, 10, "rdp"))
    privacy = ledger.summary()
    assert privacy["epsilon"] == 2.0 and "largest_party" not in privacy
    assert "record level" in "\n".join(_privacy_section(privacy))


# --- compare ---------------------------------------------------------------------------------

def _results(privacy: dict, seed: int, auc: float) -> dict:
    return {"mode": "vertical", "seed": seed, "privacy": privacy,
            "metrics": {"test": {"auc": auc, "ks": 0.4, "brier": 0.1}},
            "config": {"privacy": {"target_epsilon": 3.0, "label_epsilon": 3.0,
                                   "embedding_epsilon": None}}}


def test_compare_reads_and_plots_the_largest_party_total(tmp_path, monkeypatch):
    # Prepare: two seeds of the default run; the second written before the headline changed
    # (its epsilon the largest entry, 3.0), which compare reads from its party totals
    privacy = _default_ledger().summary()
    old = {**privacy, "epsilon": 3.0}
    del old["largest_party"]
    for seed, (p, auc) in enumerate([(privacy, 0.79), (old, 0.80)]):
        (tmp_path / f"run{seed}").mkdir()
        (tmp_path / f"run{seed}" / "results.json").write_text(json.dumps(_results(p, seed, auc)))
    plotted: list[list[float]] = []
    real = matplotlib.axes.Axes.errorbar

    def recording(self, x, y, *args, **kwargs):
        plotted.append(list(x))
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", recording)
    # Execute
    paths = compare([tmp_path])
    # Assert: each run's row, the table and the plot's x carry the lender's total
    runs = pd.read_csv(paths["runs.csv"])
    assert list(runs["epsilon_spent"]) == pytest.approx([privacy["epsilon"]] * 2)
    assert list(runs["epsilon"]) == [3.0, 3.0]  # the budget, each mechanism's: the grouping
    table = paths["summary.md"].read_text()
    assert f"{SPENT} (mean ± sd)" in table and f"{privacy['epsilon']:.4f} ± 0.0000" in table
    assert plotted and all(x == pytest.approx([privacy["epsilon"]]) for x in plotted)
