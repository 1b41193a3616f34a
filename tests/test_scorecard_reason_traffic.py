"""Issue 32: a vertical scorecard's reason codes, through the Flower apps, every payload recorded.

A small three-party scorecard (``model=scorecard``) is scored with explanations on the unit
tier's in-process grid. Each party counts its columns' points below the reference on its own
rows and seals only its top codes and what each cost; the lender ranks them. Checked: the
server routes sealed bytes, counts and each party's global table, never a feature value, a
label or an applicant's ID; each applicant's points lost, summed over the parties, are the
reference's points less its points; every reason is one a party's columns really cost; the
messages that carried codes are logged with the purpose ``explanation``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord

from credit_data.errors import AlignmentError
from credit_data.loading import load_population
from federation.audit_log import verify
from federation.protocol import ScoringMessage
from tests.fake_grid import InProcessGrid, run_server_app
from tests.routed import checked_text, explanation_blobs, swap
from tests.test_sealed_traffic import SMALL, _train

pytestmark = pytest.mark.unit

PARTIES = ("lender", "bureau", "social")
K = 4
TINY = [o for o in SMALL if not o.startswith(("data.n_customers", "train.epochs"))] + [
    "data.n_customers=400", "train.epochs=1"]


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> dict[str, Any]:
    """A small scorecard run, its applicants scored and explained; every routed payload kept."""
    from credit_fl.batch_scoring import ScoringSimulationSource
    from fl_client.scoring_app import make_scoring_client_app
    from fl_client.settings import client_settings
    from fl_server.app_factory import make_scoring_server_app
    from fl_server.scoring_rounds import ScoringOutcome, scoring_server_settings

    run_dir = tmp_path_factory.mktemp("run")
    outcome, settings = _train(run_dir, [*TINY, "model=scorecard"])
    assert outcome.error is None, outcome.error
    out = tmp_path_factory.mktemp("scored")
    bundles = {p: run_dir / "parties" / p / "model" for p in PARTIES}
    clients = {p: client_settings(settings, p, str(out)) for p in bundles}
    routed: list[tuple[str, str, Any]] = []
    scored = ScoringOutcome()
    server = scoring_server_settings(settings)
    assert server.explain  # a vertical scorecard explains by default
    app = make_scoring_client_app(ScoringSimulationSource(clients, settings, bundles))
    run_server_app(make_scoring_server_app(server, scored, out,
                                           lambda way, node, body: routed.append(
                                               (way, str(node), body))),
                   InProcessGrid(app, len(bundles)))
    assert scored.error is None, scored.error
    scores = pd.read_csv(out / "lender" / "scores.csv", dtype={"id": str},
                         keep_default_na=False)
    return {"settings": settings, "outcome": scored, "routed": routed, "out": out,
            "scores": scores, "run_dir": run_dir}


def test_points_lost_add_up_to_the_reference_less_the_score(explained) -> None:
    scores, out, outcome = explained["scores"], explained["out"], explained["outcome"]
    with np.load(out / "lender" / "explanation.npz") as kept:
        base, shares = float(kept["base_points"]), kept["shares"]
    assert shares.shape == (len(scores), len(PARTIES))
    # the reference's points, built from the model's weights, less each party's points lost
    # (its reference less its partial score) are the points scored through predict_proba
    assert np.abs(base + shares.sum(axis=1) - scores["points"].to_numpy()).max() < 0.006
    assert abs(outcome.explanation["base_points"] - base) < 1e-9
    assert outcome.explanation["method"] == "scorecard maximum"
    assert outcome.explanation["completeness_gap_logodds"]["lender"] < 1e-5
    # against each column's best bin nothing is gained: what a party's columns cost an
    # applicant it knows is >= 0 (one it does not know may gain: its "absent" partial score)
    assert (shares[:, 0] <= 1e-6).all()
    for i, party in enumerate(PARTIES[1:], start=1):
        known = scores[f"known_{party}"].to_numpy() == 1
        assert known.sum() > 100 and (shares[known, i] <= 1e-6).all(), party


def test_every_reason_is_a_cost_a_party_really_had(explained) -> None:
    scores = explained["scores"]
    with np.load(explained["out"] / "lender" / "explanation.npz") as kept:
        lost = -kept["shares"]  # each party's points lost, in all
    costs = scores[[f"reason_{r}_points" for r in range(1, K + 1)]].to_numpy()
    assert (costs >= 0).all() and (np.diff(costs, axis=1) <= 1e-9).all()
    assert (scores["reason_1"] != "").mean() > 0.9
    owners = {c.split(".")[0] for r in range(1, K + 1) for c in scores[f"reason_{r}"] if c}
    assert owners == set(PARTIES)  # codes from every party, each counted at its own node
    # a party's reasons together never cost more than all its columns cost the applicant
    for i, party in enumerate(PARTIES):
        mine = sum(np.where(scores[f"reason_{r}"].str.startswith(f"{party}."),
                            scores[f"reason_{r}_points"], 0.0) for r in range(1, K + 1))
        assert (mine <= np.maximum(lost[:, i], 0.0) + 0.01).all(), party
        assert (mine > 0).sum() > 20, party
    texts = {t for r in range(1, K + 1) for t in scores[f"reason_{r}_text"] if t}
    assert texts and not any(t.startswith(("lender.", "bureau.", "social.")) for t in texts)


def test_scorecard_messages_carry_no_value_label_or_id(explained) -> None:
    settings, routed = explained["settings"], explained["routed"]
    population = load_population(settings.data, settings.seed)
    ids = {str(i) for t in population.tables.values() for i in t.frame.index}
    codes = 0
    for way, _, body in routed:
        checked_text(body, ids, "default_12m")
        codes += way == "in" and "explain.codes" in json.dumps(_names(body))
    assert codes == 2  # each passive party sealed its codes once, beside its partial scores
    for party, table in explained["outcome"].explanation["global"].items():
        assert set(table[0]) == {"party", "code", "description", "mean_abs_points",
                                 "mean_points"}
        assert all(row["party"] == party for row in table)
    assert set(explained["outcome"].explanation["global"]) == set(PARTIES)


def _names(body: Any) -> list[str]:
    """The names of a routed message's arrays: its array records' keys and, where a scoring
    service sends its sealed explanation arrays, its config's."""
    return [name for key, record in body.items() if isinstance(record, ArrayRecord)
            or key == "config" for name in record]


