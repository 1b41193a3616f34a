"""Horizontal federation's privacy settings and resumes: caps, central DP, resumes with secret
noise (split from test_horizontal.py so that pytest's workers share the module's runs).

The runs take the in-process engine: these tests read ledgers and models, and both engines give
the same metrics for the same seed (tests/test_front_door_runs.py); Ray's own runs of the
horizontal apps are in test_horizontal.py and test_horizontal_faults.py."""

import json

import pytest

from credit_data.errors import ConfigError
from fl_server.horizontal_rounds import FederationError
from tests.conftest import independent_epsilon, run_experiment

HORIZONTAL = ["federation=horizontal", "engine=in_process"]
SMALL = HORIZONTAL + ["data.n_customers=20000"]
TINY = HORIZONTAL + ["data.n_customers=5000"]  # resume: the data size does not matter


def _auc(r):
    return r["metrics"]["test"]["auc"]

def test_resume_after_round_3_of_6_ends_like_an_uninterrupted_run(tmp_path):
    # reproducible noise (research switch): the same noise in both runs, so equal models
    common = HORIZONTAL + ["data.n_customers=2500", "federation.rounds=6", "privacy=dpsgd",
                           "privacy.target_epsilon=3", "privacy.reproducible_noise=true"]
    whole = run_experiment(common, tmp_path / "whole")
    first = run_experiment(common + ["federation.stop_after=3"], tmp_path / "part")
    assert first["federation"]["completed_rounds"] == 3
    rest = run_experiment(common + [f"resume={tmp_path / 'part'}"], tmp_path / "rest")
    assert rest["federation"]["completed_rounds"] == 6
    assert _auc(rest) == pytest.approx(_auc(whole), abs=1e-4)
    assert rest["privacy"]["parties"] == whole["privacy"]["parties"]
    assert [h["round"] for h in rest["privacy"]["history"]] == \
        [h["round"] for h in whole["privacy"]["history"]]
    first_spend = first["privacy"]["epsilon"]
    assert first_spend < rest["privacy"]["epsilon"]  # no round paid twice, none forgotten
    assert json.loads((tmp_path / "rest" / "parties" / "lender-0.json").read_text())["history"]


def test_a_client_refuses_rounds_past_its_own_max_epsilon(tmp_path):
    # epsilon 4 over 4 rounds: one round already spends about 2.6 of it, so a cap of 3 lets
    # lender-2 train in round 1 and refuse the rest
    r = run_experiment(SMALL + ["federation.rounds=4", "privacy=dpsgd",
                                "privacy.target_epsilon=4",
                                "+privacy.party_max_epsilon.lender-2=3"], tmp_path)
    refusals = r["privacy"]["refusals"]
    assert refusals and all(x["party"] == "lender-2" for x in refusals)
    assert "past its privacy.max_epsilon 3.000" in refusals[0]["reason"]
    assert 0 < r["privacy"]["parties"]["lender-2"]["epsilon"] <= 3.0
    assert any(e["party"] == "lender-2" for e in r["federation"]["excluded"])
    assert r["federation"]["completed_rounds"] == 4


def test_central_dp_reports_record_and_client_level_epsilon(tmp_path):
    r = run_experiment(SMALL + ["federation.rounds=3", "privacy=central"], tmp_path)
    client = r["privacy"]["parties"]["server/client"]
    record = r["privacy"]["parties"]["server/record"]
    assert client["steps"] == record["steps"] == 3 and client["unit"] == "client"
    # one record moves its lender's clipped update by up to 2C: half the noise per unit
    assert record["sensitivity"] == 2 * client["sensitivity"] == 2.0
    assert record["noise_multiplier"] == pytest.approx(client["noise_multiplier"] / 2)
    for entry in (client, record):
        print(entry["unit"], entry["epsilon"], independent_epsilon(entry))
        assert entry["epsilon"] == pytest.approx(independent_epsilon(entry), rel=0.05)
    assert client["epsilon"] < record["epsilon"] <= 3.0 * 1.001
    # delta below 1/n of the records it protects (every lender's training rows)
    train_rows = sum(p["train_rows"] for p in r["dataset"]["parties"].values())
    assert record["delta"] < 1 / train_rows
    # the audit's theoretical epsilon is the record-level one
    assert r["audit"]["membership"]["theoretical_epsilon"] == pytest.approx(record["epsilon"])


@pytest.mark.parametrize(("overrides", "key"), [
    (["federation.strategy=fedprox", "privacy=dpsgd"], "federation.strategy=fedprox"),
    (["+federation.faults.lender-9=crash"], "federation.faults"),
    (["federation.min_clients=9"], "federation.min_clients"),
    (["partition.alpha=0"], "partition.alpha"),
])
def test_bad_federation_settings_name_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_experiment(SMALL + overrides, tmp_path)


def test_a_private_run_resumes_with_secret_noise_and_releases_its_summary_once(tmp_path):
    common = HORIZONTAL + ["data.n_customers=2500", "federation.rounds=4", "privacy=dpsgd",
                           "privacy.target_epsilon=3"]
    first = run_experiment(common + ["federation.stop_after=2"], tmp_path / "part")
    rest = run_experiment(common + [f"resume={tmp_path / 'part'}"], tmp_path / "rest")
    assert rest["federation"]["completed_rounds"] == 4 and rest["privacy"]["guarantee"]
    for party, spend in rest["privacy"]["parties"].items():
        before = first["privacy"]["parties"][party]
        # the same noisy summary (the schema agreed again), counted once, then DP-SGD's steps
        assert spend["history"][0] == before["history"][0] and len(spend["history"]) == 2
        assert spend["steps"] == 2 * before["steps"]
        assert before["epsilon"] < spend["epsilon"] <= 3.0 * (1 + 1e-9)


def test_central_dp_refuses_a_resume_whose_plan_changed(tmp_path):
    common = TINY + ["privacy=central"]
    run_experiment(common + ["federation.rounds=3", "federation.stop_after=1"], tmp_path / "a")
    with pytest.raises(FederationError, match="central DP's plan changed since the checkpoint"):
        run_experiment(common + ["federation.rounds=5", f"resume={tmp_path / 'a'}"],
                       tmp_path / "b")


def test_central_dp_stops_before_a_release_past_its_cap(tmp_path):
    with pytest.raises(FederationError, match=r"aggregate 1 would take the record-level epsilon"):
        run_experiment(TINY + ["privacy=central", "federation.rounds=2",
                               "privacy.max_epsilon=0.5"], tmp_path)


def test_a_delta_of_one_over_n_or_more_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"privacy\.delta=0\.5 is not below 1/n for lender-\d's "
                                          r"training rows"):
        run_experiment(TINY + ["privacy=dpsgd", "privacy.delta=0.5"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["run.log"])
