"""An authenticated audit log: append-only JSON lines, chained by hash and signed by the writer.

Every node (and the server) appends one line per message it answers or sends: the message
type, what left it (array names, shapes, dtypes and bytes; never values) and the epsilon spent
so far. Each line carries ``seq`` (0, 1, 2, ...), ``prev`` (the hash of the line before; zeros
for the first), ``salt`` (32 random bytes of its own, :data:`SALT`), ``hash`` (SHA-256 of the
line's canonical JSON without ``hash`` and ``sig``, its salt included) and ``sig``, the writer's
Ed25519 signature of that hash. The first line also holds ``key``,
the writer's public key; its private key (``audit.key`` beside the log, mode 0600) never leaves
the writer's disk.

What fails verification:

* an edited line (its hash), a removed or reordered line (``seq`` and ``prev``), a line with a
  JSON key twice (a reader could see another value than the hash covers), an empty file;
* a line appended or re-hashed by anyone without the private key (its signature);
* a whole file made up with another key, or cut short: the writer's public key and its last
  hash are *anchored* elsewhere. Each node sends them with every reply; the server's log records
  them for every message it receives, and the run's ``results.json`` lists the last ones
  (``audit_logs``). The server sends its own head with every message, and each node's log
  records it. ``verify --head <hash> --key <public key>`` checks a log against its anchor.

``python -m federation.audit_log verify <file> [<file> ...] [--head H] [--key K]`` reports the
first line that fails, and exits with 1 if any file fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
KEY_FILE = "audit.key"
SALT, SALT_BYTES = "salt", 32
"""Each line's own random salt (hex, from the OS's cryptographic source), inside its hash: the
hash is a hiding commitment to the line, so whoever holds only a head (the server, from a reply's
anchor) cannot test guesses of what the line holds (a node's lifetime spend), while whoever holds
the log checks it as before."""
ANCHOR = "audit"
"""The config record that carries a log's anchor (``head``, ``seq``, ``key``) in a message."""


class DuplicateKeyError(ValueError):
    """A JSON object holds the same key twice."""


class NotFinite(ValueError):
    """A line holds NaN or Infinity, which no line written here holds (an edited line)."""


def _no_constants(name: str) -> Any:
    raise NotFinite(f"it holds {name}, which no log line holds")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def parse_line(text: str) -> dict[str, Any]:
    """Parse one log line, refusing a key that appears twice (at any depth), NaN or Infinity.

    >>> parse_line('{"a": 1}')
    {'a': 1}
    >>> parse_line('{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    federation.audit_log.DuplicateKeyError: the key 'a' appears twice
    >>> parse_line('{"a": NaN}')
    Traceback (most recent call last):
    ...
    federation.audit_log.NotFinite: it holds NaN, which no log line holds
    """
    value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    if not isinstance(value, dict):
        raise ValueError("a log line is a JSON object")
    return value


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k not in ("hash", "sig")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def public_hex(key: Ed25519PrivateKey) -> str:
    """Return the raw public key, as hex."""
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw).hex()


def writer_key(path: Path) -> Ed25519PrivateKey:
    """Load the writer's signing key from ``path``, or make one there (mode 0600)."""
    if path.is_file():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return key


def describe_arrays(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Describe what an array payload reveals: shape, dtype and bytes, never values.

    >>> describe_arrays({"grads": np.zeros((3, 2), np.float32)})
    {'grads': {'shape': [3, 2], 'dtype': 'float32', 'bytes': 24}}
    """
    return {name: {"shape": list(a.shape), "dtype": str(a.dtype), "bytes": int(a.nbytes)}
            for name, a in arrays.items()}


@dataclass(frozen=True)
class Anchor:
    """Where a log stood: its last ``seq`` and ``head`` hash, and its writer's public ``key``."""

    seq: int
    head: str
    key: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "head": self.head, "key": self.key}


class AuditLog:
    """Append to one writer's log; the file is opened, appended and flushed per line.

    The signing key is ``audit.key`` in the log's directory, made at the first line.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.key_path = self.path.parent / KEY_FILE

    def _tail(self) -> tuple[int, str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as handle:
            handle.seek(max(0, self.path.stat().st_size - 65_536))
            last = handle.read().decode().rstrip("\n").split("\n")[-1]
        entry = parse_line(last)
        return int(entry["seq"]) + 1, str(entry["hash"])

    def append(self, event: str, **fields: Any) -> Anchor:
        """Append one line (``event`` plus ``fields``, JSON-able); return the new anchor."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = writer_key(self.key_path)
        seq, prev = self._tail()
        entry = {"seq": seq, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "event": event, **fields, "prev": prev, SALT: os.urandom(SALT_BYTES).hex()}
        if seq == 0:
            entry["key"] = public_hex(key)
        entry["hash"] = _digest(entry)
        entry["sig"] = key.sign(bytes.fromhex(entry["hash"])).hex()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return Anchor(seq, str(entry["hash"]), public_hex(key))


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``ok``, lines read, last hash, writer's key or first fault."""

    ok: bool
    lines: int
    head: str
    line: int | None = None
    problem: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.lines} lines, last hash {self.head}, signed by {self.key}"
        return f"line {self.line}: {self.problem}"


def _signed(entry: dict[str, Any], key: Ed25519PublicKey) -> bool:
    try:
        key.verify(bytes.fromhex(str(entry.get("sig", ""))), bytes.fromhex(str(entry["hash"])))
    except (InvalidSignature, ValueError):
        return False
    return True


