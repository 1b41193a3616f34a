"""The deployed Grid's pull check: a failed ask whether a late reply's sender is online ends
nothing; the pull waits under its own deadline, and says so once."""

from __future__ import annotations

import logging

import pytest
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError

from federation.flower_compat import deployment

pytestmark = pytest.mark.unit

SENDER = 7


class FakeGrid:
    """A Grid whose ``get_node_ids`` fails ``failures`` times, then names ``online``."""

    def __init__(self, failures: int, online: tuple[int, ...] = (SENDER,)) -> None:
        self.failures, self.online, self.asked = failures, online, 0

    def get_node_ids(self) -> list[int]:
        self.asked += 1
        if self.asked <= self.failures:
            raise ConnectionError("the SuperLink did not answer GetNodes")
        return list(self.online)


def _late_objects(late: int):
    """A pull of the reply's objects: each object comes after ``late`` unavailable tries."""
    tries: dict[str, int] = {}

    def pull(object_id: str) -> bytes:
        tries[object_id] = tries.get(object_id, 0) + 1
        if tries[object_id] <= late:
            raise ObjectUnavailableError(object_id)
        return object_id.encode()

    return pull


@pytest.fixture
def pulling(monkeypatch):
    """Pull as the deployed Grid does: the reply ``msg`` came from node :data:`SENDER`."""
    monkeypatch.setattr(deployment, "SENDER_CHECK", 0.0)  # ask at every retry

    def start(grid: FakeGrid):
        return deployment._PULLING.set((grid, {"msg": SENDER}))

    tokens = []
    yield lambda grid: tokens.append(start(grid))
    for token in reversed(tokens):
        deployment._PULLING.reset(token)


def test_a_failed_ask_keeps_the_pull_waiting_and_is_logged_once(pulling, caplog):
    # Prepare: the SuperLink fails every ask; the objects come at the fifth try
    grid = FakeGrid(failures=10**6)
    pulling(grid)
    # Execute
    with caplog.at_level(logging.WARNING, logger="credit_fl"):
        got = deployment._pull_reply_objects(["part", "msg"], _late_objects(4))
    # Assert: the reply arrived although each of the asks failed; one warning, naming the node
    assert got == {"part": b"part", "msg": b"msg"}
    assert grid.asked >= 4
    warned = [r for r in caplog.records if "could not ask the SuperLink" in r.getMessage()]
    assert len(warned) == 1 and f"node {SENDER}" in warned[0].getMessage()


def test_a_failed_ask_leaves_the_pulls_own_deadline_in_force(pulling):
    pulling(FakeGrid(failures=10**6))
    with pytest.raises(ObjectPullError, match="retry limit"):
        deployment._pull_reply_objects(["msg"], _late_objects(10**6), max_tries_per_object=3)


def test_a_sender_counted_offline_after_a_failed_ask_still_ends_the_pull(pulling):
    # Prepare: the first ask fails, the second answers that the sender is gone
    grid = FakeGrid(failures=1, online=(3,))
    pulling(grid)
    # Execute, Assert
    with pytest.raises(ObjectPullError, match=f"counts node {SENDER}, the sender of the reply, "
                                              "offline"):
        deployment._pull_reply_objects(["msg"], _late_objects(10**6))
    assert grid.asked == 2
