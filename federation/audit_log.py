"""A tamper-evident audit log: append-only JSON lines, each holding the hash of the one before.

Every node (and the server) appends one line per message it answers or sends: the message
type, what left it (array names, shapes, dtypes and bytes; never values) and the epsilon spent
so far. Each line carries ``seq`` (0, 1, 2, ...), ``prev`` (the hash of the line before; zeros
for the first) and ``hash`` (SHA-256 of the line's canonical JSON without ``hash``). Editing a
line breaks its own hash; removing or reordering lines breaks ``seq`` and ``prev`` at the first
line out of place. Cutting lines off the end leaves a valid shorter chain: compare the last
hash with one recorded elsewhere (the report prints it) to catch that.

``python -m federation.audit_log verify <file> [<file> ...]`` reports the first line that was
changed, removed or reordered, and exits with 1 if any file fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GENESIS = "0" * 64


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def describe_arrays(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Describe what an array payload reveals: shape, dtype and bytes, never values.

    >>> describe_arrays({"grads": np.zeros((3, 2), np.float32)})
    {'grads': {'shape': [3, 2], 'dtype': 'float32', 'bytes': 24}}
    """
    return {name: {"shape": list(a.shape), "dtype": str(a.dtype), "bytes": int(a.nbytes)}
            for name, a in arrays.items()}


class AuditLog:
    """Append to one node's log; the file is opened, appended and flushed per line."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _tail(self) -> tuple[int, str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as handle:
            handle.seek(max(0, self.path.stat().st_size - 65_536))
            last = handle.read().decode().rstrip("\n").split("\n")[-1]
        entry = json.loads(last)
        return int(entry["seq"]) + 1, str(entry["hash"])

    def append(self, event: str, **fields: Any) -> str:
        """Append one line (``event`` plus ``fields``, JSON-able); return its hash."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        seq, prev = self._tail()
        entry = {"seq": seq, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "event": event, **fields, "prev": prev}
        entry["hash"] = _digest(entry)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return str(entry["hash"])


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``ok``, the lines read, the last hash, or the first fault."""

    ok: bool
    lines: int
    head: str
    line: int | None = None
    problem: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.lines} lines, last hash {self.head}"
        return f"line {self.line}: {self.problem}"


def verify(path: Path | str) -> Verdict:
    """Check a log's chain; report the first line (1-based) that was changed, removed or moved."""
    texts = Path(path).read_text(encoding="utf-8").splitlines()
    entries: list[dict[str, Any]] = []
    for number, text in enumerate(texts, start=1):
        try:
            entry = json.loads(text)
            int(entry["seq"]), str(entry["hash"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return Verdict(False, number - 1, GENESIS, number, f"not a log line ({exc})")
        entries.append(entry)
    prev = GENESIS
    for number, entry in enumerate(entries, start=1):
        if entry["hash"] != _digest(entry):
            return Verdict(False, number - 1, prev, number,
                           "changed: its content does not match its hash")
        expected = number - 1
        if int(entry["seq"]) != expected or entry.get("prev") != prev:
            later = [n for n, e in enumerate(entries, start=1)
                     if n > number and int(e["seq"]) == expected]
            if later:
                problem = (f"reordered: seq {entry['seq']} stands where seq {expected} belongs, "
                           f"which is at line {later[0]}")
            elif int(entry["seq"]) > expected:
                problem = f"a line was removed before it (seq {expected} is missing)"
            else:
                problem = f"out of chain (seq {entry['seq']} where {expected} belongs)"
            return Verdict(False, number - 1, prev, number, problem)
        prev = str(entry["hash"])
    return Verdict(True, len(entries), prev)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m federation.audit_log verify <file> [<file> ...]``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "verify":
        print("usage: python -m federation.audit_log verify <file> [<file> ...]",
              file=sys.stderr)
        return 2
    failed = False
    for name in args[1:]:
        if not Path(name).is_file():
            print(f"{name}: no such file", file=sys.stderr)
            failed = True
            continue
        verdict = verify(name)
        print(f"{name}: {verdict}")
        failed |= not verdict.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
