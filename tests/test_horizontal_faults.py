"""Horizontal federation's faults on Flower's simulation engine: crashing, misshapen, slow and
sign-flipping lenders (issue 3's acceptance; split from test_horizontal.py so that pytest's
workers share the module's runs)."""

import time

import pytest

from fl_server.horizontal_rounds import FederationError
from tests.conftest import run_experiment

HORIZONTAL = ["federation=horizontal"]
TINY = HORIZONTAL + ["data.n_customers=5000"]  # faults: the data size does not matter
NO_AUDIT = ["audit.enabled=false"]  # runs compared on their models (the audit has its own tests)


def _auc(r):
    return r["metrics"]["test"]["auc"]

def test_crashing_nan_and_misshapen_clients_are_left_out_and_recorded(tmp_path, own_engine):
    r = run_experiment(TINY + ["federation.rounds=2", "+federation.faults.lender-1=crash",
                                "+federation.faults.lender-2=nonfinite",
                                "+federation.faults.lender-3=shape"], tmp_path)
    assert r["federation"]["completed_rounds"] == 2
    reasons = {(e["round"], e["party"]): e["reason"] for e in r["federation"]["excluded"]}
    for server_round in (1, 2):
        assert "injected crash" in reasons[(server_round, "lender-1")]
        assert "non-finite" in reasons[(server_round, "lender-2")]
        assert "wrong names or shapes" in reasons[(server_round, "lender-3")]
    assert [h["clients"] for h in r["metrics"]["history"]] == [2, 2]
    import ray

    assert not ray.is_initialized()  # the engine stops Ray when the run ends


def test_too_few_clients_end_the_run_with_a_clear_error(tmp_path):
    faults = [f"+federation.faults.lender-{k}=crash" for k in range(4)]
    start = time.monotonic()
    with pytest.raises(FederationError, match=r"round 1: 1 usable replies, below "
                                              r"federation.min_clients=2; left out: .*lender-0 "
                                              r"\(client error: lender-0: injected crash"):
        run_experiment(TINY + ["federation.round_timeout=60"] + faults, tmp_path)
    assert time.monotonic() - start < 60 + 30  # the round timeout plus start-up, never a hang
    assert not (tmp_path / "results.json").exists()


def test_a_client_past_the_round_timeout_is_left_out_without_hanging(tmp_path, own_engine):
    start = time.monotonic()
    r = run_experiment(TINY + ["federation.rounds=1", "federation.round_timeout=6",
                                "+federation.faults.lender-0=slow"], tmp_path)
    excluded = [e for e in r["federation"]["excluded"] if e["party"] == "lender-0"]
    assert excluded and "no reply within federation.round_timeout" in excluded[0]["reason"]
    assert time.monotonic() - start < 120


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """One of 5 lenders sends sign-flipped, scaled updates (6 rounds: the attack shows at once)."""
    # the in-process engine: the models are compared (same metrics as Ray's for the same seed,
    # tests/test_front_door_runs.py), at a fifth of the time; the faults below run on Ray
    base = HORIZONTAL + ["data.n_customers=50000", "federation.rounds=6", "engine=in_process"]
    attack = ["+federation.faults.lender-3=signflip"]
    runs = {}
    for name, overrides in {"clean": base, "fedavg": base + attack,
                            "fedtrimmedavg": base + attack + ["federation.strategy=fedtrimmedavg"],
                            "krum": base + attack + ["federation.strategy=krum"]}.items():
        runs[name] = run_experiment(overrides + NO_AUDIT, tmp_path_factory.mktemp(name))
    return runs


def test_robust_strategies_resist_a_sign_flipping_lender_and_fedavg_does_not(attacked):
    clean = _auc(attacked["clean"])
    aucs = {name: _auc(r) for name, r in attacked.items()}
    print("AUC under attack:", {k: round(v, 4) for k, v in aucs.items()})
    assert clean - aucs["fedavg"] > 0.02
    assert min(clean - aucs["fedtrimmedavg"], clean - aucs["krum"]) <= 0.02