def _read(path: Path) -> list[dict[str, Any]] | Verdict:
    """Return a log's lines, or the verdict on the first that is none (or on an empty file)."""
    texts = path.read_text(encoding="utf-8").splitlines()
    if not texts:
        return Verdict(False, 0, GENESIS, 1, "empty: a log has at least one line")
    entries: list[dict[str, Any]] = []
    for number, text in enumerate(texts, start=1):
        try:
            entry = parse_line(text)
            int(entry["seq"]), str(entry["hash"])
        except NotFinite as exc:  # a line written here never holds one: it was edited
            return Verdict(False, number - 1, GENESIS, number,
                           f"changed: {exc}, so its content does not match its hash")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return Verdict(False, number - 1, GENESIS, number, f"not a log line ({exc})")
        entries.append(entry)
    return entries


def verify(path: Path | str, *, head: str | None = None, key: str | None = None) -> Verdict:
    """Check a log's chain and signatures; report the first line (1-based) that fails.

    ``key``: the writer's public key (hex) from an anchor; without it the key the first line
    declares is used, which catches every edit but not a whole file made up with another key.
    ``head``: the last hash from an anchor; the log must end there.
    """
    entries = _read(Path(path))
    if isinstance(entries, Verdict):
        return entries
    declared = str(entries[0].get("key", ""))
    public: Ed25519PublicKey | None = None
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
        if public is None:
            if key is not None and declared != key:
                return Verdict(False, 0, GENESIS, 1, f"signed by another key "
                               f"({declared[:16]}...) than the anchored one ({key[:16]}...): "
                               "the file was replaced")
            try:
                public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(declared))
            except ValueError:
                return Verdict(False, 0, GENESIS, 1, "the first line holds no valid public key")
        if not _signed(entry, public):
            return Verdict(False, number - 1, prev, number,
                           "not signed by the log's writer: added or re-hashed by someone else")
        prev = str(entry["hash"])
    if head is not None and head != prev:
        at = [n for n, e in enumerate(entries, start=1) if e["hash"] == head]
        if at:
            return Verdict(False, len(entries), prev, at[0] + 1,
                           f"lines were added after the anchored hash (line {at[0]})")
        return Verdict(False, len(entries), prev, len(entries),
                       "the anchored hash is not in the log: lines were cut off the end")
    return Verdict(True, len(entries), prev, key=declared)


def anchors(server_log: Path | str) -> dict[str, Any]:
    """Return the anchors a run's server log holds: its own and each party's last one.

    The server's log records, on every message it received, the node it came from and the
    anchor that node attached (the party it names, its last ``seq``, ``head`` and ``key``); the
    last one per party is the node's log as it stood when the run ended. Anchors that do not
    hang together are listed under ``problems``: a party named by two nodes (one framing
    another), a node naming two parties, a key that changed or a ``seq`` that went back.
    """
    texts = Path(server_log).read_text(encoding="utf-8").splitlines()
    nodes: dict[str, dict[str, Any]] = {}
    sender: dict[str, Any] = {}
    named: dict[Any, str] = {}
    problems: list[str] = []
    last: dict[str, Any] = {}
    for text in texts:
        try:
            last = parse_line(text)
        except NotFinite:
            continue  # an edited line: verification reports it
        node = last.get("node_log")
        if not (isinstance(node, dict) and "party" in node):
            continue
        party, node_id = str(node["party"]), last.get("node")
        if sender.setdefault(party, node_id) != node_id:
            problems.append(f"{party} is named by node {node_id} and node {sender[party]}")
        if named.setdefault(node_id, party) != party:
            problems.append(f"node {node_id} names {party} and {named[node_id]}")
        before = nodes.get(party)
        if before is not None and (before["key"] != node["key"]
                                   or int(node["seq"]) <= int(before["seq"])):
            problems.append(f"{party}'s log changed key or went back (seq {before['seq']} then "
                            f"{node['seq']})")
        nodes[party] = {k: node[k] for k in ("seq", "head", "key")}
    try:
        first = parse_line(texts[0]) if texts else {}
    except NotFinite:
        first = {}
    server = ({"seq": int(last["seq"]), "head": str(last["hash"]), "key": first.get("key")}
              if last else None)
    return {"server": server, "nodes": dict(sorted(nodes.items())),
            "problems": sorted(set(problems))}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m federation.audit_log verify <file> ... [--head H] [--key K]``.

    ``credit-fl audit report <logs ...>`` is the data-usage record built on these logs
    (:mod:`federation.audit_command` dispatches both).
    """
    parser = argparse.ArgumentParser(prog="python -m federation.audit_log")
    parser.add_argument("command", choices=["verify"])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--head", help="the anchored last hash (one file only)")
    parser.add_argument("--key", help="the anchored public key of the writer (hex)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.head and len(args.files) > 1:
        parser.error("--head checks one file at a time")
    failed = False
    for name in args.files:
        if not name.is_file():
            print(f"{name}: no such file", file=sys.stderr)
            failed = True
            continue
        verdict = verify(name, head=args.head, key=args.key)
        print(f"{name}: {verdict}")
        if verdict.ok and args.head is None:
            print(f"{name}: no anchor given: a whole file made up with another key, or a log "
                  "cut short, is caught only with --head and --key from results.json")
        failed |= not verdict.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
