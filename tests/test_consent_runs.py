"""Consent enforced at the party in a real run (issue 34's acceptance), on 1,000 customers.

Withdrawing one customer's training consent at the bureau gives exactly the model of a run in
which the bureau does not hold that customer, and the bureau's blinded ID set (the only message
that carries its own customers) does not hold them; a scoring request for a customer without
``credit_scoring`` consent treats them as unknown to the bureau (the scores of a bureau that
does not hold them, and not in the set it answers with), counted in scoring.json and in the
bureau's audit log; the regulator's record of the run lists the counts and, once a customer
whose row trained it withdraws, the bundle to retrain.
"""

import dataclasses
import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import private_set_intersection.python as psi
import pytest

from credit_data.errors import DataError
from credit_data.loading import load_population
from credit_data.settings import LABEL_HOLDER
from credit_data.split import TRAIN, assign_split
from credit_data.tables import Population
from credit_fl.config import config_of, settings_of
from credit_fl.results import write_run
from credit_fl.vertical import run_vertical
from experiments.config import to_settings
from experiments.monitor import monitor_run
from experiments.rerate import rerate_run
from experiments.score import score_run
from federation.audit_log import verify
from federation.usage_report import main as usage_report
from fl_client.node_noise import simulated_split_keys
from fl_client.scoring_app import make_scoring_client_app
from fl_client.scoring_task import SCORES_FILE
from fl_client.settings import client_settings
from fl_client.simulation_sources import ScoringSimulationSource, load_applicants
from fl_server.app_factory import make_scoring_server_app
from fl_server.scoring_rounds import ScoringOutcome, scoring_server_settings
from privacy.sealed_key import KEY_BYTES
from tests.conftest import compose_config
from tests.fake_grid import InProcessGrid, run_server_app
from tests.routed import payload_values

pytestmark = pytest.mark.engine

BASE = ["federation=vertical", "privacy=off", "data.n_customers=1000", "train.epochs=2",
        "engine=in_process", "audit.enabled=false", "verbose=false"]


def _consent_file(path, ids, purpose, withdrawn):
    rows = [(i, purpose, "granted", "2026-01-01T00:00:00Z", f"g-{i}") for i in ids]
    rows.append((withdrawn, purpose, "withdrawn", "2026-06-01T00:00:00Z", f"w-{withdrawn}"))
    pd.DataFrame(rows, columns=["customer_id", "purpose", "status", "time", "receipt_id"]
                 ).to_csv(path, index=False)
    return path


