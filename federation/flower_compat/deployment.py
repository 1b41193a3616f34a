"""A deployment's internals: quicker SuperNode and Grid waits; the party worker's Runtime API.

Flower waits between polls with fixed sleeps and backoffs tuned for long rounds: a SuperNode
with no message sleeps 3 s, and a component that pulls a message whose parts are not stored yet
retries after 1 s, then 2 s, 4 s. Here one message exchange of a vertical epoch takes a fraction
of a second, so those waits would be most of the run. What is sent, to whom, and how it is
authenticated stay Flower's.

The party worker (:mod:`fl_client.executor`) stands in for ``flwr-clientapp``: it calls the
SuperNode's Runtime API as ``flwr-clientapp`` does, through :class:`RuntimeTask` below, and keeps
the app, torch and the party's data loaded between messages.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from flwr.app import Context, Error, Message

from federation.flower_compat import changed, check_engine_versions
from federation.polling import next_wait

log = logging.getLogger("credit_fl")
INITIAL_BACKOFF = 0.02
BACKOFF_CAP = 0.2
ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"
"""The Runtime API call a SuperNode started with a secret answers only when it is signed."""
IDLE_SLEEP = 3.0  # the SuperNode loop's sleep when the SuperLink had no message
FLOWER_HEARTBEAT = 30  # flwr.common.constant.HEARTBEAT_DEFAULT_INTERVAL in flwr 1.41
NODE_HEARTBEAT = 10
"""Seconds between heartbeats a SuperNode of this project declares to the SuperLink (Flower's
minimum, ``HEARTBEAT_MIN_INTERVAL``; its default is 30). Flower's SuperLink marks a node offline
``HEARTBEAT_PATIENCE`` (2) declared intervals after its last heartbeat, and from then on answers
every message to it with a ``Node Unavailable`` error reply: 20 s here, 60 s with Flower's
default. The SuperNode sends one every (10 - 5) x 0.7-0.9 = 3.5-4.5 s."""
REPLY_POLL = 0.02  # waits shorter than the idle sleep: the reply and its objects, local checks


def quick_object_pulls(module: ModuleType) -> None:
    """Make ``module.pull_objects`` (Flower's object puller, as imported there) retry quickly."""
    from flwr.supercore.inflatable import inflatable_utils

    current = getattr(module, "pull_objects", None)
    if current is None:
        raise changed(f"{module.__name__}.pull_objects")
    if isinstance(current, functools.partial):
        return
    module.pull_objects = functools.partial(  # type: ignore[attr-defined]
        inflatable_utils.pull_objects, initial_backoff=INITIAL_BACKOFF,
        backoff_cap=BACKOFF_CAP)


SENDER_CHECK = 1.0
"""Seconds between asks whether the sender of a reply whose objects are late is still online."""
_PULLING: ContextVar[tuple[Any, dict[str, int]] | None] = ContextVar("pulling", default=None)
"""While the deployed Grid pulls replies: the Grid, and each reply's message id -> sender."""


def quick_grid_pulls() -> None:
    """Make the deployed ServerApp's Grid pull reply objects quickly, and only from the living.

    A SuperNode stopped or killed after it pushed a reply but before that reply's objects
    leaves the reply in the SuperLink with parts that never come; Flower's Grid would retry
    them 500 times (about 100 s with quick retries, hours with Flower's own) and then name no
    node. Here the pull of a reply's objects ends once the SuperLink counts its sender offline
    (it left, or its heartbeat lapsed), with a ``Node Unavailable`` reason naming the node.
    """
    check_engine_versions(("flwr",))
    from flwr.superlink.grid import http_grid

    if getattr(http_grid, "pull_objects", None) is not _pull_reply_objects:
        if not callable(getattr(http_grid, "pull_objects", None)):
            raise changed("flwr.superlink.grid.http_grid.pull_objects")
        http_grid.pull_objects = _pull_reply_objects  # type: ignore[attr-defined]
    grid = http_grid.HttpGrid
    if not getattr(grid.pull_messages, "records_senders", False):
        grid.pull_messages = _recording_senders(grid.pull_messages)  # type: ignore[method-assign]


def _recording_senders(pull_messages: Any) -> Any:
    """Wrap ``HttpGrid.pull_messages``: note each pulled reply's sender for its object pull."""

    @functools.wraps(pull_messages)
    def pulling(grid: Any, message_ids: Any) -> Any:
        client = grid._runtime_client  # pylint: disable=protected-access
        senders: dict[str, int] = {}
        pull = client.PullMessages

        def noted(request: Any) -> Any:
            res = pull(request)
            senders.update({m.metadata.message_id: int(m.metadata.src_node_id)
                            for m in res.messages_list})
            return res

        own = "PullMessages" in vars(client)  # an instance's own attribute, or its class's
        token = _PULLING.set((grid, senders))
        client.PullMessages = noted
        try:
            return pull_messages(grid, message_ids)
        finally:
            if own:
                client.PullMessages = pull
            else:
                vars(client).pop("PullMessages", None)
            _PULLING.reset(token)

    pulling.records_senders = True  # type: ignore[attr-defined]
    return pulling


def _online(grid: Any, sender: int, failed: list[bool]) -> set[int] | None:
    """Return the nodes the SuperLink counts online, or None when it could not be asked.

    A failed ask (the SuperLink busy or a connection error) is "unknown": the pull keeps
    retrying under its own deadline, as without the check. Logged once per reply
    (``failed`` holds whether it was).
    """
    try:
        return set(grid.get_node_ids())
    except Exception as exc:  # any failure of the ask: not known, keep waiting
        if not failed[0]:
            failed[0] = True
            log.warning("could not ask the SuperLink whether node %s, the sender of a late "
                        "reply, is online (%s: %s); waiting for the reply's objects under the "
                        "pull's own deadline", sender, type(exc).__name__, exc)
        return None


def _pull_reply_objects(object_ids: list[str], pull_object_fn: Any, **kwargs: Any) -> Any:
    """Flower's ``pull_objects`` with quick retries that end once the reply's sender is offline.

    ``object_ids`` is the reply's object tree after Flower's post-order walk: the message last.
    A failed ask whether the sender is online ends nothing (:func:`_online`).
    """
    from flwr.supercore.inflatable.inflatable_utils import (
        ObjectPullError,
        ObjectUnavailableError,
        pull_objects,
    )

    pulling = _PULLING.get()
    sender = pulling[1].get(object_ids[-1]) if pulling is not None and object_ids else None
    pull = pull_object_fn
    if pulling is not None and sender is not None:
        grid, asked, failed = pulling[0], [time.monotonic()], [False]
        checking = threading.Lock()  # Flower pulls a reply's objects in parallel threads

        def pull(object_id: str) -> Any:
            try:
                return pull_object_fn(object_id)
            except ObjectUnavailableError:
                with checking:
                    if time.monotonic() - asked[0] >= SENDER_CHECK:
                        asked[0] = time.monotonic()
                        online = _online(grid, sender, failed)
                        if online is not None and sender not in online:
                            raise ObjectPullError(object_id, (
                                f"Node Unavailable: the SuperLink counts node {sender}, the "
                                "sender of the reply, offline")) from None
                raise

    return pull_objects(object_ids, pull, **{"initial_backoff": INITIAL_BACKOFF,
                                             "backoff_cap": BACKOFF_CAP, **kwargs})


IDLE_POLL_CAP = 2.0
"""The longest a SuperNode of this project sleeps between two asks for a message (when idle)."""


class _CappedSleep:
    """Stands in for the ``time`` module inside Flower's SuperNode loop only.

    The idle sleep is ``cap`` (``--poll-interval``) while the node is busy, then a fortieth of
    the time since its last message, up to :data:`IDLE_POLL_CAP` (:func:`next_wait`). A shorter
    sleep than the idle one is a wait for the worker's reply: the node has a message.
    """

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.busy_at = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if seconds < IDLE_SLEEP:
            self.busy_at = time.monotonic()
            time.sleep(min(seconds, REPLY_POLL))
            return
        idle = time.monotonic() - self.busy_at
        time.sleep(min(seconds, next_wait(idle, self.cap, IDLE_POLL_CAP)))


def declare_heartbeat(interval: int) -> None:
    """Make this process's SuperNode declare, and keep, a heartbeat of ``interval`` seconds.

    Flower 1.41 reads ``HEARTBEAT_DEFAULT_INTERVAL`` (as imported) where the SuperNode activates
    and sends heartbeats (``flwr.supernode.fleet_http_connection``) and where its heartbeat
    thread times the next one (``flwr.supercore.heartbeat``); it has no flag for it.
    """
    check_engine_versions(("flwr",))
    from flwr.common.constant import HEARTBEAT_MAX_INTERVAL, HEARTBEAT_MIN_INTERVAL
    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection

    if not HEARTBEAT_MIN_INTERVAL <= interval <= HEARTBEAT_MAX_INTERVAL:
        raise ValueError(f"heartbeat interval {interval} s: the SuperLink accepts "
                         f"{HEARTBEAT_MIN_INTERVAL} to {HEARTBEAT_MAX_INTERVAL} s")
    for module in (fleet_http_connection, heartbeat):
        if getattr(module, "HEARTBEAT_DEFAULT_INTERVAL", None) not in (FLOWER_HEARTBEAT,
                                                                       interval):
            raise changed(f"{module.__name__}.HEARTBEAT_DEFAULT_INTERVAL")
        module.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[attr-defined]


def run_supernode(idle_poll: float, argv: list[str]) -> None:
    """Run Flower's ``flower-supernode`` with its idle sleep capped at ``idle_poll`` seconds.

    Flower 1.41's SuperNode asks the SuperLink for a message and, when there is none, sleeps a
    fixed 3 s (``flwr.supernode.start_client_internal``); once it has handed a message to the
    ClientApp it checks its own state for the reply every 0.5 s. This caps the idle sleep (at
    ``idle_poll`` while messages come, longer when none has come for a while: see
    :class:`_CappedSleep`), caps the wait for the reply at 20 ms, makes its object pulls quick
    and declares a heartbeat of
    :data:`NODE_HEARTBEAT` s (:func:`declare_heartbeat`); the rest is Flower's own
    ``flower-supernode``.
    """
    check_engine_versions(("flwr",))
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    if getattr(loop, "time", None) is not time:
        raise changed("the SuperNode loop's time module")
    declare_heartbeat(NODE_HEARTBEAT)
    loop.time = _CappedSleep(idle_poll)  # type: ignore[assignment]
    quick_object_pulls(loop)
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


def _runtime_client(address: str, *interceptors: Any, max_tries: int | None = None,
                    root_certificates: str | None = None) -> Any:
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    invoker = make_simple_http_retry_invoker()
    if max_tries is not None:
        invoker.max_tries = max_tries
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=root_certificates is None,
        root_certificates=root_certificates, interceptors=list(interceptors),
        retry_invoker=invoker)


