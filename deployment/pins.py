"""Which node ID each party's registered key received: the coordinator's ``pins.json``.

``flwr supernode register <key.pub> <connection>`` prints the node ID the SuperLink gave the
key (Flower 1.41, ``flwr/cli/supernode/register.py``)::

    Using SuperLink: local (127.0.0.1:38117)
    ✅ SuperNode 15723246161303804843 registered successfully.

or, with ``--format json``::

    {
      "success": true,
      "node-id": 593859881175839272
    }

A node authenticates with its key, so its node ID stands for the key: the coordinator pins each
party to that ID (:mod:`fl_server.node_pins`) and refuses any other node that claims the party.
``flwr supernode list`` prints node IDs but no key, so the pins are taken when the keys are
registered and kept in ``pins.json`` (``{party: node_id}``, mode 0600) in a directory of the
coordinator's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from credit_data.errors import ConfigError, DeployError
from federation.storage import write_atomic

__all__ = ["PINS_FILE", "node_id_from_register_output", "read_pins", "write_pins"]

PINS_FILE = "pins.json"

_TEXT = re.compile(r"SuperNode (\d+) registered successfully")
_JSON = re.compile(r'"node-id"\s*:\s*"?(\d+)"?')


def node_id_from_register_output(text: str) -> int:
    r"""Return the node ID ``flwr supernode register`` printed (its default or JSON format).

    >>> node_id_from_register_output(
    ...     "Using SuperLink: local (127.0.0.1:38117)\n"
    ...     "✅ SuperNode 15723246161303804843 registered successfully.\n")
    15723246161303804843
    >>> node_id_from_register_output('{\n  "success": true,\n  "node-id": 593859881175839272\n}')
    593859881175839272
    """
    found = {int(n) for n in _TEXT.findall(text) + _JSON.findall(text)}
    if len(found) != 1:
        what = "no node ID" if not found else f"several node IDs {sorted(found)}"
        raise DeployError(f"`flwr supernode register` printed {what}; expected one line "
                          f"'SuperNode <id> registered successfully'. It printed: "
                          f"{text.strip()[-500:]!r}")
    node = found.pop()
    if node <= 0:
        raise DeployError(f"`flwr supernode register` printed node ID {node}, not a valid one")
    return node


def _check(pins: object, where: str) -> dict[str, int]:
    if not isinstance(pins, dict):
        raise ConfigError(f"{where}: expected an object {{party: node_id}}, got "
                          f"{type(pins).__name__}")
    checked: dict[str, int] = {}
    for party, node in pins.items():
        if not isinstance(party, str) or not party:
            raise ConfigError(f"{where}: a party name must be a non-empty string, got {party!r}")
        if not isinstance(node, int) or isinstance(node, bool) or node <= 0:
            raise ConfigError(f"{where}: '{party}' must map to a positive integer node ID, got "
                              f"{node!r}")
        if node in checked.values():
            other = next(p for p, n in checked.items() if n == node)
            raise ConfigError(f"{where}: node {node} is pinned to both '{other}' and '{party}'")
        checked[party] = node
    return checked


def write_pins(directory: Path, pins: dict[str, int]) -> Path:
    """Write ``pins`` (party -> node ID) to ``directory/pins.json``, readable by its owner only.

    Returns the file's path.
    """
    checked = _check(pins, "pins")
    path = directory / PINS_FILE
    write_atomic(path, json.dumps(dict(sorted(checked.items())), indent=2) + "\n", mode=0o600)
    return path


def read_pins(directory: Path) -> dict[str, int]:
    """Return the pins in ``directory/pins.json``; ``{}`` (nothing pinned) if there is none.

    A file that is not an object of party names to positive integer node IDs is refused with
    a :class:`~credit_data.errors.ConfigError` naming it.
    """
    path = directory / PINS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    try:
        pins = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc
    return _check(pins, str(path))