def _run(overrides, run_dir, population, payloads=None):
    settings = to_settings(compose_config(BASE + overrides))
    outcome = run_vertical(settings, run_dir, population=population,
                           recorder=None if payloads is None else
                           lambda way, node, body: payloads.append((way, node, body)))
    write_run(run_dir, outcome, 0.0, config_of(settings))
    return settings, json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same federation two ways: bureau consent withdrawn, customer absent."""
    tmp = tmp_path_factory.mktemp("consent")
    keys = [f"federation.key_dir={tmp / 'keys'}", f"federation.psi_cache={tmp / 'psi'}"]
    settings = to_settings(compose_config(BASE + keys))
    population = load_population(settings.data, settings.seed)
    bureau, lender = population.tables["bureau"], population.tables[LABEL_HOLDER]
    split = assign_split(lender.frame.index, simulated_split_keys(settings, (LABEL_HOLDER,))[
        LABEL_HOLDER], settings.data.split)
    shared = [i for i in lender.frame.index[split == TRAIN] if i in bureau.frame.index]
    gone, stays = str(shared[0]), str(shared[1])  # a training applicant the bureau knows
    consent = _consent_file(tmp / "bureau-consent.csv", list(bureau.frame.index),
                            "credit_training", gone)
    absent = Population(population.name, {**population.tables, "bureau": bureau.rows(
        bureau.frame.index != gone)}, population.truth)
    payloads: list = []
    out = {"gone": gone, "stays": stays, "tmp": tmp, "keys": keys, "payloads": payloads,
           "bureau_ids": list(bureau.frame.index), "lender_ids": list(lender.frame.index)}
    out["withdrawn"] = (tmp / "withdrawn", _run(keys + [f"+data.consent.bureau={consent}"],
                                                tmp / "withdrawn", population, payloads)[1])
    out["absent"] = (tmp / "absent", _run(keys, tmp / "absent", absent)[1])
    return out


def test_a_withdrawal_gives_the_model_without_the_customer(runs):
    withdrawn, absent = runs["withdrawn"][0], runs["absent"][0]
    assert (withdrawn / "predictions.csv").read_bytes() == (absent / "predictions.csv"
                                                           ).read_bytes()
    a = runs["withdrawn"][1]["federation"]["alignment"]["bureau"]
    b = runs["absent"][1]["federation"]["alignment"]["bureau"]
    assert (a["party_rows"], a["intersection"]) == (b["party_rows"], b["intersection"])
    # the bureau aligned one customer fewer than it holds: the withdrawn one (a training
    # applicant the lender has), so the run without the gate would differ
    assert a["party_rows"] == len(runs["bureau_ids"]) - 1


def test_the_counts_reach_results_report_and_audit_log(runs):
    run_dir, results = runs["withdrawn"]
    held = len(runs["bureau_ids"])
    c = results["dataset"]["consent"]
    assert c["purpose"] == "credit_training"
    assert {k: c["parties"]["bureau"][k] for k in ("rows_held", "rows_used", "consented",
                                                    "withdrawn", "no_record")} == {
        "rows_held": held, "rows_used": held - 1, "consented": held - 1, "withdrawn": 1,
        "no_record": 0}
    assert c["parties"]["lender"] == {"records": False}
    log = run_dir / "parties" / "bureau" / "audit.jsonl"
    lines = [json.loads(t) for t in log.read_text().splitlines()]
    logged = [e for e in lines if e["event"] == "consent"]
    assert len(logged) == 1 and logged[0]["withdrawn"] == 1 and logged[0]["rows_used"] == held - 1
    assert verify(log).ok
    page = (run_dir / "report.md").read_text()
    assert f"| bureau | {held:,} | {held - 1:,} | {held - 1:,} | 1 | 0 |" in page
    assert "| lender | | | no consent records: all rows used | | |" in page
    assert runs["absent"][1]["dataset"]["consent"] is None
    assert "No consent records: all rows used." in (runs["absent"][0] / "report.md").read_text()


def test_the_bureaus_blinded_set_does_not_hold_the_withdrawn_customer(runs):
    routed = {v for _, _, body in runs["payloads"] for v in payload_values(body)
              if isinstance(v, bytes)}
    kept = list((runs["tmp"] / "psi" / "bureau" / "psi").glob("*.bin"))
    sent = [blob for blob in (p.read_bytes() for p in kept) if blob[KEY_BYTES:] in routed]
    assert len(sent) == 1  # the setup the bureau sent in the withdrawn run, with its key
    key, setup = sent[0][:KEY_BYTES], sent[0][KEY_BYTES:]
    client = psi.client.CreateWithNewKey(True)
    request = client.CreateRequest([runs["gone"], runs["stays"]])
    response = psi.server.CreateFromKey(key, True).ProcessRequest(request)
    server_setup = psi.ServerSetup()
    server_setup.ParseFromString(setup)
    found = set(np.asarray(client.GetIntersection(server_setup, response)).tolist())
    assert found == {1}  # the customer who stays is in it; the one who withdrew is not


def test_scoring_without_scoring_consent_treats_the_customer_as_unknown(runs):
    run_dir = runs["withdrawn"][0]
    other = runs["stays"]
    consent = _consent_file(runs["tmp"] / "bureau-scoring.csv", runs["bureau_ids"],
                            "credit_scoring", other)
    out, scoring = score_run(run_dir, [f"data.consent.bureau={consent}", "scoring.rows=all",
                                       "explain.enabled=false",
                                       f"scoring.out={runs['tmp'] / 'scored'}"])
    scores = pd.read_csv(out / "scores.csv", dtype={"id": str}).set_index("id")
    assert scores.loc[other, "known_bureau"] == 0
    assert scores.loc[runs["gone"], "known_bureau"] == 1  # it withdrew training only
    c = scoring["consent"]["parties"]["bureau"]
    assert (scoring["consent"]["purpose"], c["withdrawn"], c["rows_used"]) == (
        "credit_scoring", 1, len(runs["bureau_ids"]) - 1)
    held = len(runs["bureau_ids"])  # and the scoring's report.md says so
    assert f"| bureau | {held:,} | {held - 1:,} | {held - 1:,} | 1 | 0 |" in (
        out / "report.md").read_text()
    log = out / "parties" / "bureau" / "audit.jsonl"
    logged = [json.loads(t) for t in log.read_text().splitlines()]
    assert [(e["purpose"], e["withdrawn"]) for e in logged if e["event"] == "consent"] == [
        ("credit_scoring", 1)]


class _Shared:
    """The applicants as an engine shares them with its nodes (``engine.share``)."""

    def __init__(self, population):
        self.population = population

    def get(self):
        return self.population


def _frames(population, leave_out=None):
    """Each party's table as the DataFrame its file would be (the bureau without a customer)."""
    frames = {}
    for party, table in population.tables.items():
        frame = table.frame.astype(dict.fromkeys(table.categorical, "category")).rename_axis(
            "customer_id")
        if party == "bureau" and leave_out is not None:
            frame = frame[frame.index != leave_out]
        frames[party] = frame
    return frames