class TaskOffers:
    """Ask a Runtime API for the next task of one type, one try per call.

    A SuperNode's (ClientApp tasks, plain HTTP on loopback) or a SuperLink's (``server=True``:
    ServerApp tasks, over TLS with ``root_certificates``, a CA file). With ``secret`` (the
    ``--superexec-auth-secret-file`` the SuperNode or SuperLink was started with), each request
    is signed as Flower's own SuperExec signs it.
    """

    def __init__(self, address: str, secret: bytes | None = None, *, server: bool = False,
                 root_certificates: str | None = None) -> None:
        check_engine_versions(("flwr",))
        from flwr.supercore.constant import TaskType

        self._type = TaskType.SERVER_APP if server else TaskType.CLIENT_APP
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if secret is not None:
            interceptors.append(SuperExecAuthHttpInterceptor(
                master_secret=secret, protected_methods={ACQUIRE_TASK}))
        self._client = _runtime_client(address, *interceptors, max_tries=1,
                                       root_certificates=root_certificates)

    def next_token(self) -> str | None:
        """Return the token of a task waiting for this worker, or None when there is none."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611

        res = self._client.AcquireTask(AcquireTaskRequest(
            supported_task_types=[self._type], agentapp_fab_hashes=[]))
        return str(res.token) if res.HasField("task") and res.token else None

    def close(self) -> None:
        self._client.close()


class RuntimeTask:
    """One ClientApp task over the Runtime API, with the calls ``flwr-clientapp`` makes.

    ``with RuntimeTask(address, token) as task``: heartbeats run for the duration;
    :meth:`pull` gets the message, its context and the run's app id; :meth:`finish` pushes the
    reply (if any) and the task's outcome.
    """

    def __init__(self, address: str, token: str) -> None:
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )

        self._client = _runtime_client(
            address, RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token))
        self._heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(self._client))
        self.context: Context | None = None

    def __enter__(self) -> RuntimeTask:
        self._heartbeat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._heartbeat.stop()
        self._client.close()

    def pull(self) -> tuple[Message, Context, str]:
        """Pull the task's message, context and the run's app id, polling objects quickly.

        The SuperNode offers the task as soon as the message arrives, while it still stores the
        message's objects; Flower's default retry waits 1 s, then 2 s, for an object not yet
        there. A warm worker asks that early every time, so it retries every 20 ms instead.
        """
        from flwr.common.serde import context_from_proto, run_from_proto
        from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
        from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
            PullAppMessagesRequest,
            PullTaskInputRequest,
        )
        from flwr.supercore.inflatable.inflatable_protobuf_utils import (
            make_confirm_message_received_fn_protobuf,
            make_pull_object_fn_protobuf,
        )
        from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree

        client = self._client
        res = client.PullTaskInput(PullTaskInputRequest())
        context = context_from_proto(res.context)
        run = run_from_proto(res.run)
        pulled = client.PullMessages(PullAppMessagesRequest())
        if not pulled.messages_list:
            raise RuntimeError("no message came with the task")
        node = Node(node_id=context.node_id)
        tree = pulled.message_object_trees[0]
        message = pull_and_inflate_object_from_tree(
            tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
            make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node,
                                                      context.run_id),
            return_type=Message, initial_backoff=INITIAL_BACKOFF, backoff_cap=BACKOFF_CAP)
        message.metadata.__dict__["_message_id"] = tree.object_id  # as flwr-clientapp sets it
        self.context = context
        return message, context, str(run.fab_id)

    def finish(self, reply: Message | None, error: str | None) -> None:
        """Push the reply (if any) and the task's outcome: completed, or failed with ``error``."""
        from flwr.common.constant import SubStatus
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        try:
            if reply is not None and self.context is not None:
                push_message(self._client, reply, self.context)
        finally:
            push_task_output(self._client, self.context,
                             SubStatus.FAILED if error else SubStatus.COMPLETED, error or "")


def error_reply(message: Message, reason: str) -> Message:
    """Return the reply ``flwr-clientapp`` sends when the ClientApp raised."""
    from flwr.common.constant import ErrorCode

    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                   reply_to=message)
