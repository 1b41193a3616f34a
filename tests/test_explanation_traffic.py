"""Issue 32: reason codes in batch scoring, through the Flower apps, every routed payload recorded.

A small three-party run is scored with explanations on the unit tier's in-process grid: the
server routes sealed bytes, column names and each party's global table, never a feature value,
a label or an applicant's ID; every node logs the explanation messages with the purpose
``explanation``; ``scores.csv`` gets ranked reasons, and each score is the reference's points
plus the parties' shares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from credit_data.loading import load_population
from federation.audit_log import verify
from federation.protocol import ScoringMessage
from tests.fake_grid import InProcessGrid, run_server_app
from tests.routed import checked_text
from tests.test_sealed_traffic import SMALL, _train

pytestmark = pytest.mark.unit

PARTIES = ("lender", "bureau", "social")


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> dict[str, Any]:
    """A small run, and its applicants scored and explained; every routed payload kept."""
    from credit_fl.batch_scoring import ScoringSimulationSource
    from fl_client.scoring_app import make_scoring_client_app
    from fl_client.settings import client_settings
    from fl_server.app_factory import make_scoring_server_app
    from fl_server.scoring_rounds import ScoringOutcome, ScoringServerSettings

    run_dir = tmp_path_factory.mktemp("run")
    outcome, settings = _train(run_dir, SMALL)
    assert outcome.error is None, outcome.error
    out = tmp_path_factory.mktemp("scored")
    bundles = {p: run_dir / "parties" / p / "model" for p in PARTIES}
    clients = {p: client_settings(settings, p, str(out)) for p in bundles}
    routed: list[tuple[str, str, Any]] = []
    scored = ScoringOutcome()
    app = make_scoring_client_app(ScoringSimulationSource(clients, settings, bundles))
    run_server_app(make_scoring_server_app(
        ScoringServerSettings(len(bundles), explain=True), scored, out,
        lambda way, node, body: routed.append((way, str(node), body))),
        InProcessGrid(app, len(bundles)))
    assert scored.error is None, scored.error
    scores = pd.read_csv(out / "lender" / "scores.csv", dtype={"id": str},
                         keep_default_na=False)
    return {"settings": settings, "outcome": scored, "routed": routed, "out": out,
            "scores": scores, "run_dir": run_dir}


def test_scores_get_ranked_reasons_that_add_up(explained) -> None:
    scores, outcome, out = explained["scores"], explained["outcome"], explained["out"]
    k = 4
    assert [c for c in scores.columns if c.startswith("reason_")][:3] == [
        "reason_1", "reason_1_text", "reason_1_points"]
    costs = scores[[f"reason_{r}_points" for r in range(1, k + 1)]].to_numpy()
    assert (costs >= 0).all() and (np.diff(costs, axis=1) <= 0).all()
    assert (scores["reason_1"] != "").mean() > 0.9  # nearly every applicant has a reason
    assert {c.split(".")[0] for c in scores["reason_1"] if c} <= set(PARTIES)
    # each score is the reference's points plus every party's share (exact Shapley)
    with np.load(out / "lender" / "explanation.npz") as kept:
        rebuilt = float(kept["base_points"]) + kept["shares"].sum(axis=1)
    assert np.abs(rebuilt - scores["points"].to_numpy()).max() < 0.006  # points are rounded
    # each party's columns add up to its share, to 1e-4 in log-odds
    gaps = outcome.explanation["completeness_gap_logodds"]
    assert set(gaps) == set(PARTIES) and max(gaps.values()) < 1e-4, gaps
    assert outcome.explanation["method"] == "exact"


def test_explanation_messages_carry_no_value_label_or_id(explained) -> None:
    settings, routed = explained["settings"], explained["routed"]
    population = load_population(settings.data, settings.seed)
    ids = {str(i) for t in population.tables.values() for i in t.frame.index}
    seen = 0
    for way, _, body in routed:
        text = checked_text(body, ids, "default_12m")
        seen += way == "in" and any(k in text for k in ("columns", "gradients", "global"))
    assert seen >= 2
    # what the server learns of a party's columns: its names and its global table
    for party, table in explained["outcome"].explanation["global"].items():
        assert set(table[0]) == {"party", "code", "description", "mean_abs_points",
                                 "mean_points"}
        assert all(row["party"] == party for row in table)


def test_every_explanation_message_is_logged_with_its_purpose(explained) -> None:
    out = explained["out"]
    expected = {"lender": {str(ScoringMessage.REASONS)},
                "bureau": {str(ScoringMessage.EXPLAIN)}, "social": {str(ScoringMessage.EXPLAIN)}}
    for party, kinds in expected.items():
        path = Path(out) / party / "audit.jsonl"
        verify(path)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert {line["event"] for line in lines if line["purpose"] == "explanation"} == kinds
        assert all(line["purpose"] == "scoring" for line in lines if line["event"] not in kinds)


def test_the_report_says_why_with_three_declined_applicants(explained, tmp_path) -> None:
    from credit_fl.explanation_report import explanation_lines
    from experiments.plots import plot_explanations

    scores, outcome = explained["scores"], explained["outcome"]
    lines = explanation_lines({"explanation": outcome.explanation}, scores)
    assert "## Why applicants were scored as they were" in lines
    declined = [line for line in lines if line.startswith("- ")]
    assert len(declined) == 3
    worst = scores.sort_values("points").head(3)
    for line, (_, row) in zip(declined, worst.iterrows(), strict=True):
        assert line.startswith(f"- {row['id']}:") and str(row["reason_1"]) in line
    assert plot_explanations({"explanation": outcome.explanation}, tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def served(explained, tmp_path_factory) -> dict[str, Any]:
    """The same bundles in a scoring service (one Flower run, one request), every payload kept.

    ``withheld``: ``social`` is a deployed node without ``--release-explanations``.
    """
    import dataclasses

    from federation.releases import Release
    from tests.served import serve_in_process

    settings, run_dir = explained["settings"], explained["run_dir"]
    bundles = {p: run_dir / "parties" / p / "model" for p in PARTIES}
    without = frozenset(Release) - {Release.explanations}
    return {"open": serve_in_process(settings, bundles, tmp_path_factory.mktemp("open"),
                                     first=1),
            "withheld": serve_in_process(
                settings, bundles, tmp_path_factory.mktemp("withheld"),
                lambda c: c if c.party != "social" else dataclasses.replace(c, opt_in=without))}


def test_a_served_answer_carries_the_batch_reasons(explained, served) -> None:
    # the service ranks the same reasons as batch scoring of the same applicants
    batch, answer = explained["scores"], served["open"]["scores"]
    assert answer["id"].tolist() == batch["id"].tolist()
    for r in range(1, 5):
        assert answer[f"reason_{r}"].tolist() == batch[f"reason_{r}"].tolist()
        np.testing.assert_allclose(answer[f"reason_{r}_points"], batch[f"reason_{r}_points"],
                                   atol=0.011)
    # one applicant alone: the same reasons (the lender's reference is its own table's mean,
    # each party's its own table's, whatever the request holds)
    one = served["open"]["scores_first"]
    assert len(one) == 1 and one.at[0, "reason_1"]
    for column in [c for c in batch.columns if c.startswith("reason_")]:
        if column.endswith("_points"):
            assert one.at[0, column] == pytest.approx(batch.at[0, column], abs=0.011)
        else:
            assert one.at[0, column] == batch.at[0, column]
    said = served["open"]["record"]["lender"]["explanation"]
    assert said["explained"] == len(answer) and said["columns_from"] == ["bureau", "social"]
    assert {"bureau", "social"} <= set(said["complete"]) and all(said["complete"].values())
    assert "completeness_gap_logodds" not in said  # a flag each: never the gap itself
    assert "global" not in said and "mean_abs_share" not in said  # counts only at the server


def test_a_served_party_without_the_opt_in_sends_no_attribution(served) -> None:
    withheld = served["withheld"]
    codes = {c for r in range(1, 5) for c in withheld["scores"][f"reason_{r}"] if c}
    assert {c.split(".")[0] for c in codes} == set(PARTIES)
    assert {c for c in codes if c.startswith("social.")} == {"social.all columns"}
    assert withheld["record"]["lender"]["explanation"]["columns_withheld"] == ["social"]
    # no explanation array left social's node; bureau's path and columns did, sealed
    arrays: dict[str, set[str]] = {}
    ids = {str(i) for i in withheld["scores"]["id"]}
    for way, _, body in withheld["routed"]:
        checked_text(body, ids, "default_12m")
        if way == "in":  # a service's explanation arrays travel in the config
            party = str(body.config_records["status"]["party"])
            arrays.setdefault(party, set()).update(body.array_records.get("arrays", {}))
            arrays[party].update(body.config_records.get("config", {}))
    assert {"explain.path", "explain.reference", "columns"} <= arrays["bureau"]
    assert not {n for n in arrays["social"] if n.startswith("explain.") or n == "columns"}
    lines = [json.loads(line) for line in
             (withheld["out"] / "bureau" / "audit.jsonl").read_text().splitlines()]
    assert {line["event"] for line in lines if line["purpose"] == "explanation"} == {
        str(ScoringMessage.SERVE_EMBED), str(ScoringMessage.EXPLAIN)}


def test_a_batch_explain_at_a_node_whose_service_started_is_refused(explained, served) -> None:
    # review L6: the request's sealed gradients, sent again as a batch 'explain' (no
    # "served"), would take the batch path at counter (0,) and split the request's columns
    # once more
    from flwr.app import ConfigRecord, Message, RecordDict

    from federation.protocol import ARRAYS, CONFIG
    from fl_client.scoring_app import make_scoring_client_app
    from fl_client.settings import client_settings
    from fl_client.simulation_sources import ScoringSimulationSource
    from tests.fake_grid import serving

    settings, run_dir, out = explained["settings"], explained["run_dir"], served["open"]["out"]
    sent = [body for way, _, body in served["open"]["routed"] if way == "out"
            and "gradients" in body.config_records.get(CONFIG, {})
            and body.config_records.get(CONFIG, {}).get("served")]
    assert sent  # the service's own explain messages, each with one party's gradients
    bundles = {p: run_dir / "parties" / p / "model" for p in PARTIES}
    clients = {p: client_settings(settings, p, str(out)) for p in bundles}
    grid = InProcessGrid(make_scoring_client_app(ScoringSimulationSource(
        clients, settings, bundles)), len(bundles))
    said = []
    with serving():
        for node in (101, 102):  # bureau, social: each gets every sealed array once
            ids = grid.push_messages([Message(RecordDict({CONFIG: ConfigRecord({
                "gradients": body.config_records[CONFIG]["gradients"]})}),
                dst_node_id=node, message_type=str(ScoringMessage.EXPLAIN)) for body in sent])
            said += [reply.content for reply in grid.pull_messages(ids)]
    assert said and all("scoring service has started" in str(
        c.config_records.get(CONFIG, {}).get("refused")) for c in said), said
    assert not any("columns" in c.array_records.get(ARRAYS, {})
                   or "columns" in c.config_records.get(CONFIG, {}) for c in said)
