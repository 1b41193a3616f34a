"""Which TCP ports a set of processes listens on, and whether any is outside loopback."""

from __future__ import annotations

import ipaddress

import psutil


def process_tree(pid: int) -> set[int]:
    """``pid`` and every process it started (that is still running)."""
    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def listeners(pids: set[int]) -> list[tuple[int, str, int]]:
    """Every listening TCP socket of ``pids``: (pid, address, port)."""
    return [(c.pid, c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and an IPv4-mapped loopback (``::ffff:127.0.0.1``).

    >>> [is_loopback(a) for a in ("127.0.0.1", "::ffff:127.0.0.1", "::1", "0.0.0.0", "::")]
    [True, True, True, False, False]
    """
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
