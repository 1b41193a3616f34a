"""Issue 21: shared blacklists looked up without revealing them, and fraud measured by scheme.

* The lender learns exactly its listed applicants (up to the stated false-positive rate); the
  holder learns how many IDs were asked; the server routes blinded values and counts only.
* A holder's query caps (its one ledger per lender, :mod:`federation.query_ledger`) cap the IDs
  one lender asks a day and a month; past one the holder refuses and answers nothing.
* ``cardinality`` lookups are withdrawn (issue 30, finding 8): a holder answers no count,
  not of one ID, not of two requests that differ in one; refused, not charged.
* Bad input: a list file without the ID column, an empty list, a holder named twice, a rule
  that is not one of the three: clear errors naming the key or the file, nothing written.
* On synthetic data, vertical fraud detection beats the lender alone on average precision and
  the lists raise it further (slow: 20,000 customers, three runs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from credit_data.blacklists import holder_lists, read_list, synthetic_lists
from credit_data.errors import AlignmentError, ConfigError, CreditFLError, DataError
from credit_data.synthetic import generate
from experiments.config import to_settings
from federation.blacklist import ListHolder, listed, lookup_request, request_size
from federation.query_ledger import Purpose, QueryCaps, QueryLedger, QueryLimit
from tests.conftest import compose_config, run_experiment
from tests.routed import payload_values, swap

TOKEN = re.compile(rb"[A-Za-z0-9_.-]{4,}")
SMALL = ["federation=vertical", "privacy=off", "data.n_customers=3000", "train.epochs=1"]
HOLDERS = "blacklists.holders=[consortium,telco]"


def _ids(n: int, offset: int = 0) -> list[str]:
    return [f"C{10_000_000 + offset + k}" for k in range(n)]


# --- the lookup itself ------------------------------------------------------------------------
@pytest.mark.unit
def test_the_lender_learns_exactly_its_listed_applicants(tmp_path):
    # Prepare: 5,000 applicants, a list of 20,000 IDs that names 300 of them
    rng = np.random.default_rng(0)
    applicants = _ids(5_000)
    on_list = set(rng.choice(applicants, 300, replace=False))
    the_list = sorted(on_list) + _ids(19_700, offset=1_000_000)
    holder = ListHolder("consortium", the_list, cache_dir=tmp_path / "cache",
                        ledger_dir=tmp_path / "ledger", caps=QueryCaps.of_run(10_000))
    # Execute
    request, key = lookup_request(applicants, reveal=True)
    setup, response = holder.answer(request, asked=len(applicants), lender="lender")
    hits = listed(key, len(applicants), setup, response, reveal=True)
    # Assert: exactly the listed ones (false-positive rate 1e-12 per applicant)
    assert {a for a, h in zip(applicants, hits, strict=True) if h} == on_list
    # what the holder saw and sent holds no ID, and its ledger only counts
    for blob in (request, setup, response):
        assert not {t.decode() for t in TOKEN.findall(blob)} & (set(applicants) | set(the_list))
    assert request_size(request) == 5_000
    book = json.loads((tmp_path / "ledger" / "queries.json").read_text())
    assert list(book) == ["lender"] and len(book["lender"]) == 2  # the day and the month
    assert all(counts == {"scoring": 5_000} for counts in book["lender"].values())
    # the holder's blinded list is cached, owner-only, and reused
    (cached,) = (tmp_path / "cache" / "consortium" / "psi").iterdir()
    assert cached.stat().st_mode & 0o777 == 0o600
    again = ListHolder("consortium", the_list, cache_dir=tmp_path / "cache")
    again.answer(lookup_request(applicants[:10], reveal=True)[0], asked=10, lender="lender")
    assert again.setup_cached


@pytest.mark.unit
def test_one_id_counts_and_differenced_counts_read_no_listed_id(tmp_path):
    """Issue 30, finding 8: a lender that follows the protocol asked 1-ID cardinality requests
    and recovered three listed IDs. The mode is withdrawn: a holder answers no count, for 1 ID
    or for 1,000 (so two large requests differing in one ID difference to nothing), and a
    refused request is not charged."""
    # Prepare: three listed applicants among 1,000, and a cardinality holder as it was
    applicants, the_list = _ids(1_000), _ids(3, offset=500) + _ids(500, offset=5_000)
    listed_ids = set(_ids(3, offset=500))
    with pytest.raises(ConfigError, match=r"consortium: blacklists.mode=cardinality "
                                          r"\(--list-mode\): cardinality lookups are withdrawn"):
        ListHolder("consortium", the_list, reveal=False)
    holder = ListHolder("consortium", the_list, ledger_dir=tmp_path,
                        caps=QueryCaps.of_run(10_000))
    # Execute: the attack, one ID a request around the listed ones, then a differencing pair
    recovered, refusals = set(), 0
    for target in _ids(10, offset=495):
        request, key = lookup_request([target], reveal=False)
        try:
            if listed(key, 1, *holder.answer(request, asked=1, lender="lender"), reveal=False):
                recovered.add(target)
        except AlignmentError as exc:
            assert "refuses a request for how many IDs are listed (blacklists.mode=" \
                   "cardinality): cardinality lookups are withdrawn" in str(exc)
            refusals += 1
    counts = []
    for batch in (applicants[:999], applicants[:499] + applicants[500:]):  # differ in C..500
        try:
            request, key = lookup_request(batch, reveal=False)
            counts.append(listed(key, 999, *holder.answer(request, asked=999, lender="lender"),
                                 reveal=False))
        except AlignmentError:
            counts.append(None)
    # Assert: before, 3 of 3 listed IDs were recovered and the pair's counts differed by one
    assert recovered == set() and refusals == 10 and listed_ids <= set(_ids(10, offset=495))
    assert counts == [None, None]
    assert holder.ledger.spent("lender")["month"] == {}  # refused, not charged
    assert not (tmp_path / "queries.json").exists()
    # a lookup still answers (and is charged)
    request, key = lookup_request(applicants, reveal=True)
    hits = listed(key, 1_000, *holder.answer(request, asked=1_000, lender="lender"), reveal=True)
    assert {a for a, h in zip(applicants, hits, strict=True) if h} == listed_ids
    assert holder.ledger.spent("lender")["month"] == {"scoring": 1_000}


@pytest.mark.unit
def test_the_cardinality_mode_is_refused_by_the_run_and_by_a_holders_node(tmp_path):
    from deployment.client_app import NodeConfig

    _fails(["blacklists.holders=[consortium]", "blacklists.mode=cardinality"],
           tmp_path / "run", ConfigError,
           r"blacklists.mode=cardinality: cardinality lookups are withdrawn")
    base = {"party": "consortium", "data-path": "list.csv", "state-dir": "state",
            "max-epsilon": 3.0}
    assert NodeConfig.from_context(base | {"list-mode": "lookup"}).list_mode == "lookup"
    with pytest.raises(ConfigError, match=r"'list-mode' cardinality \(--list-mode\): "
                                          r"cardinality lookups are withdrawn"):
        NodeConfig.from_context(base | {"list-mode": "cardinality"})


@pytest.mark.unit
def test_the_query_caps_hold_per_lender_per_day_and_month_and_say_so(tmp_path):
    # a cap of 1,500 IDs of applications a month, 1,000 a day; training counts apart
    import datetime as dt

    caps = QueryCaps(per_day=1_000, per_month=1_500, training_per_month=400,
                     day_flag="--max-queries-per-day", month_flag="--max-queries",
                     training_flag="--lender-training-rows")
    ledger = QueryLedger(tmp_path, "consortium", caps)
    day = dt.datetime(2026, 12, 5, 9, tzinfo=dt.UTC)
    assert ledger.charge("lender", 1_000, Purpose.scoring, day).day_total == 1_000
    with pytest.raises(QueryLimit, match=r"consortium refuses: lender asked 1000 IDs of "
                                         r"applications on 2026-12-05 and now asks 1 more "
                                         r"\(service\), past this node's cap of 1000 IDs a day "
                                         r"\(--max-queries-per-day\); nothing was answered"):
        ledger.charge("lender", 1, Purpose.service, day)
    later = day + dt.timedelta(days=1)
    assert ledger.charge("lender", 500, Purpose.service, later).month_total == 1_500
    with pytest.raises(QueryLimit, match=r"lender asked 1500 IDs of applications in 2026-12 "
                                         r"and now asks 1 more .*cap of 1500 IDs a month "
                                         r"\(--max-queries\)"):
        ledger.charge("lender", 1, Purpose.scoring, later + dt.timedelta(days=1))
    # training has its own monthly cap; the applications' caps do not move
    assert ledger.charge("lender", 400, Purpose.training, later).month_total == 400
    with pytest.raises(QueryLimit, match=r"asked 400 IDs for training in 2026-12 .*"
                                         r"\(--lender-training-rows\)"):
        ledger.charge("lender", 1, Purpose.training, later)
    assert ledger.charge("other-lender", 600, Purpose.scoring, day).day_total == 600
    assert ledger.charge("lender", 600, Purpose.scoring,
                         dt.datetime(2027, 1, 1, tzinfo=dt.UTC)).month_total == 600
    # kept on the node's disk: a new process sees the same counts (refusals uncounted)
    assert QueryLedger(tmp_path, "consortium", caps).spent("lender", later)["month"] == {
        "scoring": 1_000, "service": 500, "training": 400}
    # an announced size that the request contradicts is refused
    holder = ListHolder("consortium", _ids(100), caps=QueryCaps.of_run(1_500))
    with pytest.raises(AlignmentError, match="holds 10 IDs, not the 5 announced"):
        holder.answer(lookup_request(_ids(10), reveal=True)[0], asked=5, lender="lender")


@pytest.mark.unit
def test_synthetic_lists_cover_fraud_with_errors_and_outsiders():
    population = generate(20_000, seed=0)
    lists = synthetic_lists(population, ("consortium", "telco"), seed=0)
    truth, labels = population.truth, population.tables["lender"].labels
    for holder, coverage in (("consortium", 0.45), ("telco", 0.30)):
        on = truth.index.isin(list(lists[holder].ids))
        fraudulent = (truth["fraud_type"] != "").to_numpy()
        assert abs(on[fraudulent].mean() - coverage) < 0.06
        assert on[truth["fraud_type"].to_numpy() == "stolen"].mean() > 0.15  # victims listed
        assert 0.003 < on[~fraudulent].mean() < 0.03  # charged off, or listed in error
        assert 0.1 < labels["fraud"][on].mean() < 0.6  # a hit is evidence, not proof
        assert len(lists[holder].ids) > 5 * on.sum()  # people who never applied here
    assert synthetic_lists(population, ("consortium",), seed=0)["consortium"] == \
        lists["consortium"]


# --- bad input --------------------------------------------------------------------------------
def _fails(overrides: list[str], run_dir: Path, error: type[CreditFLError], match: str) -> None:
    with pytest.raises(error, match=match):
        run_experiment(SMALL + overrides, run_dir)
    assert not run_dir.exists()  # refused before anything is written: not even the run directory


@pytest.mark.unit
def test_a_list_file_without_the_id_column_is_named(tmp_path):
    bad = tmp_path / "consortium.csv"
    bad.write_text("account\nC1\n")
    with pytest.raises(DataError, match=r"consortium.csv: ID column 'customer_id' is missing "
                                        r"\(data.blacklists.consortium\)"):
        read_list(bad, "customer_id", "consortium")
    _fails(["blacklists.holders=[consortium]", f"+data.blacklists.consortium={bad}"],
           tmp_path / "run", DataError, "ID column 'customer_id' is missing")


@pytest.mark.unit
def test_an_empty_list_is_named(tmp_path):
    empty = tmp_path / "telco.csv"
    empty.write_text("customer_id\n")
    _fails(["blacklists.holders=[telco]", f"+data.blacklists.telco={empty}"],
           tmp_path / "run", DataError, r"telco.csv: the list of holder 'telco' is empty")


@pytest.mark.unit
def test_a_holder_named_twice_or_like_a_party_is_refused(tmp_path):
    _fails(["blacklists.holders=[consortium,consortium]"], tmp_path / "a", ConfigError,
           "blacklists.holders names 'consortium' twice")
    _fails(["blacklists.holders=[bureau]"], tmp_path / "b", ConfigError,
           "'bureau' is also a party")
    with pytest.raises(ConfigError, match=r"data.blacklists names \['telco'\]"):
        holder_lists(("consortium",), {"telco": "x.csv"}, "customer_id", None, 0)


@pytest.mark.unit
def test_a_rule_that_is_not_one_of_the_three_is_refused():
    # refused by the structured config while composing, before any run exists
    with pytest.raises(ConfigCompositionException, match=r"blacklists.on_hit=flag") as info:
        compose_config(SMALL + ["blacklists.on_hit=flag"])
    said = str(info.value.__cause__)
    assert "blacklists.on_hit" in said
    assert "expected one of [feature, review, decline]" in said


# --- a run with holders -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def with_lists(tmp_path_factory):
    """A small vertical run with two holders, every routed message kept."""
    from credit_fl.results import write_run
    from credit_fl.vertical import run_vertical

    run_dir = tmp_path_factory.mktemp("with-lists")
    payloads: list[tuple[str, int, object]] = []
    cfg = compose_config(SMALL + [HOLDERS, "verbose=false"])
    outcome = run_vertical(to_settings(cfg), run_dir,
                           recorder=lambda way, node, body: payloads.append((way, node, body)))
    write_run(run_dir, outcome, 0.0, OmegaConf.to_container(cfg, resolve=True))
    return run_dir, json.loads((run_dir / "results.json").read_text()), payloads


def test_a_run_with_holders_makes_the_hits_the_lenders_inputs(with_lists):
    run_dir, results, _ = with_lists
    b = results["federation"]["blacklists"]
    population = generate(3_000, seed=0)
    lists = synthetic_lists(population, ("consortium", "telco"), seed=0)
    applicants = population.tables["lender"].frame.index
    for holder in ("consortium", "telco"):
        truly = int(applicants.isin(list(lists[holder].ids)).sum())
        assert b["holders"][holder] == {"list_size": len(lists[holder].ids), "asked": 3_000,
                                        "listed": truly, "max_queries": 1_000_000,
                                        "mode": "lookup"}
    manifest = json.loads((run_dir / "parties" / "lender" / "model" / "model.json").read_text())
    assert manifest["blacklists"] == ["consortium", "telco"]
    assert manifest["columns"]["features"][-3:] == ["on_list_consortium", "on_list_telco",
                                                    "blacklist_hits"]
    report = (run_dir / "report.md").read_text()
    assert "## Shared blacklists" in report and "| consortium |" in report
    # a holder's node holds its list only: no bundle, no scores; its ledger counts
    holder_dir = run_dir / "parties" / "consortium"
    assert not (holder_dir / "model").exists() and not (holder_dir / "scores.npz").exists()
    assert json.loads((holder_dir / "queries.json").read_text())["lender"]
    lines = [json.loads(x) for x in (holder_dir / "audit.jsonl").read_text().splitlines()]
    lookup = [x for x in lines if x["event"] == "query.list_answer"]
    assert len(lookup) == 1 and lookup[0]["node"] == {"asked": 3_000, "lookup": "training"}
    assert set(lookup[0]["sent"]) == {"setup", "response", "signature"}
    # and the lender's side of it in the lender's own log: counts, never an ID
    lender_log = (run_dir / "parties" / "lender" / "audit.jsonl").read_text().splitlines()
    (mine,) = [json.loads(x)["node"] for x in lender_log
               if json.loads(x)["event"] == "query.psi_intersect"]
    assert mine == {"lookup": "training", "asked": 3_000,
                    "consortium.listed": b["holders"]["consortium"]["listed"],
                    "telco.listed": b["holders"]["telco"]["listed"]}


def test_the_server_routes_only_blinded_values_and_counts(with_lists):
    _, _, payloads = with_lists
    population = generate(3_000, seed=0)
    lists = synthetic_lists(population, ("consortium", "telco"), seed=0)
    ids = set(population.tables["lender"].frame.index) | set().union(
        *(set(v.ids) for v in lists.values()))
    routed = 0
    for _, _, body in payloads:
        for value in payload_values(body):
            if isinstance(value, bytes):
                assert not {t.decode() for t in TOKEN.findall(value)} & ids
                routed += len(value)
            elif isinstance(value, str):
                assert value not in ids
    assert routed > 100_000  # the blinded request, sets and answers went through


@pytest.mark.unit
def test_a_lender_past_max_queries_is_refused_and_the_run_says_so(tmp_path):
    outcome, _, _ = _signed_run(tmp_path, extra=["blacklists.max_queries=300"])
    # the holder's lookup and the bureau's alignment both answer the lender's 400 IDs: both
    # charge their ledger, and either refuses first (nothing answered, nothing charged)
    assert re.search(r"(consortium|bureau) refused: \1 refuses: lender asked 0 IDs for "
                     r"training in \d{4}-\d\d and now asks 400 more \(training\), past this "
                     r"node's cap of 300 IDs a month \(blacklists.max_queries\)",
                     str(outcome.error)), outcome.error
    for node in ("consortium", "bureau"):
        assert not (tmp_path / "run-1" / "parties" / node / "queries.json").exists()
    assert not (tmp_path / "run-1" / "parties" / "lender" / "model").exists()


# --- fraud detection, measured as fraud teams measure it --------------------------------------
FRAUD = ["data.n_customers=20000", "train.epochs=6", "data.label=fraud"]


@pytest.mark.slow
def test_parties_and_then_lists_raise_average_precision(tmp_path):
    runs = {name: run_experiment(FRAUD + overrides, tmp_path / name) for name, overrides in {
        "lender": ["federation=local"],
        "vertical": ["federation=vertical", "privacy=off"],
        "lists": ["federation=vertical", "privacy=off", HOLDERS]}.items()}
    ap = {k: r["metrics"]["test"]["rare_label"]["average_precision"] for k, r in runs.items()}
    print(ap)
    # measured (seeds 0, 1, 2): lender 0.171/0.201/0.100, vertical 0.553/0.772/0.545,
    # with the lists 0.601/0.801/0.607: the lists add 0.030 to 0.062
    assert ap["vertical"] > ap["lender"] + 0.2
    assert ap["lists"] > ap["vertical"] + 0.02
    kinds = runs["lists"]["metrics"]["test"]["rare_label"]["by_fraud_type"]
    assert set(kinds) == {"synthetic", "stolen"}
    # which party catches which scheme: stolen identities are the social platform's catch
    stolen = kinds["stolen"]
    assert stolen["without"]["social"] < stolen["caught_in_riskiest_5"] - 0.3
    report = (tmp_path / "lists" / "report.md").read_text()
    assert "| stolen |" in report and "without social" in report
    frame = pd.read_csv(tmp_path / "lists" / "predictions.csv")
    assert len(frame) == runs["lists"]["dataset"]["rows"]["test"]


# --- scoring asks the holders again -----------------------------------------------------------
def test_scoring_asks_the_holders_again_and_reproduces_the_run(with_lists, tmp_path):
    from experiments.score import score_run

    run_dir, results, _ = with_lists
    out, scoring = score_run(run_dir, ["scoring.rows=test", f"scoring.out={tmp_path / 'a'}"])
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    scores = pd.read_csv(out / "scores.csv", dtype={"id": str})
    both = predictions.merge(scores, on="id")
    assert len(both) == len(predictions)
    assert float((both["score"] - both["probability"]).abs().max()) <= 1e-6
    assert {"on_list_consortium", "on_list_telco", "decision"} <= set(scores.columns)
    assert set(scores["decision"]) == {"score"}  # blacklists.on_hit=feature: the score decides
    population = generate(3_000, seed=0)
    the_list = set(synthetic_lists(population, ("consortium",), seed=0)["consortium"].ids)
    assert scores["on_list_consortium"].tolist() == [int(i in the_list) for i in scores["id"]]
    assert scoring["blacklists"]["consortium"] == {
        "asked": len(scores), "listed": int(scores["on_list_consortium"].sum()),
        "max_queries": 1_000_000}
    assert "## Shared blacklists" in (out / "report.md").read_text()


def test_a_holders_list_leaves_out_who_did_not_consent_to_fraud_checks(with_lists, tmp_path):
    # issue 34: a holder applies its consent records (purpose fraud_check) to its list, so a
    # listed applicant whose record withdrew it is not listed for the lender
    from experiments.score import score_run

    run_dir, _, _ = with_lists
    population = generate(3_000, seed=0)
    the_list = synthetic_lists(population, ("consortium",), seed=0)["consortium"].ids
    test = set(pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})["id"])
    gone = sorted(set(the_list) & test)[0]
    consent = tmp_path / "consortium-consent.csv"
    consent.write_text("customer_id,purpose,status,time,receipt_id\n" + "".join(
        f"{i},fraud_check,granted,2026-01-01T00:00:00Z,g-{i}\n" for i in the_list)
        + f"{gone},fraud_check,withdrawn,2026-06-01T00:00:00Z,w-{gone}\n")
    out, scoring = score_run(run_dir, ["engine=in_process", "explain.enabled=false",
                                       f"data.consent.consortium={consent}",
                                       f"scoring.out={tmp_path / 'gated'}"])
    scores = pd.read_csv(out / "scores.csv", dtype={"id": str})
    kept = set(the_list) - {gone}
    assert scores["on_list_consortium"].tolist() == [int(i in kept) for i in scores["id"]]
    assert scoring["blacklists"]["consortium"]["listed"] == len(kept & set(scores["id"]))
    assert gone in set(scores["id"])  # a test applicant, listed: the lookup would hit it
    lines = [json.loads(x) for x in (out / "parties" / "consortium" / "audit.jsonl"
                                     ).read_text().splitlines()]
    assert [(x["purpose"], x["rows_held"], x["withdrawn"]) for x in lines
            if x["event"] == "consent"] == [("fraud_check", len(the_list), 1)]


def test_rerating_watches_exactly_the_listed_borrowers(with_lists, tmp_path):
    # issue 33: a listed identity is a watch-list trigger; the holders are asked at re-rating
    from experiments.rerate import rerate_run

    run_dir, _, _ = with_lists
    only_lists = ["explain.enabled=false", "rerate.delinquency=false",
                  "rerate.drop_points=1e9", "rerate.grade_fall=99",
                  f"federation.psi_cache={tmp_path / 'cache'}"]  # blinded once, for both
    out, report = rerate_run(run_dir, 2, [f"rerate.out={tmp_path / 'r'}", *only_lists])
    table = pd.read_csv(out / "rerating.csv", dtype={"id": str}, keep_default_na=False)
    lists = synthetic_lists(generate(3_000, seed=0), ("consortium", "telco"), seed=0)
    on_any = table["id"].isin(set(lists["consortium"].ids) | set(lists["telco"].ids))
    assert len(table) == 3_000 and 0 < int(on_any.sum()) < 3_000
    assert table["reasons"].tolist() == ["listed" if x else "" for x in on_any]
    assert report["watch_list"]["by_reason"]["listed"] == int(on_any.sum())
    assert table["on_list_consortium"].tolist() == [
        int(i in set(lists["consortium"].ids)) for i in table["id"]]


def test_a_scoring_service_asks_the_holders_each_request_once(with_lists, tmp_path):
    # the service's path (four rounds a request): the lookup rides beside the parties'
    # evaluations; each signed request is answered once, however many requests the run serves
    from credit_data.errors import AlignmentError
    from fl_client.list_lookup import holder_answer
    from tests.served import start_service

    run_dir, results, _ = with_lists
    service = start_service(run_dir, results, tmp_path)
    assert set(service.holders) == {"consortium", "telco"}
    _, scores, counts = service.request({"id": "first", "rows": "test"})
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    both = predictions.merge(scores, on="id")
    assert len(both) == len(predictions) == len(scores)
    assert float((both["score"] - both["probability"]).abs().max()) <= 1e-6
    the_list = set(synthetic_lists(generate(3_000, seed=0), ("consortium",),
                                   seed=0)["consortium"].ids)
    assert scores["on_list_consortium"].tolist() == [int(i in the_list) for i in scores["id"]]
    assert counts["listed"]["consortium"] == int(scores["on_list_consortium"].sum()) > 0
    service.request({"id": "second", "rows": "test"})  # a second request: answered too
    settings, ids = service.holders["consortium"]
    request, key = service.lookups[0]  # the server replaying the first lookup
    with pytest.raises(AlignmentError, match="a replayed request is refused"):
        holder_answer(settings, ids, request, len(scores), key,
                      service.holder_keys["consortium"], purpose=Purpose.service,
                      per_request=True)
    ledger = json.loads((tmp_path / "consortium" / "consortium" / "queries.json").read_text())
    assert [c["service"] for c in ledger["lender"].values()] == [2 * len(scores)] * 2


@pytest.mark.unit
def test_the_rule_on_a_hit_overrides_the_score_of_listed_applicants_only():
    from federation.settings import HitRule
    from fl_client.list_lookup import decisions

    hits = {"consortium": np.array([True, False, False]), "telco": np.array([False, False, True])}
    assert decisions(hits, 3, HitRule.feature).tolist() == ["score"] * 3
    assert decisions(hits, 3, HitRule.review).tolist() == ["review", "score", "review"]
    assert decisions(hits, 3, HitRule.decline).tolist() == ["decline", "score", "decline"]
    assert decisions({}, 2, HitRule.decline).tolist() == ["score", "score"]


@pytest.mark.slow
def test_scoring_past_max_queries_is_refused_and_writes_nothing(with_lists, tmp_path):
    """Scoring's side of the cap (an engine run); CI checks the cap on the in-process grid
    (test_a_lender_past_max_queries_...) and the ledger itself (test_the_query_caps_hold_...)."""
    from experiments.score import score_run

    run_dir, _, _ = with_lists
    out = tmp_path / "refused"
    with pytest.raises(CreditFLError, match=r"(consortium|telco|bureau|social) refuses: lender "
                                            r"asked 0 IDs .* cap of 100 IDs a day "
                                            r"\(blacklists.max_queries\)"):
        score_run(run_dir, ["scoring.rows=test", "blacklists.max_queries=100",
                            f"scoring.out={out}"])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".refused.")]


# --- a coordinator that cheats ----------------------------------------------------------------
SIGNED = ["federation=vertical", "privacy=off", "data.n_customers=400", "train.epochs=1",
          "federation.parties=[lender,bureau]", "blacklists.holders=[consortium]",
          "verbose=false"]
NODES = ("lender", "bureau", "consortium")


def _signed_run(tmp_path, tamper=None, run="run-1", extra=()):
    """A run on the in-process grid, every node signing with its own key (as deployed)."""
    import dataclasses

    from credit_fl.vertical import VerticalSimulationSource, party_settings
    from experiments.deploy import federation as deploy
    from federation.alignment import ChannelKeys
    from federation.credentials import make_node_key
    from fl_client.vertical_app import make_vertical_client_app
    from fl_server.app_factory import make_vertical_server_app
    from fl_server.settings import vertical_server_settings
    from fl_server.vertical_rounds import VerticalOutcome
    from tests.fake_grid import InProcessGrid, run_server_app

    settings, _ = deploy.compose_settings(SIGNED + list(extra))
    peers = tmp_path / "peer-keys"
    peers.mkdir(exist_ok=True)
    for name in NODES:
        if not (tmp_path / "keys" / name).exists():
            public = make_node_key(tmp_path / "keys" / name)
            (peers / f"{name}.pub").write_bytes(public.read_bytes())
    clients = party_settings(settings, ("lender", "bureau"), tmp_path / run / "parties")
    assert tuple(clients) == NODES
    clients = {p: dataclasses.replace(c, channel_keys=ChannelKeys(
        str(tmp_path / "keys" / p), str(peers), run)) for p, c in clients.items()}
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))

    def through_the_server(message, context):
        if tamper is not None:
            tamper(message)
        return app(message, context)

    grid = InProcessGrid(through_the_server, len(NODES))
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(
        vertical_server_settings(settings, ("lender", "bureau"), tmp_path / run), outcome), grid)
    return outcome, app, grid


@pytest.mark.unit
def test_a_holder_answers_only_the_lenders_signed_request_and_signs_its_answer(tmp_path):
    from federation.protocol import VerticalMessage

    outcome, _, _ = _signed_run(tmp_path)
    assert outcome.error is None, outcome.error
    assert outcome.blacklists["consortium"]["asked"] == 400
    # the coordinator asks the holder about IDs of its choosing, with the lender's signed key
    guesses, _ = lookup_request([f"C{10_000_000 + k}" for k in range(300)], reveal=True)
    probe, _, _ = _signed_run(tmp_path, swap(VerticalMessage.LIST_ANSWER, "request",
                                              lambda _: guesses), run="run-2")
    assert "consortium refused" in str(probe.error)
    assert "lender's channel key is not signed" in str(probe.error)
    # or answers in the holder's place (an altered answer: every fraudster off the list)
    forged, _, _ = _signed_run(tmp_path, swap(
        VerticalMessage.PSI_INTERSECT, "consortium.response",
        lambda r: r[:-1] + bytes([r[-1] ^ 1])), run="run-3")
    assert "consortium's answer does not match what it signed" in str(forged.error)


@pytest.mark.unit
def test_a_holder_refuses_a_partys_messages_and_a_second_lookup(tmp_path):
    from flwr.app import RecordDict

    from federation.protocol import CONFIG, VerticalMessage
    from tests.fake_grid import serving

    outcome, app, grid = _signed_run(tmp_path)
    assert outcome.error is None, outcome.error
    holder, bureau = 100 + NODES.index("consortium"), 100 + NODES.index("bureau")

    def send(node: int, kind, **config) -> str:
        with serving():
            message = grid.create_message(RecordDict({CONFIG: ConfigRecord(config)}),
                                          str(kind), node, "")
            (reply,) = grid.send_and_receive([message], timeout=30)
        return str(reply.content[CONFIG]["refused"])

    for kind in (VerticalMessage.PSI_SETUP, VerticalMessage.PSI_ANSWER,
                 VerticalMessage.PSI_RECEIVE, VerticalMessage.EMBED):
        assert "holds a blacklist and answers lookups only" in send(holder, kind, lender_rows=10)
    # a party's run ended with its last message: a lookup sent after it gets an error, the
    # party's noise key being gone (a party refuses a lookup within a run too: its table is not
    # a list)
    with serving():
        message = grid.create_message(RecordDict({CONFIG: ConfigRecord({"asked": 1})}),
                                      str(VerticalMessage.LIST_ANSWER), bureau, "")
        (reply,) = grid.send_and_receive([message], timeout=30)
    assert reply.has_error() and "key was removed" in reply.error.reason
    from types import SimpleNamespace

    from fl_client.list_lookup import holder_refusal

    bureau_settings = SimpleNamespace(party="bureau", blacklists=SimpleNamespace(
        holders=("consortium",)))
    assert "not a blacklist holder" in str(holder_refusal(
        bureau_settings, str(VerticalMessage.LIST_ANSWER)))  # type: ignore[arg-type]
    # the holder answered this run's lookup once; a second is refused
    request, _ = lookup_request(["a"], reveal=True)
    assert "answered already" in send(holder, VerticalMessage.LIST_ANSWER, request=request,
                                      key=b"k" * 32, asked=1)
