"""Each party's node pinned to its party name (issue 29, point 3).

On a deployment anyone holding ``ca.crt`` can register a key and start a node that says it is
``bureau``. The coordinator pins each party to the node ID its registered key received: a second
node claiming a pinned party is refused at its first message and named, and the run goes on with
the real node. Driven in-process on the fake grid; the register output is Flower 1.41's, copied
from a loopback federation.
"""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from credit_data.errors import ConfigError, DeployError, FederationError
from credit_fl.horizontal import lender_rows, lender_settings
from credit_fl.vertical import VerticalSimulationSource, party_settings
from deployment.pins import PINS_FILE, node_id_from_register_output, read_pins, write_pins
from experiments.deploy import federation as deploy
from federation.protocol import CONFIG, STATUS, ScoringMessage
from fl_client.horizontal_app import make_client_app
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_server_app, make_vertical_server_app
from fl_server.horizontal_rounds import FederationOutcome
from fl_server.node_pins import NodePins, pinned_nodes
from fl_server.scoring_rounds import ScoringOutcome, ScoringServerSettings, hello
from fl_server.settings import horizontal_server_settings, vertical_server_settings
from fl_server.vertical_rounds import Router, VerticalOutcome
from tests.fake_grid import InProcessGrid, run_server_app, serving

pytestmark = pytest.mark.unit

# what `flwr supernode register <key.pub> local` printed on a loopback federation (flwr 1.41.0)
REGISTERED = ("Using SuperLink: local (127.0.0.1:38117)\n"
              "✅ SuperNode 15723246161303804843 registered successfully.\n")
REGISTERED_JSON = '{\n  "success": true,\n  "node-id": 593859881175839272\n}\n'

VERTICAL = ["federation=vertical", "privacy=off", "data.n_customers=600", "train.epochs=1",
            "federation.parties=[lender,bureau]", "verbose=false"]
HORIZONTAL = ["federation=horizontal", "privacy=off", "partition.n_lenders=2",
              "federation.rounds=1", "data.n_customers=600", "verbose=false"]
LENDER, BUREAU, SECOND = 100, 101, 102  # the fake grid's node IDs: lender, bureau, a 2nd bureau


# --- the register output and pins.json ---------------------------------------------------------

def test_the_node_id_is_read_from_what_flwr_supernode_register_prints():
    assert node_id_from_register_output(REGISTERED) == 15723246161303804843
    assert node_id_from_register_output(REGISTERED_JSON) == 593859881175839272


@pytest.mark.parametrize("text", [
    "Using SuperLink: local (127.0.0.1:38117)\n",  # no ID
    "SuperNode couldn't be registered.",
    REGISTERED + "✅ SuperNode 7 registered successfully.\n",  # two IDs
])
def test_register_output_without_exactly_one_node_id_is_refused_quoting_it(text):
    with pytest.raises(DeployError, match="flwr supernode register") as caught:
        node_id_from_register_output(text)
    assert text.strip()[-20:] in str(caught.value)


def test_pins_are_written_owner_only_and_read_back(tmp_path):
    pins = {"lender": 15723246161303804843, "bureau": 593859881175839272}
    path = write_pins(tmp_path / "state", pins)
    assert path == tmp_path / "state" / PINS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_pins(tmp_path / "state") == pins
    assert json.loads(path.read_text()) == pins


def test_no_pins_file_pins_nothing(tmp_path):
    assert read_pins(tmp_path) == {}


@pytest.mark.parametrize("text, says", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected an object"),
    ('{"bureau": "101"}', "'bureau' must map to a positive integer node ID"),
    ('{"bureau": 0}', "'bureau' must map to a positive integer node ID"),
    ('{"bureau": true}', "'bureau' must map to a positive integer node ID"),
    ('{"lender": 5, "bureau": 5}', "node 5 is pinned to both 'lender' and 'bureau'"),
])
def test_a_malformed_pins_file_is_refused_naming_the_file(tmp_path, text, says):
    (tmp_path / PINS_FILE).write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_pins(tmp_path)
    assert str(tmp_path / PINS_FILE) in str(caught.value) and says in str(caught.value)


