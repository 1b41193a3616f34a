"""Issue 20, the latency target: a scoring service answers a request in four message rounds.

The nodes' side of the protocol (:mod:`fl_client.scoring_service`) is driven here directly, with
the bytes a server would route; the deployed service (one Flower run, many requests) is in
``tests/test_deploy.py``. What each adversary sees:

* the server: sealed bytes (no ID, no embedding), and it cannot ask a party to evaluate points
  of its own, nor replay the lender's request;
* the lender: the embeddings of the applicants it asks about, nothing of a party's other
  customers (no table of them: issue 30), and no more IDs a day or a month than a party's
  query caps;
* a party: how many applicants a request holds, and which of its own customers are among them
  (the rows it embeds), never the others.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from credit_data.errors import AlignmentError, DataError
from credit_data.synthetic import generate
from federation.query_ledger import QueryLimit
from federation.service_table import (
    POINT,
    TAG,
    Blinded,
    TagSet,
    evaluate,
    hash_to_group,
    new_key,
    party_tags,
    rows_of,
    seal,
    table_context,
    unseal,
)
from fl_client.scoring_service import INBOX, REQUESTS, ServedParty
from fl_client.scoring_task import ScoringInput
from fl_client.vertical_task import NodeState
from tests.served import Service, start_service


@pytest.fixture(scope="module")
def service(vertical_pairs, tmp_path_factory) -> Service:
    run_dir, results = vertical_pairs["private"][0]
    return start_service(run_dir, results, tmp_path_factory.mktemp("service"))


def test_a_served_request_reproduces_the_runs_predictions(service):
    # label DP and DP-SGD; the scores of the run's test rows equal predictions.csv
    request_id, scores, counts = service.request({"id": "test-rows", "rows": "test"})
    predictions = pd.read_csv(service.run_dir / "predictions.csv", dtype={"id": str})
    both = predictions.merge(scores, on="id")
    assert len(both) == len(predictions) == len(scores)
    assert float((both["score"] - both["probability"]).abs().max()) <= 1e-6
    # the scores stay at the lender, one directory per request
    kept = service.lender.home / REQUESTS / request_id / "scores.csv"
    assert pd.read_csv(kept, dtype={"id": str})["id"].tolist() == scores["id"].tolist()
    assert counts["known"]["bureau"] == int(scores["known_bureau"].sum()) > 0
    # a second request in the same service: the same scores (no noise in this model)
    _, again, _ = service.request({"id": "again", "rows": "test"})
    np.testing.assert_allclose(again["probability"], scores["probability"], atol=1e-9)


def test_nothing_the_server_routes_holds_an_id_or_an_embedding(service):
    service.request({"id": "routed", "rows": "test"})
    ids = generate(3_000, seed=0).tables["lender"].frame.index[:200]
    blob = b"".join(service.routed)
    assert not [i for i in ids if str(i).encode() in blob]
    # the tag sets travel sealed: the server cannot read a tag; and they hold tags only
    for party, node in service.parties.items():
        opened = service.lender.home / "served" / f"{party}.tags"
        table = TagSet.from_bytes(opened.read_bytes())
        assert table.tags.tobytes()[:64] not in blob
        assert len(opened.read_bytes()) == TAG * len(node.ids)  # 16 bytes a customer


def test_the_server_can_neither_forge_nor_replay_a_request(service):
    node, state = service.parties["bureau"], service.party_states["bureau"]
    forged = seal(os.urandom(32), hash_to_group("C0000001"), "bureau request", seq=10**6)
    with pytest.raises(AlignmentError, match="bureau request: a served message does not open"):
        node.evaluate(state, forged)
    inbox = service.lender.inbox()
    (inbox / "replay.json").write_text(json.dumps({"rows": "test"}))
    _, sealed, _ = service.lender.blind(service.lender_state,
                                        service.lender.next_request(0.5))
    node.evaluate(state, sealed["bureau"])
    with pytest.raises(AlignmentError, match="a replayed or reordered request is refused"):
        node.evaluate(state, sealed["bureau"])


@pytest.mark.unit
def test_a_party_evaluates_only_points_of_the_group():
    identity = bytes([1]) + bytes(31)  # the neutral element: k * it says nothing, but refuse
    with pytest.raises(AlignmentError, match="point 0 of the served request is not a point"):
        evaluate(new_key(), identity)
    with pytest.raises(AlignmentError, match="not a whole number"):
        evaluate(new_key(), bytes(33))


@pytest.mark.unit
def test_the_lender_finds_only_what_it_asks_about_of_the_right_party_and_model():
    ids = [f"C{i:05d}" for i in range(500)]
    key, context = new_key(), table_context("m1", "bureau")
    own = party_tags(key, ids, context)
    asked = ["C00007", "nobody", "C00499"]
    blinded = Blinded.of(asked)
    found, tags = TagSet.of(own).find(asked, blinded.unblind(evaluate(key, blinded.points)),
                                      context)
    assert found.tolist() == [True, False, True]
    assert rows_of(tags, own, asked=len(asked)).tolist() == [7, 499]
    # another key (another party, or guessing) or another model's context finds nothing
    for k, c in ((new_key(), context), (key, table_context("m2", "bureau")),
                 (key, table_context("m1", "social"))):
        found, _ = TagSet.of(own).find(asked, blinded.unblind(evaluate(k, blinded.points)), c)
        assert not found.any()
    # the set's order says nothing of the party's own order
    assert not np.array_equal(TagSet.of(own).tags, own)
    # the party embeds only distinct customers of its own, no more than the request asked
    with pytest.raises(AlignmentError, match=r"names 2 customers \(1 distinct\)"):
        rows_of(tags[:TAG] * 2, own, asked=3)
    with pytest.raises(AlignmentError, match=r"names 2 customers .* for a request of 1"):
        rows_of(tags, own, asked=1)
    with pytest.raises(AlignmentError, match="1 tags that are none of this party's customers"):
        rows_of(bytes(TAG), own, asked=3)


@pytest.mark.unit
def test_a_blinded_request_looks_the_same_for_any_applicant():
    # the party sees r * H(x) with a fresh r: the same applicant twice gives unrelated points
    first, second = Blinded.of(["C00001"]), Blinded.of(["C00001"])
    assert first.points != second.points
    assert len(first.points) == POINT


def test_a_party_stops_answering_past_its_query_cap(vertical_pairs, tmp_path):
    run_dir, results = vertical_pairs["plain"][0]
    service = start_service(run_dir, results, tmp_path, "blacklists.max_queries=700")
    n = len(pd.read_csv(run_dir / "predictions.csv"))
    assert n <= 700 < 2 * n
    service.request({"id": "first", "rows": "test"})
    with pytest.raises(QueryLimit, match=r"bureau refuses: lender asked \d+ IDs of applications "
                                         r"on \d{4}-\d\d-\d\d and now asks \d+ more "
                                         r"\(service\), past this node's cap of 700 IDs a day"):
        service.request({"id": "second", "rows": "test"})
    ledger = json.loads((tmp_path / "bureau" / "bureau" / "queries.json").read_text())
    # the month's count (the day's beside it): the refused request was not charged
    assert [c for k, c in ledger["lender"].items() if len(k) == 7] == [{"service": n}]


def test_a_bad_request_is_named(service):
    # a bad file is answered with its error (the service goes on), and named
    inbox = service.lender.inbox()
    (inbox / "broken.json").write_text("{not json")
    taken = service.lender.next_request(0.1)
    assert taken["id"] == "broken" and re.search(r"broken.json: not a scoring request",
                                                 taken["error"])
    (inbox / "escape.json").write_text(json.dumps({"id": "../../elsewhere", "rows": "test"}))
    taken = service.lender.next_request(0.1)
    assert taken["id"] == "escape" and "is not one plain name" in taken["error"]
    assert service.lender.next_request(0.05) is None  # an empty inbox: idle after the wait
    assert INBOX in str(inbox)


def test_the_lender_refuses_an_answer_the_router_dropped_swapped_or_replayed(service):
    inbox = service.lender.inbox()

    def blinded(name: str) -> dict[str, bytes]:
        (inbox / f"{name}.json").write_text(json.dumps({"rows": "test"}))
        return service.lender.blind(service.lender_state, service.lender.next_request(0.5))[1]

    sealed = blinded("a")
    answers = {p: service.parties[p].evaluate(service.party_states[p], sealed[p])[0]
               for p in sealed}
    state = service.lender_state

    def match(evaluated: dict) -> dict:
        state.keys["scoring steps"] = b"served hello,served tables"  # match may be tried again
        return service.lender.match(state, evaluated)

    with pytest.raises(AlignmentError, match=r"no answer of \['social'\] to request"):
        match({"bureau": answers["bureau"]})
    with pytest.raises(AlignmentError, match="social answer: a served message does not open"):
        match({"bureau": answers["bureau"], "social": answers["bureau"]})
    known = match(answers)
    # the party refuses tags sealed for another party, and embeds each request once
    with pytest.raises(AlignmentError, match="bureau known: a served message does not open"):
        service.parties["bureau"].embed_known(service.party_states["bureau"], known["social"])
    embedded = service.embed(known)
    with pytest.raises(AlignmentError, match="embeds each once"):
        service.parties["bureau"].embed_known(service.party_states["bureau"], known["bureau"])
    with pytest.raises(AlignmentError, match=r"no embeddings of social for request"):
        service.lender.score(state, {"bureau": embedded["bureau"]})
    sealed = blinded("b")  # a newer request; the router hands back the old answers
    with pytest.raises(AlignmentError, match="answer is to request .*, not to request"):
        match(answers)


def test_applicants_changed_between_blinding_and_scoring_are_refused(service):
    inbox = service.lender.inbox()
    (inbox / "changing.json").write_text(json.dumps({"rows": "test"}))
    sealed = service.lender.blind(service.lender_state, service.lender.next_request(0.5))[1]
    answers = {p: service.parties[p].evaluate(service.party_states[p], sealed[p])[0]
               for p in sealed}
    loader = service.lender.applicants
    def fewer(request: dict):
        table = loader(request)
        return table.rows(np.arange(table.n_rows) % 2 == 0)  # rewritten in the meantime

    service.lender.applicants = fewer
    try:
        with pytest.raises(DataError, match="the applicants changed between blinding and "
                                            "scoring"):
            service.lender.match(service.lender_state, answers)
    finally:
        service.lender.applicants = loader


@pytest.mark.unit
def test_a_noisy_table_is_drawn_once_and_counted_once(tmp_path):
    # embedding noise: the release is drawn at the first service and kept at the party:
    # every later service and request sends rows of the same release, and spends nothing more
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from credit_data.settings import DataSettings
    from credit_data.vertical import node_rows
    from federation.alignment import public_bytes
    from federation.settings import FederationSettings, Mode
    from fl_client.party_bundle import write_passive_bundle
    from fl_client.scoring_task import encode_table
    from fl_client.settings import ClientSettings
    from models.networks import PartyEncoder
    from models.settings import ModelSettings, TrainSettings
    from models.split_training import embed
    from privacy.settings import PrivacySettings

    table = generate(2_000, seed=0).tables["bureau"]
    rows = node_rows(table, DataSettings(n_customers=2_000), seed=0)
    settings = ClientSettings(party="bureau", seed=0, model=ModelSettings(
        encoder_hidden=(8,), embedding_dim=4), train=TrainSettings(),
        federation=FederationSettings(mode=Mode.vertical),
        privacy=PrivacySettings(embedding_epsilon=3.0), state_dir=str(tmp_path),
        psi_cache=str(tmp_path / "cache"))
    encoder = PartyEncoder(rows.width, (8,), 4, 0.0)
    write_passive_bundle(settings, rows, "m", encoder.state_dict(), encoder_version=1,
                         noise_std=0.5, privacy={"embedding_releases": 3})
    party = ServedParty(settings, ScoringInput(tmp_path / "bureau" / "model", table))
    lender_key = public_bytes(X25519PrivateKey.generate())
    _, _, first = party.sealed_table(NodeState(), lender_key)
    # a second service before any request: the first table reply may never have passed the
    # node's budget (refused, or lost), so it is counted again
    state = NodeState()
    _, _, second = party.sealed_table(state, lender_key)
    assert not first["table_cached"] and second["table_cached"]
    assert first["released_rows"] == table.n_rows and first["epsilon_per_new_applicant"] > 0
    assert second["epsilon_per_new_applicant"] == first["epsilon_per_new_applicant"]
    # a request answered: the reply had gone through; later services spend nothing more
    party.evaluate(state, seal(state.keys["served"], b"", "bureau request", seq=1))
    _, _, third = party.sealed_table(NodeState(), lender_key)
    assert "epsilon_per_new_applicant" not in third
    assert third["release"]["epsilon_per_new_applicant"] == first["epsilon_per_new_applicant"]
    cached, _ = party._table()
    asked = list(table.frame.index[:300])
    blinded = Blinded.of(asked)
    found, tags = TagSet.of(cached.tags).find(
        asked, blinded.unblind(evaluate(cached.key, blinded.points)), table_context("m", "bureau"))
    assert found.all()
    noisy = cached.values[rows_of(tags, cached.tags, asked=300)]
    x, _ = encode_table(party.bundle, table, np.arange(300))
    clip = float(party.bundle.manifest["embedding"]["clip"])
    clean = embed(encoder, x, clip=clip)
    # noise of the bundle's standard deviation (from the OS, drawn at the party) on each row
    assert float(np.std(noisy - clean)) == pytest.approx(0.5, rel=0.1)
    again, _ = party._table()  # read from the party's disk: the same release
    np.testing.assert_array_equal(again.values, cached.values)


@pytest.mark.unit
def test_a_party_whose_table_changed_since_the_service_started_refuses(tmp_path):
    # the service's tags, embeddings and positions are of the table it started with: after a
    # consent withdrawal (a row gone) row i is another customer; the party refuses, named
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from credit_data.settings import DataSettings
    from credit_data.vertical import node_rows
    from federation.alignment import public_bytes
    from federation.settings import FederationSettings, Mode
    from fl_client.party_bundle import write_passive_bundle
    from fl_client.settings import ClientSettings
    from models.networks import PartyEncoder
    from models.settings import ModelSettings, TrainSettings
    from privacy.settings import PrivacySettings

    table = generate(500, seed=0).tables["bureau"]
    rows = node_rows(table, DataSettings(n_customers=500), seed=0)
    settings = ClientSettings(party="bureau", seed=0, model=ModelSettings(
        encoder_hidden=(8,), embedding_dim=4), train=TrainSettings(),
        federation=FederationSettings(mode=Mode.vertical), privacy=PrivacySettings(),
        state_dir=str(tmp_path), psi_cache=str(tmp_path / "cache"))
    write_passive_bundle(settings, rows, "m", PartyEncoder(rows.width, (8,), 4, 0.0)
                         .state_dict(), encoder_version=1, noise_std=0.0, privacy={})
    bundle_dir = tmp_path / "bureau" / "model"
    state = NodeState()
    ServedParty(settings, ScoringInput(bundle_dir, table)).sealed_table(
        state, public_bytes(X25519PrivateKey.generate()))
    request = seal(state.keys["served"], b"", "bureau request", seq=1)
    withdrawn = table.rows(table.frame.index[1:])  # one customer withdrew: rows read anew
    with pytest.raises(AlignmentError, match="bureau: its table changed since the scoring "
                                             "service started"):
        ServedParty(settings, ScoringInput(bundle_dir, withdrawn)).evaluate(state, request)
    ServedParty(settings, ScoringInput(bundle_dir, table)).evaluate(state, request)  # same: on


@pytest.mark.unit
def test_a_request_to_a_running_service_may_set_only_its_applicants(tmp_path, monkeypatch):
    from credit_data.errors import ConfigError
    from experiments.deploy import scoring_service as served

    monkeypatch.setattr(served.Federation, "load", classmethod(lambda cls, d: None))
    monkeypatch.setattr(served, "running", lambda fed: {"model_run": str(tmp_path.resolve())})
    with pytest.raises(ConfigError, match=r"blacklists.on_hit: a scoring service's settings are "
                                          r"set when it starts .* only scoring.applicants"):
        served.score(tmp_path, tmp_path, ["scoring.rows=test", "blacklists.on_hit=decline"])


@pytest.mark.unit
def test_seal_binds_its_label_and_sequence():
    key = os.urandom(32)
    blob = seal(key, b"points", "bureau request", seq=3)
    assert unseal(key, blob, "bureau request") == (3, b"points")
    with pytest.raises(AlignmentError):
        unseal(key, blob, "social request")
    tampered = (4).to_bytes(8, "big") + blob[8:]  # a router raising the sequence number
    with pytest.raises(AlignmentError):
        unseal(key, tampered, "bureau request")
