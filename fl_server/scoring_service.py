"""A long-lived scoring service on a deployment: one Flower run, many requests, four rounds each.

Once, when the service starts:

1. ``score_hello`` (every node): the bundles are checked as in batch scoring; the lender sends
   its signed channel key.
2. ``serve_table`` (each passive party): its set of tags, one per customer, sealed for the
   lender (:mod:`federation.service_table`): no embedding.
3. ``serve_open`` (lender): opens and keeps the tag sets. The service writes ``service.json``
   (``"state": "ready"``) in its directory.

Then, per request (the lender's operator drops ``{"applicants": <file>}`` in the lender node's
inbox; :func:`experiments.deploy.federation.score` does it on a loopback deployment):

* ``serve_next`` (lender): waits up to ``wait`` seconds for a request; answers with each
  party's sealed, blinded points (or ``idle``, or ``stop``);
* ``serve_eval`` (each passive party): the points multiplied by its key, each charged to its
  query ledger first; beside it, each blacklist holder answers the request's lookup
  (``score_list_answer``, as in batch scoring);
* ``serve_match`` (lender): which applicants each party knows; each party's tags of those, sealed;
* ``serve_embed`` (each passive party): the embeddings of those applicants, and of no other
  customer, sealed;
* ``serve_score`` (lender): opens the embeddings, scores, keeps the scores; counts back.

With reasons (``explain.enabled``, a vertical ``split_mlp`` or ``scorecard``), ``serve_embed``
asks each party for its sealed codes (a scorecard) or path (a split network) beside the
embeddings, ``serve_score`` ranks a scorecard's reasons, and a split network's request takes two
more rounds, ``explain_columns`` (each party's columns' points) and ``explain_reasons`` (the
lender joins the reasons to the request's scores). The server gets the explanation's counts.

So a request costs the lender's reply to the message that was waiting for it, and four rounds:
a party releases embeddings only for the applicants of a request it was paid for (charged),
never a table of every customer. The server sees sealed bytes and counts, never an ID, an
embedding or a score; it writes ``requests/<id>.json`` (counts, each party's query ledger
figures, timings) for each request.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from credit_data.errors import FederationError
from credit_data.settings import LABEL_HOLDER
from federation.protocol import ARRAYS, CONFIG, METRICS, ScoringMessage, pack_blobs
from federation.service_table import REQUEST_ID
from federation.storage import write_atomic
from fl_server.scoring_rounds import ScoringOutcome, ScoringServerSettings, hello
from fl_server.vertical_rounds import Recorder, Router

log = logging.getLogger("credit_fl")

SERVICE_FILE = "service.json"
REQUESTS = "requests"
WAIT = 20.0
"""Seconds the lender holds ``serve_next`` open for a request before it answers ``idle``."""


def _config(**values: Any) -> RecordDict:
    return RecordDict({CONFIG: ConfigRecord(values)})


def _info(content: RecordDict) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(str(content[CONFIG]["info"])))


def _status(directory: Path, **values: Any) -> None:
    write_atomic(directory / SERVICE_FILE, json.dumps(values, indent=2, default=str) + "\n")


def _open_tables(router: Router, out: ScoringOutcome, key: bytes,
                 passive: tuple[str, ...]) -> dict[str, Any]:
    tables = router.send(ScoringMessage.SERVE_TABLE, {p: _config(key=key) for p in passive})
    config: dict[str, Any] = {"passive": list(passive)}
    for p in passive:
        config[f"{p}.key"] = tables[p][CONFIG]["key"]
        info = _info(tables[p])
        out.alignment[p] = {"rows": info["rows"], "table_cached": info["table_cached"]}
        spent = {k: v for k, v in info.items() if k not in ("rows", "table_cached")}
        if spent:  # a release's spend, or what leaves outside any epsilon (opted in)
            out.privacy[p] = spent
    opened = router.send(ScoringMessage.SERVE_OPEN, {LABEL_HOLDER: RecordDict({
        CONFIG: ConfigRecord(config),
        ARRAYS: ArrayRecord({p: tables[p][ARRAYS]["table"] for p in passive})})})
    return {p: int(cast(float, opened[LABEL_HOLDER][METRICS][f"{p}.rows"])) for p in passive}


def _one_request(router: Router, taken: RecordDict, passive: tuple[str, ...],
                 holders: tuple[str, ...], explain: bool = False) -> dict[str, Any]:
    """Route one request: parties evaluate (holders answer the lookup); match; embed; score."""
    config = taken[CONFIG]
    rows = int(cast(float, taken[METRICS]["rows"]))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    kinds = ({p: str(ScoringMessage.SERVE_EVAL) for p in passive}
             | dict.fromkeys(holders, str(ScoringMessage.LIST_ANSWER)))
    answers = router.send(kinds, {p: _config(sealed=config[f"{p}.sealed"]) for p in passive}
                          | {h: _config(request=config["lookup.request"],
                                        key=config["lookup.key"], asked=rows,
                                        purpose="scoring", served=1) for h in holders}
                          ) if kinds else {}
    seconds["serve_eval"] = time.perf_counter() - start
    embedded: dict[str, Any] = {}  # each party's sealed embeddings, "<party>.embedded"
    paths: dict[str, bytes] = {}  # each explaining party's sealed codes or path, packed
    withheld: list[str] = []
    if passive:  # Flower's ConfigRecord cannot size an empty list
        embedded, paths, withheld = _match_and_embed(router, answers, passive, explain, seconds)
    counts = _score(router, answers, embedded, paths, holders, explain, seconds)
    if withheld:
        counts.setdefault("explanation", {})["columns_withheld"] = withheld
    record: dict[str, Any] = {
        "lender": counts,
        "asked": {p: int(cast(float, answers[p][METRICS]["asked"])) for p in passive},
        "queries": {p: {k: int(cast(float, v)) for k, v in answers[p][METRICS].items()
                        if k != "asked"} for p in passive},
        "seconds": seconds}
    if holders:
        record["blacklists"] = {h: {
            "asked": int(cast(float, answers[h][METRICS]["asked"])),
            "listed": int(counts.get("listed", {}).get(h, 0)),
            "max_queries": int(cast(float, answers[h][METRICS]["max_queries"]))}
            for h in holders}
    return record


def _match_and_embed(router: Router, answers: dict[str, RecordDict], passive: tuple[str, ...],
                     explain: bool, seconds: dict[str, float]
                     ) -> tuple[dict[str, Any], dict[str, bytes], list[str]]:
    """Have the lender match the parties' points, then each party embed the applicants it knows.

    Returns each party's sealed embeddings by ``<party>.embedded``, the sealed codes or paths of
    the parties that explain (packed, by party), and the parties that withhold theirs.
    """
    step = time.perf_counter()
    matched = router.send(ScoringMessage.SERVE_MATCH, {LABEL_HOLDER: _config(
        passive=list(passive), **{f"{p}.evaluated": answers[p][CONFIG]["evaluated"]
                                  for p in passive})})[LABEL_HOLDER]
    seconds["serve_match"] = time.perf_counter() - step
    step = time.perf_counter()
    sent = router.send(ScoringMessage.SERVE_EMBED, {
        p: _config(known=matched[CONFIG][f"{p}.known"], **({"explain": 1} if explain else {}))
        for p in passive})
    seconds["serve_embed"] = time.perf_counter() - step
    embedded: dict[str, Any] = {}
    paths: dict[str, bytes] = {}
    withheld: list[str] = []
    for p in passive:
        known = int(cast(float, matched[METRICS][f"{p}.known"]))
        if _info(sent[p])["rows"] != known:
            raise FederationError(f"request: the lender found {known} applicants {p} knows, "
                                  f"{p} embedded {_info(sent[p])['rows']}")
        embedded[f"{p}.embedded"] = sent[p][CONFIG]["embedded"]
        if _info(sent[p]).get("explains") is False:  # its own choice: one factor
            withheld.append(p)
        sealed = {str(name): cast(bytes, blob) for name, blob in sent[p][CONFIG].items()
                  if str(name).startswith("explain.")}
        if sealed:
            paths[p] = pack_blobs(sealed)
    return embedded, paths, withheld


def _score(router: Router, answers: dict[str, RecordDict], embedded: dict[str, Any],
           paths: dict[str, bytes], holders: tuple[str, ...], explain: bool,
           seconds: dict[str, float]) -> dict[str, Any]:
    """Have the lender open the embeddings and score (a split network: explain); its counts."""
    forward: dict[str, Any] = dict(embedded)
    if explain:
        forward["explain"] = 1
    if paths:  # in the config, as the embeddings: no array record to store and pull
        forward["explaining"] = list(paths)
        forward |= {f"{p}.explained": blob for p, blob in paths.items()}
    passive = [name.removesuffix(".embedded") for name in embedded]
    if passive:
        forward["passive"] = passive
    if holders:
        forward["holders"] = list(holders)
        for h in holders:
            for key in ("setup", "response", "signature"):
                forward[f"{h}.{key}"] = answers[h][CONFIG][key]
    step = time.perf_counter()
    scored = router.send(ScoringMessage.SERVE_SCORE, {LABEL_HOLDER: RecordDict({
        CONFIG: ConfigRecord(forward)})})
    seconds["serve_score"] = time.perf_counter() - step
    counts = _info(scored[LABEL_HOLDER])
    gradients = {str(k).removesuffix(".gradients"): cast(bytes, v)
                 for k, v in scored[LABEL_HOLDER][CONFIG].items()
                 if str(k).endswith(".gradients")}
    if explain and gradients:  # a split network: two more rounds
        step = time.perf_counter()
        counts["explanation"] = _explain(router, gradients)
        seconds["explanation"] = time.perf_counter() - step
    return counts


def _explain(router: Router, sealed: dict[str, bytes]) -> dict[str, Any]:
    """Send each party the head's gradients along its path; the lender its columns' points.

    Sealed bytes in the config, each party's and the lender's: one object a message.
    """
    parties = list(sealed)
    replies = router.send(ScoringMessage.EXPLAIN, {p: _config(served=1, gradients=sealed[p])
                                                   for p in parties})
    config: dict[str, Any] = {"served": 1, "passive": parties, "explaining": parties}
    for p in parties:
        config[f"{p}.names"] = list(cast(list[str], replies[p][CONFIG]["names"]))
        config[f"{p}.columns"] = replies[p][CONFIG]["columns"]
    reasons = router.send(ScoringMessage.REASONS, {LABEL_HOLDER: _config(**config)})
    return _info(reasons[LABEL_HOLDER])


def run_scoring_service(grid: Grid, s: ScoringServerSettings, directory: Path,
                        recorder: Recorder | None = None, wait: float = WAIT
                        ) -> ScoringOutcome:
    """Serve scoring requests until the lender's inbox says ``stop``; return the counts."""
    out = ScoringOutcome()
    router = Router(grid, out, s.round_timeout, recorder)
    start = time.perf_counter()
    request, passive, holders = hello(grid, router, out, s, serve=True)
    sizes = _open_tables(router, out, cast(bytes, request["key"]), passive)
    out.seconds["start"] = time.perf_counter() - start
    (directory / REQUESTS).mkdir(parents=True, exist_ok=True)
    _status(directory, state="ready", model_id=out.model_id, parties=out.parties,
            absent=out.absent, tables=sizes, privacy=out.privacy, seconds=out.seconds,
            refused_nodes=out.refused_nodes)
    log.info("scoring service ready: %s", sizes)
    served = 0
    while True:
        taken = router.send(ScoringMessage.SERVE_NEXT, {LABEL_HOLDER: _config(wait=wait)})[
            LABEL_HOLDER]
        state = str(taken[CONFIG]["state"])
        if state == "idle":
            continue
        if state == "stop":
            break
        request_id = str(taken[CONFIG]["request"])
        if not REQUEST_ID.fullmatch(request_id):  # it names a file here
            raise FederationError(f"the lender named a request {request_id!r}: not one plain "
                                  "name")
        record: dict[str, Any] = {"request": request_id, "model_id": out.model_id,
                                  "parties": out.parties, "absent": out.absent,
                                  "rows": int(cast(float, taken[METRICS]["rows"]))
                                  if METRICS in taken else 0}
        if state == "refused":
            record["error"] = str(taken[CONFIG]["refused_request"])
        else:
            try:
                record |= _one_request(router, taken, passive, holders, s.explain)
                served += 1
            except FederationError as exc:  # one request's refusal; the service goes on
                record["error"] = str(exc)
        write_atomic(directory / REQUESTS / f"{request_id}.json",
                     json.dumps(record, indent=2, default=str) + "\n")
    out.seconds["total"] = time.perf_counter() - start
    out.lender = {"requests": served}
    _status(directory, state="stopped", model_id=out.model_id, parties=out.parties,
            requests=served, seconds=out.seconds)
    return out