def _scored(run_dir, overrides, out, frames, recorder=None):
    """Score the run's bundles on the in-process grid, every routed payload recorded."""
    settings = settings_of(run_dir, "scoring.rows=all", "explain.enabled=false", *overrides)
    bundles = {p: run_dir / "parties" / p / "model" for p in ("lender", "bureau", "social")}
    clients = {p: client_settings(settings, p, str(out)) for p in bundles}
    app = make_scoring_client_app(ScoringSimulationSource(
        clients, settings, bundles, _Shared(load_applicants(settings, frames=frames))))
    outcome = ScoringOutcome()
    run_server_app(make_scoring_server_app(dataclasses.replace(
        scoring_server_settings(settings), n_nodes=len(bundles)), outcome, out, recorder),
        InProcessGrid(app, len(bundles)))
    assert outcome.error is None, outcome.error
    return pd.read_csv(out / "lender" / SCORES_FILE, dtype={"id": str}).set_index("id")


def test_scoring_without_consent_gives_the_scores_of_a_bureau_without_the_customer(runs):
    # Prepare: the bureau's file grants scoring to all its customers but one
    run_dir, other = runs["withdrawn"][0], runs["stays"]
    consent = _consent_file(runs["tmp"] / "bureau-scoring-gate.csv", runs["bureau_ids"],
                            "credit_scoring", other)
    population = load_population(settings_of(run_dir).data, settings_of(run_dir).seed)
    payloads: list = []
    # Execute: scored under the file, and under the same file by a bureau that does not hold
    # the customer (its file then leaves out no one)
    gated = _scored(run_dir, [f"data.consent.bureau={consent}"], runs["tmp"] / "gated-scoring",
                    _frames(population), lambda way, node, body: payloads.append(body))
    absent = _scored(run_dir, [f"data.consent.bureau={consent}"], runs["tmp"] / "absent-scoring",
                     _frames(population, other))
    # Assert: the same scores for every applicant, that one scored as unknown to the bureau
    pd.testing.assert_frame_equal(gated, absent)
    assert gated.loc[other, "known_bureau"] == 0
    # and the set the bureau answered with (its PSI setup) does not hold them
    routed = {v for body in payloads for v in payload_values(body) if isinstance(v, bytes)}
    kept = list((runs["tmp"] / "psi" / "bureau" / "psi").glob("*.bin"))
    sent = [blob for blob in (p.read_bytes() for p in kept) if blob[KEY_BYTES:] in routed]
    assert len(sent) == 1
    key, setup = sent[0][:KEY_BYTES], sent[0][KEY_BYTES:]
    client = psi.client.CreateWithNewKey(True)
    response = psi.server.CreateFromKey(key, True).ProcessRequest(
        client.CreateRequest([runs["gone"], other]))
    server_setup = psi.ServerSetup()
    server_setup.ParseFromString(setup)
    assert set(np.asarray(client.GetIntersection(server_setup, response)).tolist()) == {0}


