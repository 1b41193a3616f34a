"""The data-usage record a regulator reads: ``credit-fl audit report <logs ...>``.

From node and server audit logs (:mod:`federation.audit_log`) it builds one record per party
and run: the purposes, how many customers' rows each purpose used (the node's ``consent``
lines; :mod:`fl_client.consent_gate`), what left the node (message kinds, array shapes, bytes),
the epsilon the run spent against the node's lifetime budget (a deployed node notes its
ledger's spend and cap on each line: :data:`federation.lifetime_budget.NOTE_SPENT`), its
refusals, the first and last time, and whether its chain verifies and matches the anchor the
server's log holds. As JSON (``--json``) and as a
markdown page (``--markdown``, else printed) laid out after the GDPR Art. 30 record of
processing and the PIPL Art. 55-56 personal-information impact assessment. A log that fails
verification is reported first and the command exits with 1, and so does a node's note that
does not hang together (:mod:`federation.lifetime_notes`: a spend past its cap, below its run's
own, one that went down or a cap that rose without a reset, runs that do not add up); a line
edited to hold NaN or Infinity is a changed line; a file that is not a log at all is refused
(exit 2) and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from credit_data.consent import TRAINING, consented, latest, read_records
from federation.audit_log import NotFinite, Verdict, anchors, parse_line, verify
from federation.lifetime_budget import NOTE_CAP, NOTE_SPENT, run_spend, spend_figures
from federation.lifetime_notes import (
    CONTINUES,
    Note,
    additions,
    below_run,
    deployed,
    did_not_add_up,
    figures_to_last_note,
    notes,
    past_cap,
    unnoted,
    went_down,
)

NO_RECORDS = "no consent records: all rows used"


class NotALog(ValueError):
    """A file given as an audit log is none (missing, empty, or its first line is not one)."""


def _entries(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise NotALog(f"{path}: no such file")
    texts = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not texts:
        raise NotALog(f"{path}: empty; an audit log has at least one line")
    entries = []
    for number, text in enumerate(texts, start=1):
        try:
            entry = parse_line(text)
            if not isinstance(entry, dict) or "seq" not in entry or "event" not in entry:
                raise ValueError("no 'seq' or 'event'")
        except NotFinite:
            continue  # a line edited to hold NaN or Infinity: verification reports it changed
        except ValueError as exc:
            if number == 1:
                raise NotALog(f"{path}: line 1 is not an audit log line ({exc})") from exc
            continue  # a damaged later line: verification reports it
        entries.append(entry)
    if not entries:
        raise NotALog(f"{path}: no line of it can be read")
    return entries


def _run_of(path: Path) -> str:
    """Return the run a log belongs to.

    ``<run>/parties/<party>/``, ``<run>/server/``, or a deployed node's
    ``<state-dir>/<run>/<party>/``.
    """
    up = path.resolve().parent.parent
    return up.parent.name if up.name == "parties" else up.name


def _continues(path: Path) -> str | None:
    """Return the run a deployed node's resumed run continues (None: not a resumed run)."""
    kept = path.resolve().parent.parent / CONTINUES
    return kept.read_text(encoding="utf-8").strip() or None if kept.is_file() else None


def _is_server(entries: list[dict[str, Any]]) -> bool:
    return not any("party" in e for e in entries) and any(
        str(e.get("event", "")).startswith(("sent ", "received ")) for e in entries)


def _largest(figures: Any) -> float | None:
    values = [v for v in (figures or {}).values() if isinstance(v, int | float)]
    return max(values) if values else None


