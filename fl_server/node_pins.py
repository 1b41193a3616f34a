"""Each party's node pinned to its party name at the coordinator.

On a deployment anyone holding the public ``ca.crt`` can register a key of their own with the
SuperLink's open Control API and start a node that says it is ``bureau``. The coordinator knows
which node ID each party's registered key received (``pins.json``, written when the federation
came up: :mod:`deployment.pins`), so it refuses, at its first message, a node that claims a
pinned party from another node ID, or a pinned node that claims another party; it names the
node, logs a warning, records it in the outcome and goes on with the real node. Parties that
are not pinned are taken at their word, as in simulation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.serverapp import Grid

from credit_data.errors import ConfigError

log = logging.getLogger("credit_fl")

PinnedNodes = tuple[tuple[str, int], ...]
"""``((party, node_id), ...)``: the form the frozen settings keep; empty pins nothing."""


def pinned_nodes(pins: Mapping[str, int] | None) -> PinnedNodes:
    """Return ``pins`` (party -> node ID) in the settings' form, checked.

    >>> pinned_nodes({"bureau": 7, "lender": 3})
    (('bureau', 7), ('lender', 3))
    >>> pinned_nodes({"lender": 3, "bureau": 3})
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: pinned_nodes: node 3 is pinned to both 'bureau' and 'lender'
    """
    pairs = tuple(sorted((pins or {}).items()))
    NodePins(pairs)  # refuses a node pinned to two parties
    return pairs


@dataclass(frozen=True)
class RefusedNode:
    """A node refused at its first message: who it said it is, and whom the pin names."""

    node_id: int
    claimed: str
    pinned_node: int | None
    """The node pinned to the party it claimed (``None``: that party is not pinned)."""
    pinned_to: str | None
    """The party this node is pinned to (``None``: the node is pinned to no party)."""

    @property
    def reason(self) -> str:
        """Say why the node was refused, naming it, its claim and the pin."""
        if self.pinned_to is not None:
            return (f"node {self.node_id} says it is '{self.claimed}' but is pinned to "
                    f"'{self.pinned_to}': refused")
        return (f"node {self.node_id} says it is '{self.claimed}', whose pinned node is "
                f"{self.pinned_node}: refused (a key registered by someone else)")

    def to_json(self) -> dict[str, Any]:
        """Return the refusal as ``results.json`` shows it."""
        return {"node_id": self.node_id, "claimed": self.claimed,
                "pinned_node": self.pinned_node, "pinned_to": self.pinned_to,
                "reason": self.reason}


class NodePins:
    """Check a node's claim against the pins; an empty pin set accepts every claim."""

    def __init__(self, pins: Iterable[tuple[str, int]]) -> None:
        self.node: dict[str, int] = {}
        self.party: dict[int, str] = {}
        for party, node in pins:
            if not isinstance(node, int) or isinstance(node, bool) or node <= 0:
                raise ConfigError(f"pinned_nodes: '{party}' is pinned to {node!r}, not a "
                                  "positive node ID")
            if party in self.node:
                raise ConfigError(f"pinned_nodes: '{party}' is pinned to two nodes, "
                                  f"{self.node[party]} and {node}")
            if node in self.party:
                raise ConfigError(f"pinned_nodes: node {node} is pinned to both "
                                  f"'{self.party[node]}' and '{party}'")
            self.node[party], self.party[node] = node, party

    def nodes(self) -> set[int]:
        """Return the pinned node IDs."""
        return set(self.party)

    def check(self, node: int, claimed: str) -> RefusedNode | None:
        """Return why ``node`` claiming ``claimed`` is refused, or ``None`` if it may take part.

        >>> pins = NodePins([("bureau", 7)])
        >>> pins.check(7, "bureau") is None, pins.check(9, "social") is None
        (True, True)
        >>> pins.check(9, "bureau").reason  # doctest: +ELLIPSIS
        "node 9 says it is 'bureau', whose pinned node is 7: refused ..."
        >>> pins.check(7, "social").reason
        "node 7 says it is 'social' but is pinned to 'bureau': refused"
        """
        pinned_to = self.party.get(node)
        pinned_node = self.node.get(claimed)
        if pinned_to is not None and pinned_to != claimed:
            return RefusedNode(node, claimed, pinned_node, pinned_to)
        if pinned_node is not None and pinned_node != node:
            return RefusedNode(node, claimed, pinned_node, None)
        return None

    def addressed(self, nodes: Iterable[int], refused: list[dict[str, Any]]) -> list[int]:
        """Return the nodes a first message goes to: with pins, the pinned nodes alone.

        Every other connected node (a key someone else registered through the open Control
        API) is named in ``refused`` and gets no message at all: it can neither answer with an
        error, nor keep a round waiting, nor claim a party.

        >>> refused = []
        >>> NodePins([("bureau", 7)]).addressed([7, 9], refused), refused[0]["node_id"]
        ([7], 9)
        >>> NodePins([]).addressed([7, 9], refused)
        [7, 9]
        """
        if not self.party:
            return list(nodes)
        kept = []
        for node in nodes:
            if node in self.party:
                kept.append(node)
                continue
            reason = (f"node {node} is connected but pinned to no party: sent nothing (a key "
                      "registered by someone else)")
            log.warning(reason)
            refused.append({"node_id": node, "claimed": None, "pinned_node": None,
                            "pinned_to": None, "reason": reason})
        return kept

    def refuse(self, node: int, claimed: str, refused: list[dict[str, Any]]) -> bool:
        """Check ``node``'s claim; if it is refused, log it, add it to ``refused``, say so."""
        refusal = self.check(node, claimed)
        if refusal is None:
            return False
        log.warning("%s; the run goes on with the pinned node", refusal.reason)
        refused.append(refusal.to_json())
        return True


class AcceptedNodes:
    """A Grid that lists only the nodes the coordinator accepted at discovery.

    A strategy samples its nodes from ``get_node_ids``: this keeps a refused node (or one that
    never said which party it is) from being sampled. Everything else goes to the wrapped Grid.
    """

    def __init__(self, grid: Grid, accepted: Iterable[int]) -> None:
        self.grid, self.accepted = grid, set(accepted)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)

    def get_node_ids(self) -> list[int]:
        """Return the connected nodes that were accepted."""
        return [n for n in self.grid.get_node_ids() if n in self.accepted]
