"""A killed node (issue 29, item 4): its children die with it, the run fails within a bound
naming the party, the node restarts on its port and rejoins, and ``down`` says what it stopped.

Flower's SuperLink answers a message to a node that is offline with a ``Node Unavailable``
error reply; a node is offline once its SuperNode left (it says so when it stops) or sent no
heartbeat for twice the interval it declared (:data:`NODE_HEARTBEAT`, 10 s here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from credit_fl.vertical import VerticalSimulationSource, party_settings
from experiments.deploy import federation as deploy
from federation.flower_compat.deployment import NODE_HEARTBEAT, SENDER_CHECK
from federation.protocol import VerticalMessage
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from tests.conftest import REPO
from tests.fake_grid import InProcessGrid, run_server_app
from tests.run_progress import STALL, wait_while_progressing, written

BOUND = 2 * NODE_HEARTBEAT + SENDER_CHECK + 10
"""Seconds from a node's death to the run's failure: the SuperLink marks a node offline two
heartbeat intervals after its last heartbeat at the latest (at once when its SuperNode leaves),
the Grid asks whether a late reply's sender is online every ``SENDER_CHECK`` s (a SuperNode
killed between pushing its reply and the reply's objects; Flower alone retried those objects
for 110-117 s, then named no node), plus the run's own shutdown."""