def lifetime(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the run's spend and the node's lifetime budget after its last noted line.

    ``run``: the run's epsilon as the node's ledger counts it (:func:`run_spend` of the
    cumulative figures its replies reported); ``spent``: the ledger's total since its last
    reset, every run's; ``cap``: the node's max-epsilon (None: no cap). None when no line
    carries the note (a simulated party keeps no lifetime ledger; a deployed node's unnoted
    lines are told apart by :func:`federation.lifetime_notes.deployed`).

    >>> lifetime([{"epsilon": {"epsilon": 0.4, "label_epsilon": 1.0},
    ...            "node": {"lifetime_epsilon": 3.4, "max_epsilon": 8.0}}])
    {'run': 1.4, 'spent': 3.4, 'cap': 8.0}
    """
    figures: dict[str, float] = {}
    noted = None
    for e in entries:
        for name, value in spend_figures(e.get("epsilon") or {}).items():
            figures[name] = max(figures.get(name, 0.0), value)
        note = e.get("node")
        if isinstance(note, dict) and isinstance(note.get(NOTE_SPENT), int | float):
            noted = note
    if noted is None:
        return None
    cap = noted.get(NOTE_CAP)
    return {"run": run_spend(figures), "spent": float(noted[NOTE_SPENT]),
            "cap": float(cap) if isinstance(cap, int | float) else None}


def party_record(path: Path, entries: list[dict[str, Any]], verdict: Verdict,
                 anchored: dict[str, Any] | None) -> dict[str, Any]:
    """Return one node log's record (see the module docstring)."""
    party = next((str(e["party"]) for e in entries if "party" in e), "unknown")
    kinds: Counter[str] = Counter()
    sent_bytes: Counter[str] = Counter()
    shapes: dict[str, list[Any]] = {}
    epsilon: float | None = None
    refusals, purposes = [], []
    consent: dict[str, dict[str, Any]] = {}
    for e in entries:
        event = str(e["event"])
        if event == "consent":
            consent[str(e["purpose"])] = {k: e.get(k) for k in (
                "dpv", "rows_held", "rows_used", "consented", "withdrawn", "no_record",
                "file_sha256", "time")}
            continue
        kinds[event] += 1
        if e.get("purpose") and e["purpose"] not in purposes:
            purposes.append(str(e["purpose"]))
        for name, what in (e.get("sent") or {}).items():
            if isinstance(what, dict):
                sent_bytes[event] += int(what.get("bytes", 0) or 0)
                if "shape" in what:
                    shapes.setdefault(f"{event}/{name}", list(what["shape"]))
        largest = _largest(e.get("epsilon"))
        if largest is not None:
            epsilon = largest if epsilon is None else max(epsilon, largest)
        if "refused" in e:
            refusals.append({"time": e.get("time"), "event": event, "reason": e["refused"]})
    anchor = None
    if anchored is not None:
        matches = verify(path, head=anchored["head"], key=anchored["key"]).ok
        anchor = {"server_seq": anchored["seq"], "matches": matches}
    return {
        "party": party, "run": _run_of(path), "log": str(path),
        "verified": verdict.ok, "problem": None if verdict.ok else str(verdict),
        "anchored": anchor, "lines": len(entries),
        "first": entries[0].get("time"), "last": entries[-1].get("time"),
        "purposes": purposes, "consent": consent or None,
        "messages": dict(sorted(kinds.items())), "bytes_sent": dict(sorted(sent_bytes.items())),
        "bytes_sent_total": sum(sent_bytes.values()), "shapes": shapes,
        "epsilon_reported": epsilon, "lifetime": lifetime(entries), "refusals": refusals,
        "deployed": deployed(entries), "lifetime_unnoted": unnoted(entries),
    }


def withdrawn_after(records: pd.DataFrame, trained: str) -> int:
    """Count the customers who consented to training at ``trained`` and withdrew since."""
    stamp = pd.Timestamp(trained)
    then = consented(records[records["time"] <= stamp], TRAINING)
    now = latest(records[records["purpose"] == TRAINING])
    gone = set(now.loc[(now["status"] == "withdrawn") & (now["time"] > stamp), "id"])
    return len(then & gone)


def retrain(record: dict[str, Any], consent_files: dict[str, Path], id_column: str) -> None:
    """Add to a training record the customers who withdrew since, and the bundle they trained.

    From the party's consent file as it is now (``--consent party=file``): a customer whose
    latest record granted ``credit_training`` when the run read its rows, and who withdrew
    after, trained the party's bundle of that run (``<log dir>/model``), which its owner may
    retrain.
    """
    training = (record["consent"] or {}).get(TRAINING)
    path = consent_files.get(record["party"])
    if training is None or path is None:
        return
    records = read_records(path, id_column)
    record["retrain"] = {"withdrawn_since_training": withdrawn_after(records, training["time"]),
                         "bundle": str(Path(record["log"]).parent / "model")}


def build_report(paths: list[Path], consent_files: dict[str, Path] | None = None,
                 id_column: str = "customer_id") -> dict[str, Any]:
    """Read and verify every log; return the report (raises :class:`NotALog` first)."""
    read = [(p, _entries(p)) for p in paths]  # every file is a log, or nothing is reported
    servers = {_run_of(p): anchors(p) for p, entries in read if _is_server(entries)}
    records, failed = [], []
    noted: dict[str, list[list[Note]]] = {}  # each party's runs' lifetime notes
    spends: dict[str, list[tuple[str, str | None, str, dict[str, float]]]] = {}
    for path, entries in read:
        verdict = verify(path)
        if not verdict.ok:
            failed.append({"log": str(path), "problem": str(verdict)})
        if _is_server(entries):
            continue
        run = _run_of(path)
        party = next((str(e["party"]) for e in entries if "party" in e), "unknown")
        anchored = servers.get(run, {}).get("nodes", {}).get(party)
        record = party_record(path, entries, verdict, anchored)
        retrain(record, consent_files or {}, id_column)
        if record["anchored"] is not None and not record["anchored"]["matches"]:
            failed.append({"log": str(path), "problem": "does not end at the head and key the "
                           "server's log anchored"})
        run_notes = notes(str(path), entries)  # the node's own word, checked
        failed += [{"log": str(path), "problem": p}
                   for p in past_cap(party, run_notes) + below_run(party, run_notes)]
        noted.setdefault(party, []).append(run_notes)
        spends.setdefault(party, []).append((run, _continues(path), str(entries[0].get(
            "time", "")), figures_to_last_note(entries)))
        records.append(record)
    for party, runs in sorted(noted.items()):
        failed += [{"log": log, "problem": p} for log, p in went_down(party, runs)
                   + did_not_add_up(party, runs, additions(spends[party]))]
    server_runs = {run: {"problems": a["problems"], "server": a["server"]}
                   for run, a in servers.items()}
    return {"verified": not failed, "failures": failed, "servers": server_runs,
            "records": sorted(records, key=lambda r: (r["run"], r["party"]))}


def render(report: dict[str, Any]) -> str:
    """Render the report as a markdown page (failures first)."""
    lines = ["# Data-usage record", ""]
    if report["failures"]:
        lines += ["## VERIFICATION FAILED", ""]
        lines += [f"- `{f['log']}`: {f['problem']}" for f in report["failures"]]
        lines += ["", "The records below come from logs that do not all verify: do not rely "
                  "on them until the failures above are explained.", ""]
    else:
        lines += ["Every log verifies (hash chain and writer's signature)"
                  + (", and ends where the server's log anchored it." if report["servers"]
                     else "; no server log was given, so no anchor was checked."), ""]
    for r in report["records"]:
        spent = _spent(r)
        anchored = ("no server log given" if r["anchored"] is None else
                    "matches the server's anchor" if r["anchored"]["matches"]
                    else "DOES NOT match the server's anchor")
        lines += [f"## {r['party']}, run {r['run']}", "",
                  "### Record of processing (GDPR Art. 30(1))", "",
                  f"- **Controller**: party `{r['party']}` (its own node and log, `{r['log']}`).",
                  f"- **Purposes**: {', '.join(r['purposes']) or 'none logged'}"
                  + ("; consent purposes: " + ", ".join(
                      f"`{p}` ({c['dpv']})" for p, c in r["consent"].items())
                     if r["consent"] else "") + ".",
                  "- **Data subjects**: " + ("; ".join(
                      f"`{p}`: {c['rows_used']:,} of {c['rows_held']:,} customers used "
                      f"({c['consented']:,} consented, {c['withdrawn']:,} withdrew, "
                      f"{c['no_record']:,} without a record)" for p, c in r["consent"].items())
                      if r["consent"] else NO_RECORDS) + ".",
                  f"- **Recipients**: the coordinator's server, which routes to the other "
                  f"parties: {sum(r['messages'].values())} replies, "
                  f"{r['bytes_sent_total']:,} bytes (below).",
                  f"- **Time**: {r['first']} to {r['last']}.",
                  f"- **Security measures**: signed hash chain "
                  f"({'verifies' if r['verified'] else 'FAILS: ' + str(r['problem'])}; "
                  f"{anchored}); {spent}.",
                  "", "### Impact assessment (PIPL Art. 55-56)", "",
                  "1. **Purpose and necessity**: " + (
                      "only customers whose latest consent record grants the purpose took part."
                      if r["consent"] else "no per-customer consent records were applied."),
                  "2. **What left the node** (message kinds, shapes, bytes; never values):", "",
                  "| message | replies | bytes | array shapes |", "|---|---:|---:|---|"]
        lines += [f"| {k} | {n} | {r['bytes_sent'].get(k, 0):,} | " + ", ".join(
                      f"{name.split('/', 1)[1]} {shape}" for name, shape in r["shapes"].items()
                      if name.split("/", 1)[0] == k) + " |"
                  for k, n in r["messages"].items()]
        if r.get("retrain"):
            lines += ["", f"**Retrain**: {r['retrain']['withdrawn_since_training']:,} customers "
                      f"whose rows trained this run's model (bundle `{r['retrain']['bundle']}`) "
                      "have withdrawn their training consent since."]
        lines += ["", "3. **Protective measures and refusals**: "
                  + (f"{len(r['refusals'])} refusal(s): " + "; ".join(
                      f"{x['time']} {x['event']}: {x['reason']}" for x in r["refusals"])
                     if r["refusals"] else "no refusal.")
                  + " Records kept: the log itself (keep three years, PIPL Art. 56).", ""]
    return "\n".join(lines)


def _spent(record: dict[str, Any]) -> str:
    """Say what the run spent against the node's lifetime budget."""
    budget = record.get("lifetime")
    largest = ("none (no mechanism spent)" if record["epsilon_reported"] is None
               else f"{record['epsilon_reported']:.4g}")
    if budget is None:
        return (("no lifetime note (deployed node): its lines do not say what its ledger holds"
                 if record.get("deployed") else
                 "no lifetime budget in the log (a simulated party)")
                + f"; largest epsilon reported: {largest}")
    spent = (f"{budget['spent']:.4g} spent since its last reset (no cap: its partner's choice)"
             if budget["cap"] is None else
             f"{budget['spent']:.4g} of its cap {budget['cap']:.4g} spent since its last reset")
    missing = record.get("lifetime_unnoted") or []
    return (f"epsilon spent by this run {budget['run']:.4g}; the node's lifetime budget "
            f"(every run's): {spent}" + (
                f"; {len(missing)} of its lines carry no lifetime note (deployed node; "
                f"first: line {missing[0]})" if missing else ""))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def parser() -> argparse.ArgumentParser:
    """Return the command line's parser (``credit-fl audit report``)."""
    parser = argparse.ArgumentParser(prog="credit-fl audit report")
    parser.add_argument("logs", nargs="+", type=Path, help="node and server audit logs")
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the page here (else printed)")
    parser.add_argument("--consent", action="append", default=[], metavar="PARTY=FILE",
                        help="a party's consent file as it is now: counts who withdrew since "
                             "each training run, whose bundle to retrain")
    parser.add_argument("--id-column", default="customer_id",
                        help="the consent files' ID column")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``credit-fl audit report <logs ...> [--json F] [--markdown F] [--consent P=F]``."""
    command = parser()
    args = command.parse_args(sys.argv[1:] if argv is None else argv)
    files = {}
    for given in args.consent:
        party, _, name = given.partition("=")
        if not party or not name:
            command.error(f"--consent {given!r}: expected party=file")
        files[party] = Path(name)
    try:
        report = build_report(args.logs, files, args.id_column)
    except (NotALog, ValueError) as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 2
    page = render(report)
    if args.json is not None:
        _write(args.json, json.dumps(report, indent=2) + "\n")
    if args.markdown is not None:
        _write(args.markdown, page)
    else:
        print(page)
    if not report["verified"]:
        print("error: " + "; ".join(f"{f['log']}: {f['problem']}" for f in report["failures"]),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