def test_the_messages_that_carried_codes_are_logged_as_explanation(explained) -> None:
    out = explained["out"]
    expected = {"lender": str(ScoringMessage.SCORE), "bureau": str(ScoringMessage.EMBED),
                "social": str(ScoringMessage.EMBED)}
    for party, kind in expected.items():
        path = Path(out) / party / "audit.jsonl"
        verify(path)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [line["event"] for line in lines if line["purpose"] == "explanation"] == [kind]
        assert all(line["purpose"] == "scoring" for line in lines if line["event"] != kind)


def test_a_cutoff_reference_is_refused_naming_the_key() -> None:
    from credit_data.errors import ConfigError
    from federation.explanation import ExplainSettings
    from fl_client.scorecard_explanation import _method

    assert _method(ExplainSettings(scorecard_reference="average"), "bureau") == "average"
    with pytest.raises(ConfigError, match="explain.cutoff"):
        _method(ExplainSettings(scorecard_reference="average", cutoff=600.0), "bureau")


def test_a_partys_column_costs_add_up_to_its_reference_less_its_partial_score() -> None:
    import torch

    from fl_client.scorecard_explanation import column_costs
    from models.binned_scorecard import BinLayout, ScorecardEncoder

    # Prepare: a party's bins (a numeric column with its missing bin, a category, present)
    encoder = ScorecardEncoder(BinLayout.of(("a", "a.missing", "c=x", "c=y", "present"), bins=4))
    generator = np.random.default_rng(0)
    with torch.no_grad():
        encoder.embed.weight.copy_(torch.as_tensor(generator.normal(size=(1, 8)),
                                                   dtype=torch.float32))
    rows = 200
    category = generator.integers(0, 3, rows)  # 2: a rare category, merged (zeros)
    x = np.column_stack([generator.normal(size=rows), generator.random(rows) < 0.1,
                         category == 0, category == 1, np.ones(rows)]).astype(np.float32)
    # Execute
    lost, names, total = column_costs(encoder, x, "maximum")
    average, _, average_total = column_costs(encoder, x, "average")
    with torch.no_grad():
        partial = encoder(torch.as_tensor(x)).numpy()[:, 0]
    # Assert: completeness (log-odds), nothing gained against the best bin, and the
    # category's reference worked out by hand: its best bin or the merged one's 0
    assert names == ["a", "c", "present"]
    assert np.abs(lost.sum(axis=1) - (total + partial)).max() < 1e-5
    assert np.abs(average.sum(axis=1) - (average_total + partial)).max() < 1e-5
    assert (lost >= -1e-9).all() and np.abs(average.mean(axis=0)).max() < 1e-6
    w = encoder.embed.weight.detach().numpy()[0]
    own_c = np.where(category == 0, -w[5], np.where(category == 1, -w[6], 0.0))
    assert np.allclose(lost[:, 1], max(-w[5], -w[6], 0.0) - own_c, atol=1e-6)
    assert np.abs(lost[:, 2]).max() < 1e-9  # a known applicant's "present" costs nothing