def test_the_rules_of_a_pin():
    pins = NodePins(pinned_nodes({"bureau": 7}))
    assert pins.check(7, "bureau") is None  # the pinned node
    assert pins.check(9, "social") is None  # an unpinned party, taken at its word
    second = pins.check(9, "bureau")
    assert (second.node_id, second.claimed, second.pinned_node, second.pinned_to) == (
        9, "bureau", 7, None)
    other = pins.check(7, "social")
    assert (other.node_id, other.claimed, other.pinned_to) == (7, "social", "bureau")
    with pytest.raises(ConfigError, match="node 3 is pinned to both"):
        pinned_nodes({"lender": 3, "bureau": 3})


# --- vertical discovery ----------------------------------------------------------------------

def _vertical(tmp_path: Path, pins: dict[str, int] | None, second_as: int = 1):
    """Run a vertical federation on three nodes: the lender, the bureau and a second bureau.

    ``second_as``: the party (an index into lender, bureau) node 102 says it is.
    """
    settings, _ = deploy.compose_settings(VERTICAL)
    parties = ("lender", "bureau")
    clients = party_settings(settings, parties, tmp_path / "parties")
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))
    claims = [0, 1, second_as]
    grid = InProcessGrid(app, 3, node_config=lambda i: {"partition-id": claims[i],
                                                        "num-partitions": 2})
    server = vertical_server_settings(settings, parties, tmp_path / "run", pins=pins)
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(server, outcome), grid)
    return grid, outcome


def _sent_to(grid: InProcessGrid, node: int) -> list[str]:
    return [m.metadata.message_type for m in grid.sent if m.metadata.dst_node_id == node]


def test_without_pins_two_nodes_saying_bureau_still_stop_the_run(tmp_path):
    _, outcome = _vertical(tmp_path, None)
    assert str(outcome.error) == "two nodes both say they are 'bureau'"


def test_a_second_bureau_is_refused_by_name_and_the_pinned_one_trains(tmp_path):
    # Execute: the pin names node 101 as the bureau; node 102 says it is the bureau too
    grid, outcome = _vertical(tmp_path, {"lender": LENDER, "bureau": BUREAU})
    # Assert: the run went on with the pinned bureau
    assert outcome.error is None, outcome.error
    assert outcome.epochs == 1 and outcome.final
    assert set(outcome.parties) == {"lender", "bureau"}
    assert "embed" in " ".join(_sent_to(grid, BUREAU))
    # the second one, pinned to no party, got no message at all, and is named in the outcome
    assert _sent_to(grid, SECOND) == []
    (refused,) = outcome.refused_nodes
    assert {k: refused[k] for k in ("node_id", "claimed", "pinned_node", "pinned_to")} == {
        "node_id": SECOND, "claimed": None, "pinned_node": None, "pinned_to": None}
    assert f"node {SECOND} is connected but pinned to no party" in refused["reason"]


def test_the_pin_decides_which_of_two_bureaus_is_real(tmp_path):
    grid, outcome = _vertical(tmp_path, {"lender": LENDER, "bureau": SECOND})
    assert outcome.error is None, outcome.error
    assert [r["node_id"] for r in outcome.refused_nodes] == [BUREAU]
    assert _sent_to(grid, BUREAU) == []
    assert "embed" in " ".join(_sent_to(grid, SECOND))


def test_a_pinned_node_that_claims_another_party_is_refused(tmp_path, caplog):
    # node 102 is pinned to 'social' and says it is the bureau
    with caplog.at_level("WARNING", logger="credit_fl"):
        _, outcome = _vertical(tmp_path, {"lender": LENDER, "bureau": BUREAU,
                                          "social": SECOND})
    assert outcome.error is None, outcome.error
    (refused,) = outcome.refused_nodes
    assert (refused["node_id"], refused["claimed"], refused["pinned_to"]) == (
        SECOND, "bureau", "social")
    assert f"node {SECOND} says it is 'bureau' but is pinned to 'social'" in caplog.text


