"""Issue 19, item 5: the alignment's channel keys are signed with the nodes' own keys.

An active server routes the X25519 public keys between the lender and each party; one that
swapped them for its own could open the sealed intersection. Here the server (the grid) is the
attacker: it replaces or strips the lender's key on its way to the bureau, and the bureau's on
its way back.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import Message

from credit_fl.vertical import VerticalSimulationSource, party_settings
from experiments.deploy import federation as deploy
from federation.alignment import ChannelKeys
from federation.credentials import make_node_key
from federation.protocol import CONFIG, VerticalMessage
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from tests.fake_grid import InProcessGrid, run_server_app
from tests.routed import swap

pytestmark = pytest.mark.unit

VERTICAL = ["federation=vertical", "privacy=off", "data.n_customers=400", "train.epochs=1",
            "federation.parties=[lender,bureau]", "verbose=false"]
PARTIES = ("lender", "bureau")


def _keys(tmp_path, names=PARTIES):
    peers = tmp_path / "peer-keys"
    peers.mkdir(exist_ok=True)
    for name in names:
        if (tmp_path / "keys" / name).exists():
            continue  # the node keeps its key across runs
        public = make_node_key(tmp_path / "keys" / name)
        (peers / f"{name}.pub").write_bytes(public.read_bytes())
    return peers


def _run(tmp_path, tamper=None, signed=("lender", "bureau"), run="run-1"):
    settings, _ = deploy.compose_settings(VERTICAL)
    peers = _keys(tmp_path)
    clients = party_settings(settings, PARTIES, tmp_path / run / "parties")
    clients = {p: dataclasses.replace(c, channel_keys=ChannelKeys(
        str(tmp_path / "keys" / p), str(peers), run)) if p in signed else c
        for p, c in clients.items()}
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))

    def through_the_server(message: Message, context):
        if tamper is not None:
            tamper(message)
        return app(message, context)

    grid = InProcessGrid(through_the_server, len(PARTIES))
    outcome = VerticalOutcome()
    run_server_app(make_vertical_server_app(
        vertical_server_settings(settings, PARTIES, tmp_path / run), outcome), grid)
    return outcome


def _attackers_key(_: bytes) -> bytes:
    return X25519PrivateKey.generate().public_key().public_bytes_raw()


def test_signed_keys_align_as_before(tmp_path):
    outcome = _run(tmp_path)
    assert outcome.error is None, outcome.error
    assert outcome.alignment["bureau"]["intersection"] > 0


def test_a_server_that_swaps_the_lenders_key_is_refused_by_the_party(tmp_path):
    outcome = _run(tmp_path, swap(VerticalMessage.PSI_ANSWER, "key", _attackers_key))
    assert "bureau" in str(outcome.error)
    assert "lender's channel key is not signed" in str(outcome.error)


def test_a_server_that_swaps_the_partys_key_is_refused_by_the_lender(tmp_path):
    outcome = _run(tmp_path, swap(VerticalMessage.PSI_INTERSECT, "bureau.key",
                                   _attackers_key))
    assert "bureau's channel key is not signed" in str(outcome.error)


def test_a_stripped_signature_is_refused(tmp_path):
    outcome = _run(tmp_path, swap(VerticalMessage.PSI_ANSWER, "key", lambda k: k[:32]))
    assert "not signed" in str(outcome.error)


def test_a_key_signed_by_another_party_or_for_another_run_is_refused(tmp_path):
    captured = {}

    def capture(message: Message) -> None:
        if message.metadata.message_type == str(VerticalMessage.PSI_INTERSECT):
            captured["bureau"] = bytes(message.content[CONFIG]["bureau.key"])
        if message.metadata.message_type == str(VerticalMessage.PSI_ANSWER):
            captured["lender"] = bytes(message.content[CONFIG]["key"])
    assert _run(tmp_path, capture).error is None
    # the bureau's own, validly signed key, handed to the bureau as if it were the lender's
    mirrored = _run(tmp_path, swap(VerticalMessage.PSI_ANSWER, "key",
                                    lambda _: captured["bureau"]), run="run-2")
    assert "lender's channel key is not signed" in str(mirrored.error)
    # the lender's key of run 1, replayed in run 2
    replayed = _run(tmp_path, swap(VerticalMessage.PSI_ANSWER, "key",
                                    lambda _: captured["lender"]), run="run-2b")
    assert "lender's channel key is not signed" in str(replayed.error)


def test_a_genuine_key_with_the_servers_own_psi_messages_is_refused(tmp_path):
    # the server asks the bureau about IDs of its choosing, with the lender's signed key
    from federation.alignment import LenderAlignment

    guesses = LenderAlignment([f"guess-{i}" for i in range(50)]).request()[0]
    probe = _run(tmp_path, swap(VerticalMessage.PSI_ANSWER, "request", lambda _: guesses))
    assert "lender's channel key is not signed" in str(probe.error)
    # or hands the lender a set of its own to count the lender's applicants against
    fake = _run(tmp_path, swap(VerticalMessage.PSI_INTERSECT, "bureau.response",
                                lambda r: r[:-1] + bytes([r[-1] ^ 1])), run="run-x")
    assert "bureau's channel key is not signed" in str(fake.error)


def test_a_second_psi_answer_in_a_run_is_refused(tmp_path):
    from credit_data.errors import AlignmentError
    from federation.alignment import LenderAlignment
    from fl_client.vertical_task import NodeState, PassiveNode
    from privacy.randomness import NoiseSource
    from privacy.settings import PrivacySettings
    from tests.test_secret_randomness import _rows, _settings

    node = PassiveNode(_settings("bureau", PrivacySettings()), _rows("bureau"),
                       NoiseSource.fresh())
    state = NodeState()
    node.setup(state, 10)
    request, key = LenderAlignment([f"c{i}" for i in range(10)]).request()
    node.answer(state, request, key)
    with pytest.raises(AlignmentError, match="already answered"):
        node.answer(state, request, key)
