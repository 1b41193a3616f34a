"""Flower's internals the in-process engine needs: running ServerApp code in this process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from federation.flower_compat import check_engine_versions


@contextlib.contextmanager
def task_identity(run_id: int, node_id: int = 0, task_id: int = 1) -> Iterator[None]:
    """Run ServerApp code in this process without Flower's engines (the in-process engine).

    Flower 1.41's ``Message(content, dst_node_id, message_type)`` reads the sender's run, node
    and task from ``flwr.supercore.task_identity.TaskIdentity`` (private), which only its
    engines set. There is no public way to set it; this is the one place that does, behind the
    version gate, and only for the duration of the ``with`` block. Gain: a run needs no Ray
    (:mod:`credit_fl.in_process`), and both round loops and every handler run in milliseconds
    in the unit tier, against seconds per Ray run.
    """
    check_engine_versions(("flwr",))
    from flwr.supercore.task_identity import TaskIdentity  # private; version-gated above

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, task_id
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