def test_the_scoring_report_says_why_from_the_scorecards_codes(explained) -> None:
    from credit_fl.explanation_report import explanation_lines

    scores, outcome = explained["scores"], explained["outcome"]
    lines = explanation_lines({"explanation": outcome.explanation}, scores)
    assert "## Why applicants were scored as they were" in lines
    assert any("scorecard maximum, Regulation B" in line for line in lines)
    assert {line.split(" | ")[0] for line in lines if line.startswith("| ")} >= {
        f"| {p}" for p in PARTIES}  # each party's share and its own global table
    declined = [line for line in lines if line.startswith("- ")]
    worst = scores.sort_values("points").head(3)
    assert len(declined) == 3
    for line, (_, row) in zip(declined, worst.iterrows(), strict=True):
        assert line.startswith(f"- {row['id']}:") and str(row["reason_1"]) in line


def test_a_served_answer_carries_the_scorecards_batch_reasons(explained, tmp_path) -> None:
    # the scoring service: each party's codes beside its partial scores, no more rounds
    from tests.served import serve_in_process

    bundles = {p: explained["run_dir"] / "parties" / p / "model" for p in PARTIES}
    served = serve_in_process(explained["settings"], bundles, tmp_path / "served")
    batch, answer = explained["scores"], served["scores"]
    assert answer["id"].tolist() == batch["id"].tolist()
    for r in range(1, K + 1):
        assert answer[f"reason_{r}"].tolist() == batch[f"reason_{r}"].tolist()
        np.testing.assert_allclose(answer[f"reason_{r}_points"], batch[f"reason_{r}_points"],
                                   atol=0.011)
    record = served["record"]
    assert record["lender"]["explanation"]["columns_from"] == ["bureau", "social"]
    assert "explanation" not in record["seconds"]  # no round beyond the service's four
    assert sum("explain.codes" in json.dumps(_names(body)) for way, _, body in served["routed"]
               if way == "in") == 2
    # review M3: every config blob the service routed, the codes among them, is sealed
    ids = {str(i) for i in batch["id"]}
    blobs: dict[str, bytes] = {}
    for _, _, body in served["routed"]:
        checked_text(body, ids, "default_12m")
        blobs |= explanation_blobs(body)
    assert {"bureau.explained/explain.lost", "social.explained/explain.codes",
            "explain.lost"} <= set(blobs)


def _against_the_average(explained):
    """The explained run's settings with the ``average`` reference, and its parties' bundles."""
    import dataclasses

    settings = explained["settings"]
    average = dataclasses.replace(settings, explain=dataclasses.replace(
        settings.explain, scorecard_reference="average"))
    return average, {p: explained["run_dir"] / "parties" / p / "model" for p in PARTIES}


