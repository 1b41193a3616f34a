"""Issue 36: the deployed components ask less often while they wait long, never much later.

The rule (:func:`federation.polling.next_wait`): a fortieth of the time waited, at least the
component's interval, at most its cap. Checked on a fake clock: the deployed server's polls for
replies (:class:`fl_server.audited_grid.AuditedGrid`) and a SuperNode's idle sleep.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.unit


class _Clock:
    """A monotonic clock that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now, self.slept = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _SlowReply:
    """A Grid whose one reply is there ``after`` seconds of the clock after the push."""

    def __init__(self, clock: _Clock, after: float) -> None:
        self.clock, self.after, self.pulls, self.pushed = clock, after, 0, 0.0

    def get_node_ids(self) -> list[int]:
        return [101]

    def push_messages(self, messages) -> list[str]:
        self.pushed = self.clock.now
        return ["m101" for _ in messages]

    def pull_messages(self, ids) -> list:
        from flwr.app import Message, Metadata, RecordDict

        self.pulls += 1
        if self.clock.now - self.pushed < self.after:
            return []
        return [Message(RecordDict(), metadata=Metadata(  # type: ignore[call-overload]
            run_id=1, message_id="r101", src_node_id=101, dst_node_id=0,
            reply_to_message_id="m101", group_id="", created_at=time.time(), ttl=0,
            message_type="train.embed"))]


def _wait_for_reply(monkeypatch: pytest.MonkeyPatch, after: float, cap: float | None,
                    grid_type: type[_SlowReply] | None = None
                    ) -> tuple[_SlowReply, _Clock, float]:
    from flwr.app import Message, RecordDict

    from fl_server import audited_grid
    from fl_server.audited_grid import AuditedGrid
    from tests.fake_grid import serving

    clock = _Clock()
    monkeypatch.setattr(audited_grid.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(audited_grid.time, "sleep", clock.sleep)
    grid = (grid_type or _SlowReply)(clock, after)
    audited = AuditedGrid(grid, None, poll=0.05, cap=cap)  # type: ignore[arg-type]
    with serving():
        (reply,) = audited.send_and_receive([Message(RecordDict(), dst_node_id=101,
                                                     message_type="train.embed")])
    assert reply.metadata.reply_to_message_id == "m101"
    return grid, clock, clock.now - grid.pushed


def test_the_deployed_server_polls_less_while_it_waits_long(monkeypatch) -> None:
    # Execute: a reply that takes 60 s (a blinding step at 100,000 customers, under load)
    fixed, _, fixed_seen = _wait_for_reply(monkeypatch, 60.0, cap=None)
    grown, clock, grown_seen = _wait_for_reply(monkeypatch, 60.0, cap=0.5)
    # Assert: a fixed 0.05 s asks 1,200 times; growing to a fortieth of the wait (at most
    # 0.5 s) asks 40 times in the first 2 s, about 40 ln 10 = 92 up to 20 s, then twice a
    # second: about 212, and sees the reply at most a cap later
    assert fixed.pulls == pytest.approx(60 / 0.05, abs=2)
    assert grown.pulls < 250
    assert 60.0 <= grown_seen <= 60.0 + 0.5 and fixed_seen <= 60.05 + 1e-9
    assert clock.slept[:20] == [0.05] * 20  # the first second: the base interval
    assert max(clock.slept) == 0.5


def test_a_quick_reply_is_seen_as_quickly_as_before(monkeypatch) -> None:
    # a reply within the first second: every look 0.05 s apart, as with the fixed interval
    grid, clock, seen = _wait_for_reply(monkeypatch, 0.3, cap=0.5)
    assert set(clock.slept) == {0.05} and seen == pytest.approx(0.3, abs=0.05 + 1e-9)


class _AskFails(_SlowReply):
    """The same Grid, but asking the SuperLink which nodes are online always fails."""

    def get_node_ids(self) -> list[int]:
        raise ConnectionError("the SuperLink did not answer GetNodes")


def test_a_failed_ask_which_nodes_are_online_ends_nothing(monkeypatch) -> None:
    # a SuperLink that cannot say who is online: the server keeps pulling, says so once
    # (the module's logger itself is watched: another test's logging set-up may stop
    # propagation to pytest's capture)
    from fl_server import audited_grid

    warned: list[str] = []
    monkeypatch.setattr(audited_grid.log, "warning",
                        lambda message, *args: warned.append(message % args))
    grid, _, seen = _wait_for_reply(monkeypatch, 3.0, cap=0.5, grid_type=_AskFails)
    assert seen == pytest.approx(3.0, abs=0.5 + 1e-9) and grid.pulls > 5
    assert len(warned) == 1 and "which nodes are online (ConnectionError" in warned[0]


def test_a_supernode_asks_less_often_when_idle_and_quickly_again_once_busy(
        monkeypatch) -> None:
    from federation.flower_compat import deployment

    clock = _Clock()
    monkeypatch.setattr(deployment.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(deployment.time, "sleep", clock.sleep)
    idle = deployment._CappedSleep(0.2)
    for _ in range(200):  # Flower's idle sleep (3 s) after each empty ask
        idle.sleep(3)
    # the base while messages may come, then a fortieth of the idle time, at most the cap
    assert clock.slept[0] == 0.2 and clock.slept[-1] == deployment.IDLE_POLL_CAP
    assert sum(1 for s in clock.slept if s == 0.2) == pytest.approx(8 / 0.2, abs=1)
    idle.sleep(0.5)  # a message came: the wait for the worker's reply
    idle.sleep(3)
    assert clock.slept[-2:] == [deployment.REPLY_POLL, 0.2]  # quick again