def _gone(pid: int) -> bool:
    """Whether ``pid`` is no longer a live process (gone, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait(condition, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until ``condition()`` held, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(step)
    return None


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- a node's children die with it --------------------------------------------------------
PARENT = """
import subprocess, sys, time
from deployment.lifeline import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         preexec_fn=die_with_parent() if sys.argv[1] == "yes" else None)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.unit
@pytest.mark.parametrize("lifeline", ["yes", "no"])
def test_a_child_started_with_the_lifeline_dies_when_its_parent_is_killed(lifeline) -> None:
    # Prepare: a parent that starts a sleeping child, with or without the parent-death signal
    parent = subprocess.Popen([sys.executable, "-c", PARENT, lifeline], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        # Execute
        parent.kill()
        parent.wait()
        # Assert: with the lifeline the child is gone at once; without, it is an orphan
        if lifeline == "yes":
            assert _wait(lambda: _gone(child), 3) is not None
        else:
            time.sleep(1)
            assert not _gone(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


HOLDS_A_ZOMBIE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         start_new_session=True)
os.kill(child.pid, signal.SIGKILL)
time.sleep(0.5)  # dead; its status never collected while this parent lives
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.unit
def test_a_group_left_only_with_a_zombie_counts_as_stopped() -> None:
    # Prepare: a process group whose one process is dead, its status not yet collected by its
    # parent (as an orphaned SuperNode's, until the init process collects it: 2 s later here,
    # and never where a container's init collects nothing)
    holder = subprocess.Popen([sys.executable, "-c", HOLDS_A_ZOMBIE], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        group = int(holder.stdout.readline())  # type: ignore[union-attr]
        os.killpg(group, 0)  # the group is still there for the kernel
        # Execute
        outcome = deploy._stop([group], timeout=1)
        # Assert: nothing of it runs, and down does not report it as left running
        assert not deploy._alive(group) and outcome == {group: deploy.GONE}
        assert _gone(group)
    finally:
        holder.kill()
        holder.wait()


def _start_node(tmp_path: Path, port: int, name: str) -> subprocess.Popen:
    """A bureau node pointed at a closed port: its SuperNode serves the Runtime API on ``port``
    and keeps trying to reach the SuperLink (many retries)."""
    data = tmp_path / "bureau.csv"
    if not data.is_file():
        data.write_text("customer_id,x\n1,2\n")
    closed = deploy._free_port()  # nothing listens there
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "deployment.node", "--party", "bureau", "--data", str(data),
         "--superlink", f"127.0.0.1:{closed}", "--insecure", "--state-dir",
         str(tmp_path / name), "--runtime-port", str(port), "--max-retries", "1000",
         "--max-epsilon", "3"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_a_killed_nodes_supernode_dies_with_it_and_frees_its_port(tmp_path: Path) -> None:
    port = deploy._free_port()
    node = _start_node(tmp_path, port, "first")
    again = None
    try:
        assert _wait(lambda: _listening(port) and _children(node.pid), 60, 0.2) is not None, \
            (tmp_path / "first.log").read_text()[-2000:]
        (supernode,) = _children(node.pid)
        node.kill()  # SIGKILL: the node cannot stop its SuperNode itself
        node.wait()
        took = _wait(lambda: _gone(supernode) and _port_free(port), 10)
        assert took is not None, "the SuperNode outlived its node, or its port stayed taken"
        # a node started again with the same command takes the port
        again = _start_node(tmp_path, port, "second")
        assert _wait(lambda: _listening(port) and _children(again.pid), 60, 0.2) is not None, \
            (tmp_path / "second.log").read_text()[-2000:]
        assert again.poll() is None
    finally:
        for process in (node, again):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_a_node_whose_port_is_taken_says_so(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        node = _start_node(tmp_path, port, "taken")
        code = node.wait(timeout=120)
    assert code != 0
    out = (tmp_path / "taken.log").read_text()
    assert f"--runtime-port {port}: the port is in use" in out, out[-2000:]
    assert "SuperLink" not in out.split("error:")[-1]  # not blamed on the coordinator


# --- the coordinator names a party that stopped answering ---------------------------------
@pytest.mark.unit
def test_a_party_whose_node_is_unavailable_ends_the_vertical_round_named(tmp_path) -> None:
    # Prepare: the bureau's node is gone from the second training exchange on, as the
    # SuperLink reports it (an error reply from the SuperLink, not from the node)
    settings, _ = deploy.compose_settings(
        ["federation=vertical", "privacy=off", "data.n_customers=600", "train.epochs=2",
         "federation.parties=[lender,bureau]", "verbose=false"])
    parties = ("lender", "bureau")
    app = make_vertical_client_app(VerticalSimulationSource(
        party_settings(settings, parties, tmp_path / "parties"), settings.data, settings.seed))
    embeds: list[int] = []

    def gone(m) -> bool:
        if m.metadata.message_type == str(VerticalMessage.EMBED) and m.metadata.dst_node_id == 101:
            embeds.append(1)
            return len(embeds) > 1
        return False

    grid = InProcessGrid(app, 2, unavailable=gone)
    outcome = VerticalOutcome()
    # Execute
    run_server_app(make_vertical_server_app(vertical_server_settings(settings, parties,
                                                                     tmp_path), outcome), grid)
    # Assert: the run ended at that exchange, naming the party and its node, not the SuperLink
    assert outcome.error is not None and len(embeds) == 2
    message = str(outcome.error)
    assert message.startswith("train.embed: party 'bureau' (node 101) stopped answering"), message
    assert "restarts the 'bureau' node" in message
    assert "node 1)" not in message  # the SuperLink's own id is never the one named


# --- end to end: kill -9, the bound, restart, down -----------------------------------------
@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("liveness_federation")
    with deploy.local_federation(directory, ["data.n_customers=1000", "train.epochs=2",
                                             "verbose=false", "privacy=off"]) as fed:
        yield fed


def _kill_during_training(fed: deploy.Federation, kill) -> tuple[float, BaseException | None]:
    """Start a long run, call ``kill()`` once the bureau trains; return (seconds from the
    kill to the run's end, the run's failure)."""
    failure: list[BaseException] = []
    before = set((fed.root / "runs").glob("*")) if (fed.root / "runs").is_dir() else set()

    def long_run() -> None:
        try:
            deploy.run(fed.root, ["train.epochs=200", "train.early_stopping=false"])
        except BaseException as exc:  # noqa: BLE001 (the test reads it)
            failure.append(exc)

    running = threading.Thread(target=long_run)
    running.start()

    def training() -> bool:
        new = sorted(set((fed.root / "runs").glob("*")) - before)
        if not new:
            return False
        log = fed.node_state("bureau") / new[0].name / "bureau" / "audit.jsonl"
        return log.is_file() and log.read_text().count("train.embed") >= 3

    started = wait_while_progressing(lambda: training() or not running.is_alive(),
                                     lambda: written([fed.root / "runs", fed.root / "nodes"]))
    why = failure[0] if failure else f"it wrote nothing for {STALL} s"
    assert started and running.is_alive(), f"the run did not start training: {why}"
    kill()
    killed = time.monotonic()
    running.join(timeout=BOUND + 120)
    assert not running.is_alive(), "the run went on after the bureau's node was killed"
    return time.monotonic() - killed, failure[0] if failure else None


@pytest.mark.slow
def test_a_killed_node_fails_the_run_in_bounded_time_named_and_rejoins(federation) -> None:
    fed = deploy.Federation.load(federation.root)
    node = fed.pids["bureau"]
    (supernode,) = _children(node)
    took, failure = _kill_during_training(fed, lambda: os.kill(node, signal.SIGKILL))
    print(f"kill -9 of the bureau's node: the run failed {took:.1f} s later: {failure}")
    assert failure is not None and "party 'bureau'" in str(failure), failure
    assert "stopped answering" in str(failure)
    assert took < BOUND
    assert _gone(supernode)  # no orphan answers for the dead node
    # the partner starts the node again with the same command: it rejoins, the next run works
    deploy.restart_node(fed.root, "bureau")
    assert "metrics" in deploy.run(fed.root)


@pytest.mark.slow
def test_a_node_lost_with_its_supernode_fails_the_run_within_two_heartbeats(federation):
    # the whole node at once (a machine lost): no SuperNode says goodbye, the heartbeat lapses
    fed = deploy.Federation.load(federation.root)
    group = fed.pids["bureau"]
    took, failure = _kill_during_training(fed, lambda: os.killpg(group, signal.SIGKILL))
    print(f"kill -9 of the bureau's node and SuperNode: the run failed {took:.1f} s later: "
          f"{failure}")
    assert failure is not None and "party 'bureau'" in str(failure), failure
    assert "stopped answering" in str(failure)  # its last reply's objects too, if they were lost
    assert took < BOUND
    # down says what it stopped and what was already gone
    fed = deploy.restart_node(fed.root, "bureau")
    social = fed.pids["social"]
    os.killpg(social, signal.SIGKILL)
    assert _wait(lambda: not deploy._alive(social), 10) is not None
    stopping = deploy.down(fed.root)
    assert stopping.gone == ["social"] and not stopping.left
    assert set(stopping.stopped) == {"superlink", "serverapp-launcher", "lender", "bureau"}
    assert not (fed.root / deploy.STATE).exists()
    assert "already gone (nothing to stop): social" in stopping.describe()


class _GoneAfterPush:
    """A Grid whose node 102 goes offline once the messages are out, and whose pull would hang
    on the SuperLink's own reply for it (as Flower 1.41's deployed Grid does)."""

    def __init__(self) -> None:
        self.online, self.pulled = {101, 102}, []

    def get_node_ids(self) -> list[int]:
        return sorted(self.online)

    def push_messages(self, messages) -> list[str]:
        self.online.discard(102)
        return [f"m{m.metadata.dst_node_id}" for m in messages]

    def pull_messages(self, ids) -> list:
        self.pulled.append(set(ids))
        if "m102" in ids:
            raise AssertionError("pulled the reply for an offline node (Flower retries ~100 s)")
        return []


@pytest.mark.unit
def test_the_grid_answers_for_an_offline_node_before_pulling() -> None:
    from flwr.app import Message, RecordDict

    from fl_server.audited_grid import AuditedGrid
    from tests.fake_grid import serving

    grid = AuditedGrid(_GoneAfterPush(), None, poll=0.01)  # type: ignore[arg-type]
    with serving():
        sent = [Message(RecordDict(), dst_node_id=n, message_type="train.embed")
                for n in (101, 102)]
        replies = grid.send_and_receive(sent, timeout=0.2)
    (reply,) = replies
    assert reply.has_error() and "Node Unavailable" in reply.error.reason
    assert grid.node_of(reply) == 102  # named by where the message went, not the SuperLink
    assert all("m102" not in ids for ids in grid.grid.pulled)


class _RuntimeWithALostReply:
    """A SuperLink's Runtime API holding node 102's reply whose objects never come; node 102
    is online for the first ``online_asks`` asks, then offline."""

    def __init__(self, online_asks: int) -> None:
        self.online_asks, self.pulls = online_asks, 0

    def PullMessages(self, request):  # noqa: N802 (Flower's name)
        from types import SimpleNamespace as NS
        metadata = NS(message_id="reply-102", src_node_id=102, reply_to_message_id="m102")
        return NS(messages_list=[NS(metadata=metadata)],
                  message_object_trees=[NS(object_id="reply-102", children=[])])

    def PullObject(self, request):  # noqa: N802
        from types import SimpleNamespace as NS
        self.pulls += 1
        return NS(object_found=True, object_available=False, object_content=b"")

    def GetNodes(self, request):  # noqa: N802
        from types import SimpleNamespace as NS
        self.online_asks -= 1
        return NS(nodes=[NS(node_id=101)] + ([NS(node_id=102)] if self.online_asks >= 0 else []))


@pytest.mark.unit
def test_a_reply_whose_sender_went_offline_ends_its_object_pull_named() -> None:
    # Prepare: the deployed Grid as the ServerApp gets it, pulling a reply whose objects never
    # come (the SuperNode was killed between pushing the message and its objects)
    from types import SimpleNamespace as NS

    from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
    from flwr.superlink.grid.http_grid import HttpGrid

    from federation.flower_compat.deployment import quick_grid_pulls

    quick_grid_pulls()
    grid = HttpGrid.__new__(HttpGrid)
    runtime = _RuntimeWithALostReply(online_asks=1)
    grid._client, grid._run = runtime, NS(run_id=7)  # type: ignore[assignment]
    grid.node = Node(node_id=1)
    # Execute
    (reply,) = grid.pull_messages(["m102"])
    # Assert: an error reply for that message naming the node as unavailable, after the
    # retries of the ask on which node 102 was still online (Flower gives up after 500)
    assert reply.has_error() and reply.metadata.reply_to_message_id == "m102"
    assert "Node Unavailable: the SuperLink counts node 102" in str(reply.error.reason)
    assert 1 < runtime.pulls < 500 and runtime.online_asks == -1
    assert "PullMessages" not in vars(runtime)  # the Grid's client is left as it was
