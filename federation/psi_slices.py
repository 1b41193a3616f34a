"""The PSI's elliptic-curve steps a slice of the set at a time (issue 36: bounded memory).

``openmined.psi`` blinds, answers and looks up a whole set in one call, and holds every ID of
it several times over while it does: the input strings, the points, the C++ and the Python
protobuf of the message, and the copies between them (150 to 250 bytes an ID a step; measured
by ``python experiments/bench.py psi_memory``). These functions make the same calls on
:data:`PSI_SLICE` IDs at a time and join the slices' messages into the message one call gives,
byte for byte: a repeated field of a protobuf serialises as its elements one after the other,
so the serialised slices, joined, are the serialised whole (the lender's request sends its
``reveal_intersection`` flag, field 1, once, before its elements, field 2). Each step then
holds the whole set once, as the message it sends or received (35 bytes an ID), and one slice
of working copies. Blinding is deterministic under a key, so nothing a party sends changes.
A party's setup (its whole set blinded into one compressed set, which the lender looks every
applicant up in) is still one call: slicing it would send several sets.

>>> import private_set_intersection.python as psi
>>> client, server = psi.client.CreateWithNewKey(True), psi.server.CreateWithNewKey(True)
>>> ids = [f"id{i}" for i in range(7)]
>>> request = blinded_request(client, ids, slice_ids=3)
>>> parsed = psi.Request()
>>> _ = parsed.ParseFromString(request)
>>> len(parsed.encrypted_elements), parsed.reveal_intersection
(7, True)
>>> response = answered_request(server, parsed, slice_ids=3)
>>> setup = psi.ServerSetup()
>>> _ = setup.ParseFromString(server.CreateSetupMessage(1e-9, 7, ["id5", "id1", "x"]
...                                                     ).SerializeToString())
>>> answer = psi.Response()
>>> _ = answer.ParseFromString(response)
>>> found_rows(client, setup, answer, slice_ids=3).tolist()
[1, 5]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import private_set_intersection.python as psi

__all__ = ["PSI_SLICE", "answered_request", "blinded_request", "found_rows"]

PSI_SLICE = 65_536
"""IDs per call into ``openmined.psi``: its working copies are about 16 MB a slice."""


def _starts(n: int, slice_ids: int) -> range:
    """Where each slice starts (one empty slice for an empty set, as one call would make)."""
    return range(0, max(n, 1), max(slice_ids, 1))


def blinded_request(client: psi.client, ids: Sequence[str], *,
                    slice_ids: int = PSI_SLICE) -> bytes:
    """Return the serialised PSI request for ``ids``, blinded a slice at a time.

    The same bytes as ``client.CreateRequest(ids).SerializeToString()``.
    """
    parts = []
    for start in _starts(len(ids), slice_ids):
        part = client.CreateRequest(list(ids[start:start + slice_ids]))
        if start:  # the flag (field 1) once, before every element (field 2)
            part.ClearField("reveal_intersection")
        parts.append(part.SerializeToString())
    return b"".join(parts)


def answered_request(server: psi.server, request: psi.Request, *,
                     slice_ids: int = PSI_SLICE) -> bytes:
    """Return the serialised response to ``request``, answered a slice at a time.

    The same bytes as ``server.ProcessRequest(request).SerializeToString()`` for a request that
    reveals the intersection (the alignment's): without it the server shuffles its answer, and
    slices would be shuffled apart (other bytes, and each answer's slice told), so it is refused.
    """
    if not request.reveal_intersection:
        raise ValueError("a PSI request without reveal_intersection is answered in one call, "
                         "not a slice at a time (its answer is shuffled as a whole)")
    values = request.encrypted_elements
    if len(values) <= slice_ids:  # one slice: the request as it came
        return server.ProcessRequest(request).SerializeToString()
    parts = []
    for start in _starts(len(values), slice_ids):
        part = psi.Request()
        part.reveal_intersection = request.reveal_intersection
        part.encrypted_elements.extend(values[start:start + slice_ids])
        parts.append(server.ProcessRequest(part).SerializeToString())
    return b"".join(parts)


def found_rows(client: psi.client, setup: psi.ServerSetup, response: psi.Response, *,
               slice_ids: int = PSI_SLICE) -> np.ndarray:
    """Return the positions in ``response`` whose IDs the party's ``setup`` holds, in order.

    The same positions as ``client.GetIntersection(setup, response)``, looked up a slice of
    the response at a time in the party's compressed set.
    """
    values = response.encrypted_elements
    if len(values) <= slice_ids:  # one slice: the response as it came
        return np.sort(np.asarray(client.GetIntersection(setup, response), dtype=np.int64))
    hits = [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(values), max(slice_ids, 1)):
        part = psi.Response()
        part.encrypted_elements.extend(values[start:start + slice_ids])
        hits.append(start + np.asarray(client.GetIntersection(setup, part), dtype=np.int64))
    return np.sort(np.concatenate(hits))
