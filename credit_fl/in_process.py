"""The in-process engine: the ServerApp's messages go straight to the ClientApp's handlers.

No Ray, no SuperLink, no serialisation threads: every node runs in this process, one message
at a time. Each message's content is copied on the way (as the wire would), each node keeps its
own ``Context`` across messages (as a SuperNode does), and a handler that raises becomes an
error reply (as Flower's engines turn it into one). The nodes compute on one core each, as on
Flower's simulation engine, so both engines give the same numbers for the same seed.

The same grid drives the unit tier's round-loop and handler tests (``drop`` and
``unavailable`` simulate a node that never answers and one the SuperLink reports gone).
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from federation.flower_compat.in_process import task_identity

RUN_ID = 1
SERVER = 0
SUPERLINK = 1


class InProcessGrid(Grid):
    """Deliver each message to ``client_app`` at once, with one ``Context`` per node."""

    def __init__(self, client_app: ClientApp, n_nodes: int,
                 node_config: Callable[[int], dict[str, Any]] | None = None,
                 drop: Callable[[Message], bool] | None = None,
                 unavailable: Callable[[Message], bool] | None = None) -> None:
        self.client_app = client_app
        self.contexts = {
            100 + i: Context(run_id=RUN_ID, node_id=100 + i,
                             node_config=(node_config(i) if node_config else
                                          {"partition-id": i, "num-partitions": n_nodes}),
                             state=RecordDict(), run_config={})
            for i in range(n_nodes)}
        self.drop = drop
        self.unavailable = unavailable
        self.sent: list[Message] = []
        self.received: list[Message] = []
        self._replies: dict[str, Message] = {}

    # Flower's Grid -------------------------------------------------------------------------
    def set_run(self, run: Any) -> None:  # the run is fixed
        pass

    @property
    def run(self) -> Any:
        return None

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            self.sent.append(msg)
            message_id = uuid.uuid4().hex
            m = msg.metadata
            request = Message(copy.deepcopy(msg.content), metadata=Metadata(  # type: ignore[call-overload]
                run_id=RUN_ID, message_id=message_id, src_node_id=SERVER,
                dst_node_id=m.dst_node_id, reply_to_message_id="", group_id=m.group_id,
                created_at=time.time(), ttl=m.ttl, message_type=m.message_type))
            ids.append(message_id)
            if self.drop is not None and self.drop(request):
                continue  # the node never answers (a timeout)
            if self.unavailable is not None and self.unavailable(request):
                # the SuperLink answers for a node that is gone: the error comes from it
                self._replies[message_id] = Message(Error(code=0, reason="Error: Node Unavailable"),  # type: ignore[call-overload]
                                                    metadata=Metadata(
                    run_id=RUN_ID, message_id=uuid.uuid4().hex, src_node_id=SUPERLINK,
                    dst_node_id=SERVER, reply_to_message_id=message_id, group_id=m.group_id,
                    created_at=time.time(), ttl=m.ttl, message_type=m.message_type))
                continue
            try:
                reply = self.client_app(request, self.contexts[m.dst_node_id])
            except Exception as exc:  # noqa: BLE001 (the engine's behaviour: an error reply)
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"),
                                reply_to=request)
            self._replies[message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        got = [self._replies.pop(i) for i in list(message_ids) if i in self._replies]
        self.received += got
        return got

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))


@contextmanager
def serving() -> Iterator[None]:
    """Let ServerApp code build messages in this process (Flower's task identity)."""
    with task_identity(RUN_ID, SERVER):
        yield


def run_server_app(server_app: ServerApp, grid: InProcessGrid) -> None:
    """Call ``server_app`` on ``grid`` as an engine would."""
    with serving():
        server_app(grid, Context(run_id=RUN_ID, node_id=SERVER, node_config={},
                                 state=RecordDict(), run_config={}))


T = TypeVar("T")


@dataclass(frozen=True)
class Kept(Generic[T]):
    """A value the in-process engine's nodes read where it is (no copy, no store)."""

    value: T

    @property
    def key(self) -> str:
        """Names the value for :func:`fl_client.simulation_sources.once_per_worker`."""
        return f"kept-{id(self.value):x}"

    def get(self) -> T:
        return self.value


class InProcessEngine:
    """Run a federated run's nodes in this process (``engine=in_process``).

    The interface of the simulation engine (:class:`credit_fl.simulation.SimulationEngine`):
    ``start_while`` builds the data (there is nothing to start), ``share`` hands the nodes a
    value, ``run`` runs the ServerApp against the nodes' ClientApp. The nodes compute on one
    thread, as each does on a core of its own in Flower's simulation engine; the caller's
    thread count is restored afterwards.
    """

    name = "in_process"
    same_process = True  # sharing a value with the nodes costs nothing

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def start_while(self, build: Callable[[], T]) -> T:
        """Return ``build()``."""
        return build()

    def share(self, value: T) -> Kept[T]:
        """Hand ``value`` to the nodes as it is."""
        return Kept(value)

    def run(self, server_app: ServerApp, client_app: ClientApp, n_nodes: int) -> None:
        """Run ``server_app`` against ``n_nodes`` nodes of ``client_app``, in this process."""
        logging.getLogger("flwr").setLevel(logging.INFO if self.verbose else logging.WARNING)
        threads = torch.get_num_threads()
        try:
            run_server_app(server_app, InProcessGrid(client_app, n_nodes))
        finally:
            torch.set_num_threads(threads)
