"""Issue 32, item 1: ``model=scorecard`` trained by the federation, in every mode.

The independent reference is scikit-learn's logistic regression on the same one-hot bins
(:mod:`experiments.scorecard_reference`). The vertical federation runs its real ServerApp and
ClientApp on the in-process grid (as ``tests/test_pilot_data.py``). CI runs one small vertical
check under the default privacy preset and without privacy (engine tier); the Taiwan
comparison is full-size and the pilot-sized comparison in every mode (:func:`pilot_gaps`, about
5 minutes a pilot) are the slow tier's (``RUN_SLOW=1``).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from credit_data.design import build_design
from credit_data.loading import load_population
from credit_data.saved_preprocessing import SHARED_SCHEMA, SavedPreprocessing
from credit_fl.baselines import run_baseline
from credit_fl.config import settings as compose_settings
from credit_fl.horizontal import lender_rows, run_horizontal
from experiments.scorecard_reference import binned_reference, fitted_reference
from fl_client.node_noise import simulated_split_keys
from models.binned_scorecard import layout_of
from models.bundle import load_bundle
from tests.in_process_runs import vertical_in_process

SCORECARD = ["model=scorecard", "verbose=false", "privacy.reproducible_noise=true"]
MARGIN = 0.01
SEEDS = (0, 1, 2)
PILOTS = {"taiwan-1000": ["data=uci_credit_card", "data.max_rows=1000"],
          "synthetic-1000": ["data.n_customers=1000"]}
MODES = ("centralized", "local", "vertical", "horizontal")


def vertical_run(settings, run_dir: Path):
    """Train the vertical scorecard on the in-process grid; return the run's outcome."""
    return vertical_in_process(settings, run_dir)


def vertical_auc(settings, run_dir: Path) -> float:
    """Train the vertical scorecard on the in-process grid; return its test AUC."""
    return float(vertical_run(settings, run_dir).metrics["test"]["auc"])


def mode_gap(mode: str, overrides: list[str], run_dir: Path) -> tuple[float, float]:
    """Return the scorecard's test AUC in ``mode`` and the reference's on the same bins.

    The reference sees the columns the mode trains on (the lender's alone in local mode; in
    horizontal mode the pooled lenders' rows of its parties' columns).
    """
    extra = ["privacy=off", "engine=in_process"]
    settings = compose_settings(f"federation={mode}", *SCORECARD, *overrides, *extra)
    population = load_population(settings.data, settings.seed)
    parties = tuple(p for p in settings.federation.parties if p in population.tables)
    design = build_design(population, settings.data, settings.seed,
                          simulated_split_keys(settings, population.tables))
    reference = binned_reference(design, parties, settings.model)["auc"]
    if mode == "vertical":
        auc = vertical_auc(settings, run_dir)
    elif mode == "horizontal":
        # the union's row-level test scores (a simulation holds them): at 1,000 rows the
        # lenders' pooled score summaries merge cells of fewer than 20 rows, too coarse here;
        # the reference on the same bins: the shared schema's, of every lender's rows and split
        run = run_horizontal(settings, run_dir, population)
        assert run.labels is not None and run.scores is not None
        auc = float(roc_auc_score(run.labels["test"], run.scores["test"]))
        saved = SavedPreprocessing.from_json_dict(
            load_bundle(run_dir / "model").preprocessing[SHARED_SCHEMA])
        layout = layout_of(settings.model, saved.feature_names)
        held = list(lender_rows(settings, population)[2].values())
        x = np.concatenate([layout.one_hot(torch.as_tensor(
            saved.transform(r.frame, r.party).x)).numpy() for r in held])
        reference = fitted_reference(x, np.concatenate([r.y for r in held]),
                                     np.concatenate([r.split for r in held]))["auc"]
    else:
        auc = run_baseline(settings, population=population).metrics["test"]["auc"]
    return auc, reference


