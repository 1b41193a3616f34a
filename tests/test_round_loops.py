"""Both round loops and the nodes' handlers, driven in-process by a fake grid (no Ray).

The unit tier (``make test-unit``): each test runs in well under a second. The numbers the
assertions check are worked out here from the messages the grid carried, as Flower tests its
strategies: the server's aggregate against the mean of the replies, the report's rows against
the lenders' splits, the alignment against the tables' shared IDs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from credit_data.loading import load_population
from credit_data.split import TEST, TRAIN, VAL
from credit_fl.horizontal import horizontal_outcome, lender_rows, lender_settings
from credit_fl.vertical import VerticalSimulationSource, party_settings, vertical_outcome
from experiments.deploy import federation as deploy
from federation.protocol import ARRAYS, CONFIG, METRICS, REPORT, VerticalMessage, read_report
from fl_client.horizontal_app import make_client_app
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_server_app, make_vertical_server_app
from fl_server.horizontal_rounds import FederationOutcome
from fl_server.settings import horizontal_server_settings, vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from tests.fake_grid import InProcessGrid, run_server_app, serving

pytestmark = pytest.mark.unit

HORIZONTAL = ["federation=horizontal", "partition.n_lenders=2", "federation.rounds=2",
              "data.n_customers=600", "verbose=false"]
VERTICAL = ["federation=vertical", "privacy=off", "data.n_customers=600", "train.epochs=2",
            "federation.parties=[lender,bureau]", "verbose=false"]


def _horizontal(tmp_path: Path, overrides: list[str], **grid_options):
    settings, _ = deploy.compose_settings(HORIZONTAL + overrides)
    _, _, rows = lender_rows(settings)
    names = tuple(rows)
    clients = lender_settings(settings, names, tmp_path / "parties")
    any_rows = next(iter(rows.values()))
    server = horizontal_server_settings(settings, len(names), any_rows.numeric,
                                        any_rows.categorical, tmp_path)
    def source(context):
        name = names[int(context.node_config["partition-id"])]
        return clients[name], rows[name]

    app = make_client_app(source)
    grid = InProcessGrid(app, len(names), **grid_options)
    outcome = FederationOutcome()
    run_server_app(make_server_app(server, outcome), grid)
    return settings, rows, grid, outcome


def test_horizontal_round_loop_averages_the_lenders_weighted_by_their_rows(tmp_path):
    # Prepare: two lenders, two rounds of FedAvg, no DP
    settings, rows, grid, outcome = _horizontal(tmp_path, [])
    assert outcome.error is None, outcome.error
    # Execute: the last round's training replies, as the server received them
    last = [r for r in grid.received if r.metadata.message_type == "train"][-2:]
    weights = np.array([float(r.content[METRICS]["num-examples"]) for r in last])
    states = [r.content[ARRAYS].to_torch_state_dict() for r in last]
    # Assert: the final model is the row-weighted mean of the two replies, worked out here
    for name, value in outcome.state.items():
        mean = sum(w * s[name].double()
                   for w, s in zip(weights, states, strict=True)) / weights.sum()
        torch.testing.assert_close(value.double(), mean, rtol=1e-5, atol=1e-6)
    train_rows = {n: int((r.split == TRAIN).sum()) for n, r in rows.items()}
    assert sorted(weights) == sorted(train_rows.values())
    assert [h["round"] for h in outcome.history] == [1, 2]


def test_horizontal_report_pools_the_lenders_summaries_and_carries_no_row(tmp_path):
    settings, rows, grid, outcome = _horizontal(tmp_path, [])
    # each lender's report counts exactly its own rows per split
    for name, (summaries, split_rows) in outcome.reports.items():
        r = rows[name]
        expected = {"train": (r.split == TRAIN).sum(), "val": (r.split == VAL).sum(),
                    "test": (r.split == TEST).sum()}
        assert split_rows == {k: int(v) for k, v in expected.items()}
        assert summaries["test"].defaults == int(r.y[r.split == TEST].sum())
    run = horizontal_outcome(settings, outcome, 0.0, 1.0)
    total_test = sum(int((r.split == TEST).sum()) for r in rows.values())
    assert run.dataset["rows"]["test"] == total_test == run.report["test"].rows
    assert run.predictions is None and run.labels is None  # nothing row-level at the server
    # only the final evaluation message asks for a report
    asked = [m for m in grid.sent if m.metadata.message_type == "evaluate"]
    assert len(asked) == 2 and all(m.content[CONFIG][REPORT] for m in asked)


def test_horizontal_under_dp_sends_no_training_summary(tmp_path):
    settings, rows, grid, outcome = _horizontal(tmp_path, ["privacy=dpsgd"])
    assert outcome.error is None, outcome.error
    for summaries, split_rows in outcome.reports.values():
        assert "train" not in summaries and split_rows["train"] > 0
    run = horizontal_outcome(settings, outcome, 0.0, 1.0)
    assert run.metrics["test"]["psi_reference"] == "val"
    assert run.dataset["positive_rate"]["train"] is None
    assert outcome.ledger is not None and outcome.ledger.summary()["epsilon"] > 0


def test_horizontal_a_silent_lender_is_left_out_and_recorded(tmp_path):
    # node 101 never answers its second training message (round 2)
    seen: list[int] = []

    def second_train_to_lender_2(m: Message) -> bool:
        if m.metadata.dst_node_id == 101 and m.metadata.message_type == "train":
            seen.append(1)
            return len(seen) == 2
        return False

    _, rows, _, outcome = _horizontal(tmp_path, ["federation.min_clients=1",
                                              "federation.round_timeout=1"],
                                   drop=second_train_to_lender_2)
    assert outcome.error is None, outcome.error
    served_by_101 = tuple(rows)[1]
    assert [(e.round, e.party) for e in outcome.exclusions] == [(2, served_by_101)]
    assert outcome.history[-1]["clients"] == 1


def test_vertical_round_loop_aligns_trains_and_reports(tmp_path):
    # Prepare: the lender and the bureau, two epochs, no DP
    settings, _ = deploy.compose_settings(VERTICAL)
    population = load_population(settings.data, settings.seed)
    parties = ("lender", "bureau")
    clients = party_settings(settings, parties, tmp_path / "parties")
    server = vertical_server_settings(settings, parties, tmp_path)
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))
    grid = InProcessGrid(app, 2)
    outcome = VerticalOutcome()
    # Execute
    run_server_app(make_vertical_server_app(server, outcome), grid)
    # Assert: the intersection is the tables' shared IDs, counted here
    assert outcome.error is None, outcome.error
    shared = set(population.tables["lender"].frame.index) & set(
        population.tables["bureau"].frame.index)
    assert outcome.alignment["bureau"]["intersection"] == len(shared)
    assert outcome.epochs == 2
    run = vertical_outcome(settings, parties, outcome, 0.0, 1.0)
    lender = population.tables["lender"]
    assert sum(run.dataset["rows"].values()) == lender.n_rows
    assert run.dataset["parties"]["bureau"]["source_columns"] == len(
        population.tables["bureau"].features)
    # the report's AUC is the lender's own exact test AUC, to the summary's resolution
    assert run.metrics["test"]["auc"] == pytest.approx(outcome.final["test_auc"], abs=2e-3)
    # no row-level value reached the server: the lender's final reply holds summaries only
    final = [r for r in grid.received if r.metadata.message_type == str(VerticalMessage.FINAL)
             and REPORT in r.content.config_records]
    summaries, rows = read_report(final[0].content.config_records[REPORT], private=False)
    assert summaries["test"].rows == rows["test"] == run.dataset["rows"]["test"]
    assert ARRAYS not in final[0].content.array_records


def test_a_lender_handler_that_fails_becomes_an_error_reply(tmp_path):
    # a training message without a schema: the handler raises, the grid answers with an error
    settings, _ = deploy.compose_settings(HORIZONTAL)
    _, _, rows = lender_rows(settings)
    names = tuple(rows)
    clients = lender_settings(settings, names, tmp_path)
    app = make_client_app(lambda context: (clients[names[0]], rows[names[0]]))
    grid = InProcessGrid(app, 1)
    with serving():
        bad = Message(RecordDict({ARRAYS: ArrayRecord(), CONFIG: ConfigRecord({})}),
                      dst_node_id=100, message_type="train")
        (reply,) = grid.send_and_receive([bad])
    assert reply.has_error() and "schema" in reply.error.reason


def test_a_malformed_or_impossible_report_is_refused_naming_what_is_wrong():
    from federation.protocol import report_record
    from models.metrics import ScoreSummary

    y, p = np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.6])
    good = ScoreSummary.of(y, p)
    rows = {"train": 4, "val": 4, "test": 4}
    record = report_record({"val": good, "test": good}, rows)
    assert read_report(record, private=True)[1] == rows
    cases = {
        "NaN sum": record | {"test.squared_error": float("nan")},
        "fractional count": record | {"test.positives": [1.5]},
        "a bin of too few rows (its labels would show)": record | {
            "test.starts": [0, 120], "test.positives": [0, 2], "test.negatives": [2, 0],
            "test.score_sums": [0.6, 1.3]},
        "bins that do not start at the grid's first cell": record | {"test.starts": [3]},
        "rows that do not add up": record | {"rows": [4, 4, 5]},
        "a training summary missing without DP": record,
    }
    for what, bad in cases.items():
        with pytest.raises(ValueError):
            read_report(bad, private=(what != "a training summary missing without DP"))


def test_a_lender_silent_at_the_final_evaluation_is_left_out_and_recorded(tmp_path):
    evaluations: list[int] = []

    def silent_at_the_end(m: Message) -> bool:
        if m.metadata.dst_node_id == 101 and m.metadata.message_type == "evaluate":
            evaluations.append(1)
            return True
        return False

    settings, rows, _, outcome = _horizontal(tmp_path, ["federation.round_timeout=1"],
                                             drop=silent_at_the_end)
    assert outcome.error is None, outcome.error
    silent = tuple(rows)[1]
    assert set(outcome.reports) == {tuple(rows)[0]}
    assert (2, silent, "sent no report on the final model") in [
        (e.round, e.party, e.reason) for e in outcome.exclusions]
    run = horizontal_outcome(settings, outcome, 0.0, 1.0)
    assert run.dataset["rows"]["test"] == int((rows[tuple(rows)[0]].split == TEST).sum())


def test_a_node_that_is_gone_is_named_by_its_party(tmp_path):
    # issue 19, item 11: "train.embed: 1 failed: Error: Node Unavailable" named the SuperLink's id
    settings, _ = deploy.compose_settings(VERTICAL)
    parties = ("lender", "bureau")
    clients = party_settings(settings, parties, tmp_path / "parties")
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))
    grid = InProcessGrid(app, 2, unavailable=lambda m: m.metadata.message_type == str(
        VerticalMessage.EMBED) and m.metadata.dst_node_id == 101)
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(vertical_server_settings(settings, parties,
                                                                     tmp_path), outcome), grid)
    party = {100: "lender", 101: "bureau"}  # who answered hello as which node
    assert str(outcome.error).startswith(f"train.embed: party '{party[101]}' (node 101) "
                                         "stopped answering")
