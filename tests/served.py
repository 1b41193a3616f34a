"""A scoring service's nodes driven directly, with the bytes a server would route (tests only).

Shared by the service's own tests and the blacklist tests (a service that asks holders).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from flwr.app import Message
from flwr.clientapp import ClientApp

from credit_fl.batch_scoring import list_table, load_applicants, scoring_config
from credit_fl.config import to_settings
from federation.query_ledger import Purpose
from fl_client.list_lookup import holder_answer
from fl_client.scoring_service import ServedLender, ServedParty
from fl_client.scoring_task import ScoringInput
from fl_client.settings import ClientSettings, client_settings
from fl_client.vertical_task import NodeState


@dataclasses.dataclass
class Service:
    """Every node of a small service, and what travelled between them."""

    lender: ServedLender
    parties: dict[str, ServedParty]
    lender_state: NodeState
    party_states: dict[str, NodeState]
    routed: list[bytes]
    run_dir: Path
    infos: dict[str, dict]
    holders: dict[str, tuple[ClientSettings, list[str]]] = dataclasses.field(
        default_factory=dict)
    holder_keys: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    lookups: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)

    def request(self, request: dict) -> tuple[str, pd.DataFrame, dict]:
        """Drop ``request`` in the lender's inbox and route it through every node."""
        inbox = self.lender.inbox()
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / f"{request.get('id', 'r')}.json").write_text(json.dumps(request))
        taken = self.lender.next_request(wait=0.5)
        assert taken is not None
        rows, sealed, lookup = self.lender.blind(self.lender_state, taken)
        self.routed += list(sealed.values())
        evaluated = {p: self.parties[p].evaluate(self.party_states[p], sealed[p])[0]
                     for p in sealed}
        self.routed += list(evaluated.values())
        lists = {}
        if lookup is not None:
            self.lookups.append(lookup)
            for holder, (settings, ids) in self.holders.items():
                setup, response, signature, _ = holder_answer(
                    settings, ids, lookup[0], rows, lookup[1],
                    self.holder_keys.setdefault(holder, {}), purpose=Purpose.service,
                    per_request=True)
                lists[holder] = (setup, response, signature)
        embedded = self.embed(self.lender.match(self.lender_state, evaluated))
        return self.lender.score(self.lender_state, embedded, lists)

    def embed(self, known: dict[str, bytes]) -> dict[str, bytes]:
        """Route the lender's sealed tags to each party and its sealed embeddings back."""
        self.routed += list(known.values())
        embedded = {p: self.parties[p].embed_known(self.party_states[p], known[p])[0]
                    for p in known}
        self.routed += list(embedded.values())
        return embedded


def start_service(run_dir: Path, results: dict, nodes: Path, *overrides: str,
                  node: Callable[[ClientSettings], ClientSettings] | None = None) -> Service:
    """Start a service on a simulated run's bundles: hello, the parties' tables, opened.

    ``node`` turns each passive party's settings into a deployed node's (its caps, opt-ins).
    """
    settings = to_settings(scoring_config(run_dir, ["scoring.rows=test", *overrides]))
    population = load_applicants(settings)  # the lender's: its test rows, every request's
    bundles = {p: run_dir / d for p, d in results["model"]["bundles"].items()}
    clients = {p: client_settings(settings, p, str(nodes / p), psi_cache=str(nodes / "cache"))
               for p in bundles}
    if node is not None:
        clients = {p: c if p == "lender" else node(c) for p, c in clients.items()}

    def applicants(request: dict):
        return population.tables["lender"]

    lender = ServedLender(clients["lender"], ScoringInput(bundles["lender"], population.tables[
        "lender"]), applicants)
    parties = {p: ServedParty(clients[p], ScoringInput(bundles[p], population.tables[p]))
               for p in bundles if p != "lender"}
    lender_state = NodeState()
    info, key = lender.hello(lender_state)
    routed, infos, tables, states = [key], {}, {}, {}
    for party, node in parties.items():
        states[party] = NodeState()
        sealed, party_key, infos[party] = node.sealed_table(states[party], key)
        tables[party] = (party_key, sealed)
        routed += [party_key, sealed]
    lender.open_tables(lender_state, tables)
    holders = {h: (client_settings(settings, h, str(nodes / h)),
                   [str(i) for i in list_table(settings, h).frame.index])
               for h in settings.blacklists.holders}
    return Service(lender, parties, lender_state, states, routed, run_dir, infos, holders)




def serve_in_process(settings, bundles: dict[str, Path], out: Path,
                     node: Callable[[ClientSettings], ClientSettings] | None = None,
                     explain: bool = True, first: int | None = None,
                     tamper: Callable[[Message], None] | None = None) -> dict:
    """Run a scoring service through the Flower apps on the in-process grid.

    The lender's inbox holds the requests and a stop before the service starts: ``one``, the
    run's test rows (the lender's table), and with ``first`` a request ``first`` of the first
    ``first`` of them; ``node`` turns each passive party's settings into a deployed node's;
    ``tamper`` alters each message the server routes to a node. Returns what was routed, the
    lender's answer to ``one`` (``scores``, None if it was refused; ``first``'s as
    ``scores_first``) and the server's record of ``one``.
    """
    from flwr.serverapp import ServerApp

    from credit_fl.batch_scoring import ScoringSimulationSource
    from fl_client.scoring_app import make_scoring_client_app
    from fl_server.app_factory import audited_in
    from fl_server.scoring_rounds import ScoringServerSettings
    from fl_server.scoring_service import run_scoring_service
    from tests.fake_grid import InProcessGrid, run_server_app

    clients = {p: client_settings(settings, p, str(out)) for p in bundles}
    if node is not None:
        clients = {p: c if p == "lender" else node(c) for p, c in clients.items()}
    source = ScoringSimulationSource(clients, settings, bundles)

    def with_applicants(context):
        own, data = source(context)
        def applicants(request: dict, t=data.table):
            return t.rows(np.arange(t.n_rows) < int(request["first"])) if "first" in request \
                else t

        return own, dataclasses.replace(data, applicants=applicants)

    inbox = out / "lender" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "one.json").write_text(json.dumps({"id": "one", "rows": "test"}))
    if first is not None:
        (inbox / "two.json").write_text(json.dumps({"id": "two", "first": first}))
    (inbox / "~stop.json").write_text(json.dumps({"stop": True}))
    routed: list[tuple[str, str, object]] = []
    app, status = ServerApp(), dict[str, object]()

    @app.main()
    def main(grid, context) -> None:
        try:
            status["outcome"] = run_scoring_service(
                audited_in(grid, out, 0.001), ScoringServerSettings(len(bundles),
                                                                    explain=explain),
                out / "service", lambda way, n, body: routed.append((way, str(n), body)),
                wait=0.5)
        except BaseException as exc:  # noqa: BLE001 (raised below, in the test's thread)
            status["error"] = exc

    client = make_scoring_client_app(with_applicants)

    def through_the_server(message: Message, context):
        if tamper is not None:
            tamper(message)
        return client(message, context)

    run_server_app(app, InProcessGrid(cast(ClientApp, through_the_server), len(bundles)))
    assert "error" not in status, status.get("error")

    def answer(request: str) -> pd.DataFrame | None:
        path = out / "lender" / "requests" / request / "scores.csv"
        return pd.read_csv(path, dtype={"id": str}, keep_default_na=False) \
            if path.exists() else None

    return {"out": out, "routed": routed, "scores": answer("one"),
            "scores_first": answer("two") if first is not None else None,
            "record": json.loads((out / "service" / "requests" / "one.json").read_text())}