@pytest.mark.engine
@pytest.mark.parametrize("privacy", ["label_dp_dpsgd", "off"])
def test_the_vertical_scorecard_trains_under_the_privacy_options(privacy, tmp_path):
    # Prepare: 1,000 synthetic customers, three parties, the preset (default) or no privacy
    settings = compose_settings("federation=vertical", *SCORECARD, "data.n_customers=1000",
                                f"privacy={privacy}", "train.epochs=3", "train.min_epochs=1")
    # Execute
    run = vertical_run(settings, tmp_path)
    # Assert: without privacy it learned; under the preset each party's DP-SGD and the
    # lender's label DP ran and spent at most the preset's epsilon 3 (on 1,000 rows and 3
    # epochs its noise leaves the AUC near chance: Taiwan-size runs are the slow tier's);
    # each party keeps its own table of points in its bundle
    if privacy == "off":
        assert run.metrics["test"]["auc"] > 0.6 and not (run.privacy or {}).get("parties")
    else:
        spent = run.privacy["parties"]
        assert {"lender/dpsgd", "bureau/dpsgd", "social/dpsgd", "lender/label_dp"} <= set(spent)
        assert all(0 < v["epsilon"] <= 3.0 + 1e-9 for v in spent.values())
    for party in ("lender", "bureau", "social"):
        manifest = json.loads((tmp_path / "parties" / party / "model" / "model.json").read_text())
        table = manifest["scorecard_table"]
        assert {r["column"] for r in table["bins"]} <= set(manifest["columns"]["numeric"]) | set(
            manifest["columns"]["categorical"]) | {f"input{i}" for i in range(64)}
        assert all(isinstance(r["points"], float) for r in table["bins"])
        assert ("intercept_points" in table) == (party == "lender")


@pytest.mark.slow
def test_taiwan_vertical_scorecard_matches_centralized_and_the_logistic_reference(
        shared_data, tmp_path):
    central, reference = mode_gap("centralized", ["data=uci_credit_card"], tmp_path / "c")
    vertical, _ = mode_gap("vertical", ["data=uci_credit_card"], tmp_path / "v")
    print(f"taiwan scorecard: vertical {vertical:.4f}, centralized {central:.4f}, "
          f"LR on the same bins {reference:.4f}")
    assert vertical >= 0.75
    assert abs(vertical - central) <= MARGIN
    assert vertical >= reference - MARGIN


def pilot_gaps(name: str, run_dir: Path) -> dict[str, float]:
    """Mean over :data:`SEEDS` of the scorecard's test AUC less the reference's, per mode.

    Also run as ``python -m tests.test_scorecard_runs taiwan-1000`` (or ``synthetic-1000``).
    """
    gaps: dict[str, list[float]] = {m: [] for m in MODES}
    for seed in SEEDS:
        for mode in MODES:
            auc, ref = mode_gap(mode, [*PILOTS[name], f"seed={seed}"], run_dir / f"{mode}{seed}")
            gaps[mode].append(auc - ref)
    means = {m: statistics.mean(g) for m, g in gaps.items()}
    print(f"{name}: scorecard minus LR on the same bins, means over seeds {SEEDS}: "
          + ", ".join(f"{m} {v:+.4f} {[round(g, 4) for g in gaps[m]]}"
                      for m, v in means.items()))
    return means


def _assert_pilot(means: dict[str, float]) -> None:
    # every mode, the lender alone included: not below the reference by more than MARGIN
    assert all(means[m] >= -MARGIN for m in MODES), means


@pytest.mark.slow
def test_on_the_taiwan_pilot_the_scorecard_matches_the_logistic_reference(shared_data,
                                                                         tmp_path):
    # issue 32: within 0.01 of the reference, the lender alone included (means over 3 seeds;
    # before model.l2 and the last epoch's weights centralized was -0.0075 on Taiwan, and at
    # train.weight_decay 1e-5 with early stopping on Taiwan seed 2 -0.019)
    _assert_pilot(pilot_gaps("taiwan-1000", tmp_path))


@pytest.mark.slow
def test_on_the_synthetic_pilot_the_scorecard_matches_the_logistic_reference(tmp_path):
    _assert_pilot(pilot_gaps("synthetic-1000", tmp_path))


if __name__ == "__main__":
    import sys
    import tempfile

    pilot_gaps(sys.argv[1], Path(tempfile.mkdtemp()))
