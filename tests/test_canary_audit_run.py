"""``audit.canaries=m`` in a run: the twin follows the run's ledger, results.json and the report
carry ``audit.one_run`` (and, with ``audit.reference_models=k``, ``audit.rmia``), and what
cannot be twinned is refused before training."""

from __future__ import annotations

import dataclasses

import pytest

from credit_data.errors import ConfigError
from credit_data.settings import DataSettings, Source
from credit_fl.attacks import attack_outcome
from credit_fl.baselines import run_baseline
from credit_fl.canary_attack import twin_plan
from credit_fl.checks import check_settings
from credit_fl.outcome import RunOutcome
from credit_fl.report import render_report
from credit_fl.results import build_results
from credit_fl.results_schema import check_results
from federation.run_settings import RunSettings
from federation.settings import FederationSettings, Mode
from models.settings import ModelKind, ModelSettings, TrainSettings
from privacy.accounting import epsilon_of
from privacy.settings import AuditSettings, PrivacyMechanism, PrivacySettings

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("one_torch_thread")]

LEDGER = {  # a vertical run's lender entries, as results.json holds them (20,000 customers)
    "lender/dpsgd": {"epsilon": 2.999004642599952, "delta": 7.914238434419743e-06,
                     "mechanism": "dpsgd", "noise_multiplier": 2.423828125,
                     "sample_rate": 1 / 14, "steps": 420,
                     "selection_delta": 7.194762213108857e-07},
    "lender/label_dp": {"epsilon": 3.0, "delta": 0.0, "mechanism": "label_dp",
                        "flip_probability": 0.04742587317756678},
}


def _outcome(settings: RunSettings, privacy: dict | None) -> RunOutcome:
    return RunOutcome(settings=settings, dataset={}, model={}, metrics={"history": [{}] * 7},
                      data_seconds=0.0, train_seconds=0.0, train_rows_per_s=0.0,
                      privacy=privacy)


def test_the_twin_runs_the_lenders_dp_sgd_and_flips_as_the_ledger_records_them() -> None:
    # Prepare
    settings = RunSettings(federation=FederationSettings(mode=Mode.vertical),
                           model=ModelSettings(kind=ModelKind.split_mlp),
                           privacy=PrivacySettings(mechanism=PrivacyMechanism.dpsgd,
                                                   max_grad_norm=10.0, label_epsilon=3.0))
    # Execute
    plan, label_epsilon = twin_plan(_outcome(settings, {"parties": LEDGER}), rows=14_000)
    # Assert: 420 steps at rate 1/14 are 30 passes; DP-SGD's own delta, without the summary's
    assert (plan.noise_multiplier, plan.sample_rate, plan.epochs, plan.steps) == (
        2.423828125, 1 / 14, 30, 420)
    assert plan.max_grad_norm == 10.0
    assert plan.delta == pytest.approx(7.914238434419743e-06 - 7.194762213108857e-07)
    assert plan.label_flip == pytest.approx(0.04742587317756678)
    assert label_epsilon == 3.0
    # the twin's DP-SGD alone spends less than the lender's total (the summary composes in)
    twin = epsilon_of([(2.423828125, 1 / 14, 420)], delta=plan.delta)
    assert plan.accounted_epsilon() == pytest.approx(twin)
    assert 2.0 < plan.accounted_epsilon() < 2.999004642599952


def test_without_dp_the_twin_trains_as_many_epochs_as_the_run() -> None:
    # Prepare
    settings = RunSettings(federation=FederationSettings(mode=Mode.vertical, local_epochs=2),
                           model=ModelSettings(kind=ModelKind.split_mlp))
    # Execute
    plan, label_epsilon = twin_plan(_outcome(settings, None), rows=1_000)
    # Assert: 7 epochs of history, 2 passes over each chunk per exchange
    assert (plan.noise_multiplier, plan.epochs, plan.steps, label_epsilon) == (None, 14, 0, None)
    assert plan.accounted_epsilon() == float("inf")


def test_a_run_with_canaries_reports_the_one_run_bound() -> None:
    # Prepare: a small centralized run, no privacy
    settings = RunSettings(
        verbose=False, data=DataSettings(n_customers=1_000),
        federation=FederationSettings(mode=Mode.centralized, parties=("lender", "bureau")),
        train=TrainSettings(epochs=4, min_epochs=2, patience=2),
        audit=AuditSettings(canaries=100, reference_models=2, reference_epochs=0))
    outcome = run_baseline(settings)
    # Execute
    audit = attack_outcome(outcome)
    # Assert
    assert audit is not None
    one = audit["one_run"]
    assert one["canaries"] == 100 and one["confidence"] == 0.95
    assert one["accounted_epsilon"] is None and one["mechanism"] == "none"
    assert one["ships_canaries"] is False
    assert one["epsilon_lower_bound"] > 1.0  # no DP: the canaries that were in are found
    assert one["twin"]["epochs"] == len(outcome.metrics["history"])
    rmia = audit["rmia"]  # RMIA with 2 reference models on the attacker's own sample
    assert rmia["reference_models"] == 2  # each trained as many epochs as the run (0)
    assert rmia["reference_epochs"] == len(outcome.metrics["history"])
    assert rmia["reference_rows"] == outcome.dataset["rows"]["train"]
    assert rmia["members"] == rmia["non_members"] == outcome.dataset["rows"]["test"]
    assert rmia["attack_auc_interval"][0] <= rmia["attack_auc"] <= rmia["attack_auc_interval"][1]
    assert set(rmia["tpr_at_fpr"]) == {"0.001", "0.01"}
    results = build_results(outcome, 1.0, {}, audit)
    assert check_results(results) == []
    assert "One-run canary audit (100 canaries" in render_report(results)
    assert "RMIA on the final model (2 reference models" in render_report(results)


@pytest.mark.parametrize(("change", "key"), [
    ({"privacy": PrivacySettings(mechanism=PrivacyMechanism.central)}, "privacy=central"),
    ({"data": DataSettings(source=Source.frames)}, "DataFrames")])
def test_what_the_twin_cannot_repeat_is_refused_before_training(change: dict, key: str) -> None:
    # Prepare
    settings = dataclasses.replace(
        RunSettings(federation=FederationSettings(mode=Mode.horizontal),
                    audit=AuditSettings(canaries=100)), **change)
    # Execute / Assert
    with pytest.raises(ConfigError, match=f"audit.canaries.*{key}"):
        check_settings(settings)
