"""The PSI a slice at a time (issue 36, item 2): the same messages as one call, byte for byte.

Each step is compared with ``openmined.psi``'s one call on the whole set, under the same keys,
for slices smaller than, equal to and larger than the set, and for an empty set.
"""

from __future__ import annotations

import numpy as np
import private_set_intersection.python as psi
import pytest

from credit_data.errors import AlignmentError
from federation.alignment import LenderAlignment, PartyAlignment
from federation.psi_slices import answered_request, blinded_request, found_rows

pytestmark = pytest.mark.unit

IDS = [f"C{i:05d}" for i in range(0, 300, 3)]  # 100 applicants
PARTY = [f"C{i:05d}" for i in range(0, 300, 5)] + ["other"]  # 20 of them shared


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return (bytes(psi.client.CreateWithNewKey(True).GetPrivateKeyBytes()),
            bytes(psi.server.CreateWithNewKey(True).GetPrivateKeyBytes()))


def _parse(kind: type, blob: bytes):
    message = kind()
    message.ParseFromString(blob)
    return message


@pytest.mark.parametrize("slice_ids", [1, 7, 100, 1000])
def test_each_step_sends_what_one_call_sends(keys, slice_ids):
    # Prepare
    client = psi.client.CreateFromKey(keys[0], True)
    server = psi.server.CreateFromKey(keys[1], True)
    setup = _parse(psi.ServerSetup, server.CreateSetupMessage(
        1e-9, len(IDS), PARTY).SerializeToString())
    # Execute
    request = blinded_request(client, IDS, slice_ids=slice_ids)
    response = answered_request(server, _parse(psi.Request, request), slice_ids=slice_ids)
    rows = found_rows(client, setup, _parse(psi.Response, response), slice_ids=slice_ids)
    # Assert: the one-call messages, and the shared applicants worked out from the lists
    whole = client.CreateRequest(IDS)
    assert request == whole.SerializeToString()
    assert response == server.ProcessRequest(whole).SerializeToString()
    assert rows.tolist() == [i for i, c in enumerate(IDS) if c in set(PARTY)]
    assert len(rows) == 20


def test_an_empty_set_makes_the_empty_messages(keys):
    client = psi.client.CreateFromKey(keys[0], True)
    server = psi.server.CreateFromKey(keys[1], True)
    request = blinded_request(client, [], slice_ids=4)
    assert request == client.CreateRequest([]).SerializeToString()
    parsed = _parse(psi.Request, request)
    assert parsed.reveal_intersection and len(parsed.encrypted_elements) == 0
    assert answered_request(server, parsed, slice_ids=4) == b""


def test_the_party_receives_its_positions_and_refuses_a_stranger():
    lender, bureau = LenderAlignment(IDS), PartyAlignment("bureau", PARTY)
    setup = bureau.setup(lender.n_rows)
    request, lender_key = lender.request()
    response, party_key = bureau.answer(request, lender_key)
    sealed, known = lender.intersect("bureau", setup, response, party_key)
    positions = bureau.receive(sealed)
    assert [PARTY[p] for p in positions] == [c for c, k in zip(IDS, known, strict=True) if k]
    assert np.array_equal(np.flatnonzero(known), [i for i, c in enumerate(IDS) if c in PARTY])
    stranger = PartyAlignment("bureau", PARTY[1:], key=bureau.channel_key)
    with pytest.raises(AlignmentError, match="bureau: the lender sent 1 IDs this party does not"):
        stranger.receive(sealed)
    with pytest.raises(AlignmentError, match="bureau: its own IDs repeat"):
        PartyAlignment("bureau", [*PARTY, PARTY[0]])  # before anything is blinded or answered


def test_a_request_that_does_not_reveal_the_intersection_is_not_sliced():
    server = psi.server.CreateWithNewKey(False)
    request = psi.Request()
    request.ParseFromString(psi.client.CreateWithNewKey(False).CreateRequest(IDS)
                            .SerializeToString())
    with pytest.raises(ValueError, match="without reveal_intersection"):
        answered_request(server, request, slice_ids=4)