def test_a_pinned_node_that_never_connects_is_named(tmp_path):
    settings, _ = deploy.compose_settings(VERTICAL)
    server = vertical_server_settings(settings, ("lender", "bureau"), tmp_path, pins={
        "lender": LENDER, "bureau": 999})
    server = replace(server, federation=replace(server.federation, connect_timeout=0.3))
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(server, outcome),
                   InProcessGrid(ClientApp(), 3))
    assert "the pinned nodes of ['bureau'] did not connect within" in str(outcome.error)


# --- horizontal discovery --------------------------------------------------------------------

def test_a_second_lender_of_a_pinned_name_is_refused_and_never_trains(tmp_path):
    settings, _ = deploy.compose_settings(HORIZONTAL)
    _, _, rows = lender_rows(settings)
    names = tuple(rows)
    clients = lender_settings(settings, names, tmp_path / "parties")
    any_rows = next(iter(rows.values()))
    server = horizontal_server_settings(settings, len(names), any_rows.numeric,
                                        any_rows.categorical, tmp_path,
                                        pins={names[0]: LENDER, names[1]: BUREAU})

    def source(context):
        name = names[int(context.node_config["partition-id"])]
        return clients[name], rows[name]

    claims = [0, 1, 1]  # node 102 says it is the second lender too
    grid = InProcessGrid(make_client_app(source), 3,
                         node_config=lambda i: {"partition-id": claims[i], "num-partitions": 2})
    outcome = FederationOutcome()
    run_server_app(make_server_app(server, outcome), grid)
    assert outcome.error is None, outcome.error
    assert [r["node_id"] for r in outcome.refused_nodes] == [SECOND]
    assert _sent_to(grid, SECOND) == []  # pinned to no lender: no message at all
    assert outcome.history[-1]["clients"] == 2
    assert set(outcome.reports) == set(names)


# --- scoring discovery -----------------------------------------------------------------------

def _hello_only(claims: dict[int, str]) -> ClientApp:
    """A scoring node that answers hello only, as ``claims[node]`` (the server's checks alone)."""
    app = ClientApp()

    @app.query(ScoringMessage.HELLO.action)
    def _hello(msg: Message, context) -> Message:
        party = claims[context.node_id]
        info = {"model_id": "m" * 32, "passive": ["bureau"], "rows": 5}
        return Message(RecordDict({STATUS: ConfigRecord({"party": party}),
                                   CONFIG: ConfigRecord({"info": json.dumps(info)})}),
                       reply_to=msg)

    return app


def _scoring_hello(pins: dict[str, int] | None):
    claims = {LENDER: "lender", BUREAU: "bureau", SECOND: "bureau"}
    grid = InProcessGrid(_hello_only(claims), 3)
    settings = ScoringServerSettings(3, pinned_nodes=pinned_nodes(pins))
    out = ScoringOutcome()
    router = Router(grid, out, settings.round_timeout, None)
    with serving():
        _, passive, _ = hello(grid, router, out, settings)
    return router, out, passive


def test_scoring_refuses_a_second_bureau_by_name_and_keeps_the_pinned_one():
    with pytest.raises(FederationError, match="two nodes both say they are 'bureau'"):
        _scoring_hello(None)
    router, out, passive = _scoring_hello({"lender": LENDER, "bureau": BUREAU})
    assert passive == ("bureau",) and router.node == {"lender": LENDER, "bureau": BUREAU}
    assert [(r["node_id"], r["claimed"], r["pinned_node"]) for r in out.refused_nodes] == [
        (SECOND, None, None)]
    assert set(out.communication) == {"lender", "bureau"}  # traffic counted per party only
