"""Typed messages (issue 31, item 4): each vertical message's fields are declared once in
``federation/protocol.py``; the server will not send, and a node will not run, a message whose
fields differ, and both name the field."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from credit_data.errors import FederationError
from federation.protocol import CONFIG, VERTICAL_FIELDS, VerticalMessage
from fl_server.vertical_rounds import _check_fields

pytestmark = pytest.mark.unit


def test_every_vertical_message_is_declared():
    assert set(VERTICAL_FIELDS) == set(VerticalMessage)


def test_per_party_fields_follow_the_parties_the_message_names():
    fields = VERTICAL_FIELDS[VerticalMessage.PSI_INTERSECT]
    config = {"passive": ["bureau"], "list_mode": "lookup", "bureau.setup": b"s",
              "bureau.response": b"r", "bureau.key": b"k"}
    assert fields.problem("query.psi_intersect", config) is None
    assert fields.problem("query.psi_intersect", config | {"social.key": b"k"}) == (
        "query.psi_intersect: unexpected field 'social.key' (it carries holders, list_mode, "
        "passive)")
    del config["bureau.response"]
    assert fields.problem("query.psi_intersect", config) == (
        "query.psi_intersect: missing field 'bureau.response'")


def test_the_server_will_not_send_a_message_its_nodes_refuse():
    with pytest.raises(FederationError, match="query.psi_answer: missing field 'key'"):
        _check_fields("query.psi_answer", RecordDict({CONFIG: ConfigRecord({"request": b"x"})}))
    _check_fields("query.score_hello", RecordDict())  # a hello carries no field: sent


@pytest.mark.parametrize(("kind", "config", "said"), [
    (VerticalMessage.PSI_SETUP, {"lender_rows": 400, "columns": 3},
     "query.psi_setup: unexpected field 'columns' (it carries lender_rows)"),
    (VerticalMessage.PSI_ANSWER, {"request": b"x"}, "query.psi_answer: missing field 'key'"),
])
def test_a_node_refuses_a_message_with_a_missing_or_an_extra_field_naming_it(
        tmp_path, kind, config, said):
    from credit_fl.vertical import VerticalSimulationSource, party_settings
    from experiments.deploy import federation as deploy
    from fl_client.vertical_app import make_vertical_client_app
    from tests.fake_grid import InProcessGrid, serving

    settings, _ = deploy.compose_settings(["federation=vertical", "data.n_customers=400",
                                           "federation.parties=[lender,bureau]"])
    clients = party_settings(settings, ("lender", "bureau"), tmp_path / "parties")
    grid = InProcessGrid(make_vertical_client_app(VerticalSimulationSource(
        clients, settings.data, settings.seed)), 2)
    with serving():
        ids = grid.push_messages([Message(RecordDict({CONFIG: ConfigRecord(config)}),
                                          dst_node_id=101, message_type=str(kind))])
        reply = list(grid.pull_messages(ids))[0]
    assert reply.content[CONFIG]["refused"] == said
    # nothing ran: a valid message would have left the node's state (node_state.pt)
    assert not list((tmp_path / "parties").rglob("node_state.pt"))


def test_every_scoring_message_is_declared():
    from federation.protocol import SCORING_FIELDS, ScoringMessage

    assert set(SCORING_FIELDS) == set(ScoringMessage)


def test_the_server_will_not_send_a_scoring_message_its_nodes_refuse():
    # a scoring service's match names each party's evaluated points
    with pytest.raises(FederationError, match="query.serve_match: missing field "
                                              "'bureau.evaluated'"):
        _check_fields("query.serve_match", RecordDict({CONFIG: ConfigRecord(
            {"passive": ["bureau"]})}))
    with pytest.raises(FederationError, match=r"query.score_embed: unexpected field 'served' "
                                              r"\(it carries explain, sealed\)"):
        _check_fields("query.score_embed", RecordDict({CONFIG: ConfigRecord(
            {"sealed": b"s", "served": 1})}))
    _check_fields("query.serve_match", RecordDict({CONFIG: ConfigRecord(
        {"passive": ["bureau"], "bureau.evaluated": b"e"})}))


@pytest.fixture(scope="module")
def scoring_nodes(tmp_path_factory):
    """A lender's and a bureau's scoring nodes (100, 101) whose bundles were never written:
    any handler that runs refuses, naming the bundle."""
    from credit_fl.batch_scoring import ScoringSimulationSource
    from experiments.deploy import federation as deploy
    from fl_client.scoring_app import make_scoring_client_app
    from fl_client.settings import client_settings
    from tests.fake_grid import InProcessGrid

    state = tmp_path_factory.mktemp("scoring")
    settings, _ = deploy.compose_settings(["federation=vertical", "data.n_customers=400",
                                           "federation.parties=[lender,bureau]"])
    clients = {p: client_settings(settings, p, str(state / "parties"))
               for p in ("lender", "bureau")}
    bundles = {p: state / "never-written" / p for p in clients}
    return InProcessGrid(make_scoring_client_app(ScoringSimulationSource(
        clients, settings, bundles)), 2), state


def _ask(grid, node: int, kind: str, config: dict) -> str:
    from tests.fake_grid import serving

    with serving():
        ids = grid.push_messages([Message(RecordDict({CONFIG: ConfigRecord(config)}),
                                          dst_node_id=node, message_type=kind)])
        reply = list(grid.pull_messages(ids))[0]
    return str(reply.content[CONFIG]["refused"])


@pytest.mark.parametrize(("node", "kind", "config", "said"), [
    (100, "query.score_hello", {"serve": 1, "scores": 1},
     "query.score_hello: unexpected field 'scores' (it carries serve)"),
    (101, "query.score_answer", {"request": b"x", "key": b"k"},
     "query.score_answer: missing field 'lender_rows'"),
    (100, "query.serve_score", {"passive": ["bureau"], "explain": 1},
     "query.serve_score: missing field 'bureau.embedded'"),
    (101, "query.explain_columns", {"served": 1, "names": ["income"]},
     "query.explain_columns: unexpected field 'names' (it carries gradients, served)"),
])
def test_a_scoring_node_refuses_a_message_with_a_missing_or_an_extra_field_naming_it(
        scoring_nodes, node, kind, config, said):
    grid, state = scoring_nodes
    assert _ask(grid, node, kind, config) == said
    # nothing ran: the handler would have read the bundle, or left the node's state
    assert not list(state.rglob("node_state.pt"))


def test_a_scoring_node_runs_the_handler_of_a_message_as_declared(scoring_nodes):
    # the same nodes reach the handler once the fields are right: it refuses the bundle
    grid, _ = scoring_nodes
    for node, kind, config in [(100, "query.score_hello", {"serve": 1}),
                               (101, "query.score_answer",
                                {"request": b"x", "key": b"k", "lender_rows": 3})]:
        assert "never-written" in _ask(grid, node, kind, config)
        assert "not a model bundle (no model.json)" in _ask(grid, node, kind, config)


def test_every_monitoring_message_is_declared_and_checked_before_it_is_sent():
    from federation.protocol import MONITORING_FIELDS, MonitoringMessage
    from fl_server.monitoring_rounds import _message
    from tests.fake_grid import serving

    assert set(MONITORING_FIELDS) == set(MonitoringMessage)
    with pytest.raises(FederationError, match="query.monitor: missing field 'min_count'"):
        _message(MonitoringMessage.INDICES, {}, 1)
    with serving():
        sent = _message(MonitoringMessage.INDICES, {"min_count": 50}, 1)
    assert sent.content[CONFIG]["min_count"] == 50


@pytest.mark.parametrize(("kind", "config", "said"), [
    ("query.monitor", {}, "query.monitor: missing field 'min_count'"),
    ("query.monitor", {"min_count": 50, "epsilon": 1.0},
     "query.monitor: unexpected field 'epsilon' (it carries min_count)"),
    ("query.monitor_model", {"period": 2},
     "query.monitor_model: unexpected field 'period' (it carries none)"),
])
def test_a_monitoring_node_refuses_a_message_with_a_missing_or_an_extra_field_naming_it(
        kind, config, said):
    from credit_data.errors import DataError
    from fl_client.monitoring_app import make_monitoring_client_app
    from tests.fake_grid import InProcessGrid, serving

    read: list[str] = []

    def source(context):  # a node's rows: read only by a handler that runs
        read.append(kind)
        raise DataError("bureau: no rows in this period")

    grid = InProcessGrid(make_monitoring_client_app(source, model_of=source), 1)

    def ask(config: dict) -> str:
        with serving():
            ids = grid.push_messages([Message(RecordDict({CONFIG: ConfigRecord(config)}),
                                              dst_node_id=100, message_type=kind)])
            return str(list(grid.pull_messages(ids))[0].content[CONFIG]["refused"])

    assert ask(config) == said
    assert read == []  # nothing ran
    declared = {"query.monitor": {"min_count": 50}, "query.monitor_model": {}}[kind]
    assert ask(declared) == "bureau: no rows in this period"  # as declared, the handler runs
    assert read == [kind]