def test_a_served_applicants_average_reasons_do_not_depend_on_who_else_is_asked(
        explained, tmp_path) -> None:
    # review L9: the service's ``average`` reference is each party's own table's, fixed for
    # the service; it was the request's applicants' average (one applicant alone: no reason)
    from tests.served import serve_in_process

    average, bundles = _against_the_average(explained)
    served = serve_in_process(average, bundles, tmp_path / "served", first=1)
    every, alone = served["scores"], served["scores_first"]
    assert len(alone) == 1 and alone.at[0, "id"] == every.at[0, "id"]
    assert alone.at[0, "reason_1"]  # against the average applicant, something cost points
    for column in [c for c in every.columns if c.startswith("reason_")]:
        if column.endswith("_points"):
            assert alone.at[0, column] == pytest.approx(every.at[0, column], abs=0.011)
        else:
            assert alone.at[0, column] == every.at[0, column], column
    assert served["record"]["lender"]["explanation"]["method"] == "scorecard average"


def _one_served_request(settings, bundles, applicants, tables, nodes):
    """A scoring service's nodes on ``tables`` (under ``nodes``), one request for
    ``applicants`` matched and embedded; return the clients' settings and the nodes."""
    from fl_client.scoring_service import ServedLender, ServedParty
    from fl_client.scoring_task import ScoringInput
    from fl_client.settings import client_settings
    from fl_client.vertical_task import NodeState
    from tests.served import Service

    clients = {p: client_settings(settings, p, str(nodes / p)) for p in PARTIES}
    lender = ServedLender(clients["lender"], ScoringInput(bundles["lender"], applicants),
                          lambda request: applicants)
    parties = {p: ServedParty(clients[p], ScoringInput(bundles[p], tables[p])) for p in tables}
    service = Service(lender, parties, NodeState(), {p: NodeState() for p in parties}, [],
                      nodes, {})
    _, key = lender.hello(service.lender_state)
    lender.open_tables(service.lender_state, {
        p: tuple(reversed(node.sealed_table(service.party_states[p], key)[:2]))
        for p, node in parties.items()})
    inbox = lender.inbox()
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "r.json").write_text(json.dumps({"id": "r", "rows": "test"}))
    request = lender.next_request(wait=0.5)
    assert request is not None
    _, sealed, _ = lender.blind(service.lender_state, request)
    service.embed(lender.match(service.lender_state, {
        p: parties[p].evaluate(service.party_states[p], sealed[p])[0] for p in sealed}))
    return clients, lender, parties, service


def test_the_average_reference_is_the_bundles_whatever_table_a_service_runs_on(
        explained, tmp_path) -> None:
    # review M1: the service's ``average`` reference was each party's whole-table aggregate,
    # sent with every request: two services on tables a few rows apart revealed the difference
    from federation.explanation import CARD_TOTAL
    from fl_client.sealed_exchange import channel
    from models.bundle import load_bundle

    # Prepare: the bureau serves its whole table, then the same less five customers that are
    # not among the request's applicants (the lender's first 20 customers)
    settings, bundles = _against_the_average(explained)
    population = load_population(settings.data, settings.seed)
    applicants = population.tables["lender"].rows(np.arange(population.tables["lender"].n_rows)
                                                  < 20)
    asked = {str(i) for i in applicants.frame.index}
    whole = population.tables["bureau"]
    spare = [i for i in whole.frame.index if str(i) not in asked][:5]
    totals = []
    for name, bureau_table in (("whole", whole),
                               ("fewer", whole.rows(~whole.frame.index.isin(spare)))):
        # Execute: one request's matching and embedding, then the bureau's sealed codes
        tables = {"bureau": bureau_table, "social": population.tables["social"]}
        _, lender, parties, service = _one_served_request(settings, bundles, applicants,
                                                          tables, tmp_path / name)
        codes, said = parties["bureau"].explain_known(service.party_states["bureau"])
        assert said["explained"] > 0
        side = channel(lender.settings, service.lender_state.keys, "bureau")
        totals.append(float(side.open(CARD_TOTAL, (1,), codes["explain.total"])[0]))
    # Assert: the same reference on both tables, the one the bureau's bundle saved at training
    # (each bin's share of its training split times the bin's points, in log-odds)
    assert totals[0] == totals[1]
    card = load_bundle(bundles["bureau"]).manifest["scorecard_table"]
    assert card["average"]["from"] == "training split"
    saved = sum(s * b["points"] for s, b in zip(card["average"]["shares"], card["bins"],
                                                 strict=True))
    assert totals[0] == pytest.approx(saved / (settings.scorecard.pdo / np.log(2)), abs=1e-6)


