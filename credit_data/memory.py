"""Hand memory a party has freed back to the operating system (issue 36, bounded memory).

Reading a table leaves freed memory with the allocators that held it: pyarrow's pool (the
Parquet and DuckDB batches) and the C library's heap (pandas' and Python's small objects). A
node that has built its design calls :func:`release_freed_memory`, so that its resident memory
is what it keeps, and the next large step (a preprocessing fit, another party's table in the
same simulation worker) does not stack on memory no one uses.

>>> release_freed_memory()
>>> release_freed_memory(rows=10)  # a small table: nothing to hand back, no collection
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys

__all__ = ["RELEASE_FROM_ROWS", "release_freed_memory"]

RELEASE_FROM_ROWS = 100_000
"""Rows from which a table's freed memory is handed back: below it there is little to hand
back, and the garbage collection alone cost about 60 ms per table read of 2,000 rows (measured
in one process; more in a process holding more objects), paid by every small run and test."""


def release_freed_memory(rows: int | None = None) -> None:
    """Collect garbage, then return freed memory from pyarrow's pool and the C heap.

    ``rows``: the size of what was freed; under :data:`RELEASE_FROM_ROWS` nothing is done.
    """
    if rows is not None and rows < RELEASE_FROM_ROWS:
        return
    gc.collect()
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:  # only where a Parquet file or a database was read
        arrow.default_memory_pool().release_unused()
    name = ctypes.util.find_library("c")
    if name and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)  # glibc only; elsewhere nothing to do
