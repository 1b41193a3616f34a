"""A long-lived party worker that runs the node's ClientApp for every message, in one process.

Flower's SuperNode, by default, starts a fresh ``flwr-clientapp`` process for each message: it
installs the app bundle, imports the app (and torch) and loads the party's data again, about 2 s
per message on two cores before any work is done. Started with ``--isolation process``, the
SuperNode leaves running the ClientApp to an outside process; this module is that process. It
keeps the party's app, data and torch warm, asks the SuperNode's Runtime API for the next task
every ``poll`` seconds, and runs it in-process with the same calls ``flwr-clientapp`` makes.

It runs only the ClientApp this node installed: a run whose app bundle is not ``expected_fab_id``
gets an error reply, so a coordinator cannot make the node execute code of its choosing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.serde import context_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
)
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
)
from flwr.supercore.protobuf.client import ProtobufClientInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

log = logging.getLogger("credit_fl")


def _client(address: str, *interceptors: ProtobufClientInterceptor,
            max_tries: int | None = None) -> RuntimeHttpClient:
    invoker = make_simple_http_retry_invoker()
    if max_tries is not None:
        invoker.max_tries = max_tries
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=list(interceptors), retry_invoker=invoker)


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Run]:
    """Pull a task's context, run and message, as ``flwr-clientapp`` does, polling quickly.

    The SuperNode offers the task as soon as the message arrives, while it still stores the
    message's objects; Flower's default retry waits 1 s, then 2 s, for an object not yet
    there. A warm worker asks that early every time, so it retries every 20 ms instead.
    """
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
        return_type=Message, initial_backoff=0.02, backoff_cap=0.2)
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context, run


def run_task(address: str, token: str, app: ClientApp, expected_fab_id: str | None) -> None:
    """Pull one task's message and context, run ``app`` on it and push the reply."""
    client = _client(address, RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                     RuntimeTokenHttpInterceptor(token))
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context: Context | None = None
    message: Message | None = None
    reply: Message | None = None
    status, details = SubStatus.FAILED, "the party worker failed before running the task"
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        message, context, run = pull_task_input(client)
        timings["pull"] = time.perf_counter() - t0
        if expected_fab_id is not None and run.fab_id != expected_fab_id:
            raise PermissionError(f"this node runs only the app '{expected_fab_id}'; the run "
                                  f"asked for '{run.fab_id}'")
        reply = app(message=message, context=context)
        timings["run"] = time.perf_counter() - t0 - timings["pull"]
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # the reply carries the error, as flwr-clientapp's does
        log.exception("the ClientApp raised")
        details = f"{type(exc).__name__}: {exc}"
        reply = (Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                         reply_to=message) if message is not None else None)
    try:
        if reply is not None and context is not None:
            push_message(client, reply, context)
    finally:
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()
    log.info("task %s: %s, %.2f s in all", message.metadata.message_type if message else "?",
             ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()), time.perf_counter() - t0)


def serve(address: str, app: ClientApp, poll: float = 0.05,
          expected_fab_id: str | None = None,
          stop: threading.Event | None = None,
          alive: Callable[[], bool] = lambda: True) -> None:
    """Run the node's tasks until ``stop`` is set or ``alive()`` turns false."""
    stop = stop or threading.Event()
    # one try per poll: the loop retries, and notices when the SuperNode is gone
    acquire = _client(address, RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                      max_tries=1)
    try:
        while not stop.is_set() and alive():
            try:
                res = acquire.AcquireTask(AcquireTaskRequest(
                    supported_task_types=[TaskType.CLIENT_APP], agentapp_fab_hashes=[]))
            except Exception as exc:  # the SuperNode is starting or stopping
                log.debug("Runtime API not reachable: %s", exc)
                time.sleep(max(poll, 0.5))
                continue
            if res.HasField("task") and res.token:
                run_task(address, res.token, app, expected_fab_id)
                continue
            time.sleep(poll)
    finally:
        acquire.close()