def test_a_served_partys_codes_are_sealed_for_the_lender_and_its_request(explained,
                                                                         tmp_path) -> None:
    # review M3: a service's explanation arrays travel as config bytes; each one is sealed
    # (no float of the costs in the clear), opens at the lender as the bureau's of the
    # request's number, and refuses another number, another sender or another receiver
    from federation.explanation import CARD_CODES, CARD_LOST, CARD_NAMES, CARD_TOTAL
    from fl_client.sealed_exchange import channel
    from tests.routed import opaque

    # Prepare: a service's nodes, one request matched and embedded
    settings = explained["settings"]
    bundles = {p: explained["run_dir"] / "parties" / p / "model" for p in PARTIES}
    population = load_population(settings.data, settings.seed)
    applicants = population.tables["lender"]
    clients, lender, parties, service = _one_served_request(
        settings, bundles, applicants, {p: population.tables[p] for p in PARTIES[1:]},
        tmp_path)
    # Execute: the bureau's codes, as its node puts them in its reply's config
    codes, said = parties["bureau"].explain_known(service.party_states["bureau"])
    sent = {name: blob.tobytes() for name, blob in codes.items()}
    # Assert
    kinds = {"explain.codes": CARD_CODES, "explain.lost": CARD_LOST,
             "explain.total": CARD_TOTAL, "explain.names": CARD_NAMES}
    assert set(sent) == set(kinds) and said["explained"] > 0
    side = channel(lender.settings, service.lender_state.keys, "bureau")
    social = channel(lender.settings, service.lender_state.keys, "social")
    for name, blob in sent.items():
        opaque(blob, name)
        values = side.open(kinds[name], (1,), blob)  # the request's number: the first
        assert values.size > 0
        if values.dtype.kind == "f":  # no cost (or reference) in the clear, in any width
            for width in (np.float32, np.float64):
                plain = values.astype(width).tobytes()
                assert plain[:8] not in blob, (name, width)
        assert values.tobytes() not in blob, name
        for opener, counter in ((side, (2,)), (side, (0,)), (social, (1,))):
            with pytest.raises(AlignmentError, match="do not open"):
                opener.open(kinds[name], counter, blob)
        to_social = channel(clients["social"], service.party_states["social"].keys, "lender")
        with pytest.raises(AlignmentError):  # another receiver: no key with the bureau
            channel(clients["social"], service.party_states["social"].keys, "bureau").open(
                kinds[name], (1,), blob)
        with pytest.raises(AlignmentError, match="do not open"):  # nor from the lender's
            to_social.open(kinds[name], (1,), blob)


@pytest.mark.parametrize("tampered", ["swapped", "altered"])
def test_a_served_partys_codes_swapped_or_altered_by_the_server_are_refused(
        explained, tmp_path, tampered) -> None:
    # review M3: the server forwards each party's sealed codes whole to the lender; another
    # party's, or altered ones, do not open there and the request is refused, naming them
    from tests.served import serve_in_process

    def swapped(message) -> None:
        if message.metadata.message_type == str(ScoringMessage.SERVE_SCORE):
            config = message.content["config"]
            config["bureau.explained"], config["social.explained"] = (
                config["social.explained"], config["bureau.explained"])

    def flip(blob: bytes) -> bytes:
        return blob[:-1] + bytes([blob[-1] ^ 1])  # the last sealed array's tag

    bundles = {p: explained["run_dir"] / "parties" / p / "model" for p in PARTIES}
    served = serve_in_process(explained["settings"], bundles, tmp_path / "served", tamper=(
        swapped if tampered == "swapped"
        else swap(ScoringMessage.SERVE_SCORE, "bureau.explained", flip)))
    assert served["scores"] is None  # no answer
    error = served["record"]["error"]
    assert "lender" in error and "from bureau do not open" in error, error
    assert "scorecard" in error, error  # one of the bureau's sealed codes, by its kind