def test_the_regulators_record_matches_results_json(runs, tmp_path):
    run_dir, results = runs["withdrawn"]
    logs = [*sorted((run_dir / "parties").glob("*/audit.jsonl")),
            run_dir / "server" / "audit.jsonl"]
    # since the run, one more customer whose row trained it withdrew at the bureau
    now = tmp_path / "bureau-consent-now.csv"
    now.write_text((runs["tmp"] / "bureau-consent.csv").read_text() + f"{runs['stays']},"
                   f"credit_training,withdrawn,{datetime.now(UTC).isoformat()},w-later\n")
    out = tmp_path / "usage.json"
    assert usage_report([*map(str, logs), "--json", str(out), "--markdown",
                         str(tmp_path / "usage.md"), "--consent", f"bureau={now}"]) == 0
    report = json.loads(out.read_text())
    records = {r["party"]: r for r in report["records"]}
    assert set(records) == {"lender", "bureau", "social"}
    assert all(r["verified"] and r["anchored"]["matches"] for r in records.values())
    counted = results["dataset"]["consent"]["parties"]["bureau"]
    logged = records["bureau"]["consent"]["credit_training"]
    assert {k: logged[k] for k in ("rows_held", "rows_used", "consented", "withdrawn")} == {
        k: counted[k] for k in ("rows_held", "rows_used", "consented", "withdrawn")}
    assert records["lender"]["consent"] is None
    assert records["bureau"]["messages"]["train.embed"] >= 2
    # the bundle that customer's row trained, for its owner to retrain
    assert records["bureau"]["retrain"] == {
        "withdrawn_since_training": 1, "bundle": str(run_dir / "parties" / "bureau" / "model")}
    assert (run_dir / results["model"]["bundles"]["bureau"]).is_dir()
    assert (run_dir / results["model"]["bundles"]["bureau"]).resolve() == (
        run_dir / "parties" / "bureau" / "model").resolve()
    page = (tmp_path / "usage.md").read_text()
    assert "**Retrain**: 1 customers whose rows trained this run's model" in page
    lender = page[page.index("## lender, run"):]
    assert "- **Data subjects**: no consent records: all rows used." in lender


@pytest.mark.parametrize(("line", "message"), [
    ("{id},credit_marketing,granted,2026-01-01,r1",
     r"bad-consent.csv: column 'purpose', line 2: unknown purpose \('credit_marketing'\)"),
    ("{id},credit_training,granted,2999-01-01,r1",
     r"bad-consent.csv: column 'time', line 2: dated in the future"),
    ("{bare},credit_training,granted,2026-01-01,r1",  # the bureau's IDs without their letter
     r"bad-consent.csv: column 'customer_id': none of its IDs is in .*the consent file must "
     r"use the party's own IDs"),
], ids=["unknown purpose", "dated in the future", "IDs in another format"])
def test_a_bad_consent_file_is_named_before_any_node_starts(runs, line, message):
    bad = runs["tmp"] / "bad-consent.csv"
    gone = runs["gone"]
    bad.write_text("customer_id,purpose,status,time,receipt_id\n"
                   + line.format(id=gone, bare=gone.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) + "\n")
    settings = to_settings(compose_config(BASE + runs["keys"] + [f"+data.consent.bureau={bad}"]))
    run_dir = runs["tmp"] / "bad"
    with pytest.raises(DataError, match=message):
        run_vertical(settings, run_dir)
    assert not run_dir.exists()  # nothing written: no run directory, no node's log


def test_monitoring_leaves_out_customers_without_monitoring_consent(runs):
    # Prepare: at each party one customer withdrew `monitoring`; the files grant no scoring
    files = {party: _consent_file(runs["tmp"] / f"{party}-monitoring.csv", ids, "monitoring",
                                  ids[0])
             for party, ids in (("bureau", runs["bureau_ids"]), ("lender", runs["lender_ids"]))}
    # Execute
    _, report = monitor_run(runs["withdrawn"][0], [
        f"data.consent.bureau={files['bureau']}", f"data.consent.lender={files['lender']}",
        f"monitor.out={runs['tmp'] / 'monitored'}"])
    # Assert: each party's indices count its consenting customers only, and the model's
    # scores too (under `credit_scoring` the lender, without such records, would score nobody)
    rows = {party: {c["rows"] for c in report["parties"][party]["columns"].values()}
            for party in ("bureau", "lender")}
    assert rows == {"bureau": {len(runs["bureau_ids"]) - 1},
                    "lender": {len(runs["lender_ids"]) - 1}}
    assert report["period"]["applicants"] == len(runs["lender_ids"]) - 1
    # and monitor.json counts them as results.json does, for the purpose `monitoring`
    assert report["consent"]["purpose"] == "monitoring"
    assert report["consent"] == report["series"][-1]["consent"]
    for party in ("bureau", "lender"):
        counts = report["consent"]["parties"][party]
        assert (counts["records"], counts["rows_held"] - counts["rows_used"]) == (True, 1)
    assert report["consent"]["parties"]["social"] == {"records": False}


def test_rerating_applies_scoring_consent_in_both_periods(runs):
    # Prepare: the run trained without consent records; the bureau's file grants scoring to
    # every customer but one
    run_dir, gone = runs["absent"][0], runs["gone"]
    consent = _consent_file(runs["tmp"] / "bureau-rerate.csv", runs["bureau_ids"],
                            "credit_scoring", gone)
    # Execute
    plain, _ = rerate_run(run_dir, 2, ["explain.enabled=false",  # scores only: faster
                                       f"rerate.out={runs['tmp'] / 'rerated'}"])
    gated, _ = rerate_run(run_dir, 2, ["explain.enabled=false", f"data.consent.bureau={consent}",
                                       f"rerate.out={runs['tmp'] / 'rerated-consent'}"])
    # Assert: every other borrower is rerated exactly as without the file, in both periods;
    # the one who withdrew is scored without the bureau in both (unknown to it)
    columns = ["points_previous", "grade_previous", "points", "grade", "change", "reasons"]
    a = pd.read_csv(plain / "rerating.csv", dtype={"id": str}).set_index("id")[columns]
    b = pd.read_csv(gated / "rerating.csv", dtype={"id": str}).set_index("id")[columns]
    others = a.index != gone
    pd.testing.assert_frame_equal(a[others], b.loc[a.index[others]])
    assert a.loc[gone, "points_previous"] != b.loc[gone, "points_previous"]
    assert a.loc[gone, "points"] != b.loc[gone, "points"]
    # rerate.json counts each period's scoring consent as scoring.json does
    report = json.loads((gated / "rerate.json").read_text())
    for period in ("previous", "current"):
        bureau = report["consent"][period]["parties"]["bureau"]
        assert report["consent"][period]["purpose"] == "credit_scoring"
        assert bureau["rows_held"] - bureau["rows_used"] == 1
    assert json.loads((plain / "rerate.json").read_text())["consent"] is None
