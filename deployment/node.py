"""Start a partner's node: ``python -m deployment.node --party bureau --data bureau.csv ...``.

One command runs the two processes of a node on the partner's machine:

* Flower's SuperNode (``fl_client.supernode``: ``flower-supernode`` with a short idle poll),
  which connects to the coordinator's SuperLink over TLS and authenticates with the node's
  private key; its ``--node-config`` (written to ``<state-dir>/node-config.toml``) holds the
  party, the data path and the node's own ``max-epsilon``;
* the party worker (:mod:`fl_client.executor`), which keeps the app, torch and the party's data
  loaded and runs each message the SuperNode receives (``--isolation process``).

It stops both when either ends, on Ctrl-C and on SIGTERM, and exits with the SuperNode's code
(a refused node exits non-zero with Flower's reason in its log). Killed (``kill -9``), it cannot
stop the SuperNode itself: the kernel does, with the parent-death signal the SuperNode is
started with (:mod:`deployment.lifeline`), so no orphan keeps answering the SuperLink or holds
the Runtime API port, and the SuperLink marks the node offline at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import tomli_w

from credit_data.errors import EngineVersionError
from credit_data.settings import DUCKDB_SUFFIXES
from deployment.lifeline import die_with_parent
from federation.credentials import write_private
from federation.flower_compat import QUIET, check_engine_versions
from federation.grants import Grant
from federation.monitoring_release import MONITOR_MIN_COUNT
from federation.query_ledger import NODE_KEYS, QUERY_MULTIPLE, TRAINING_MULTIPLE
from federation.releases import OPT_IN_KEYS
from fl_client.supernode import DEFAULT_POLL, POLL_ENV

APP_ID = "credit-fl/credit-fl-app"
"""The Flower app (publisher/name) a node runs; a run of another app gets an error reply."""


def _cap(text: str) -> float | None:
    """Parse ``--max-epsilon``: a positive number, or ``none`` (no cap, said explicitly)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or 'none', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    """Return the node's command line: every flag a partner sets, with its help.

    Long because it is one list of arguments: each ``add_argument`` is the whole story of its
    flag, and splitting the list would only scatter the help a partner reads top to bottom.
    """
    p = argparse.ArgumentParser(prog="python -m deployment.node", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--party", required=True,
                   help="lender, bureau or social (vertical); lender-<k> (horizontal)")
    p.add_argument("--data", required=True, type=Path,
                   help="this party's own CSV or Parquet file, or DuckDB database (with --query)")
    p.add_argument("--superlink", required=True, help="the coordinator's SuperLink, host:port")
    p.add_argument("--root-certificates", type=Path,
                   help="the federation's CA certificate (PEM), to check the SuperLink's TLS")
    p.add_argument("--auth-key", type=Path,
                   help="this node's private key (the coordinator registered its public key)")
    p.add_argument("--peer-keys", type=Path,
                   help="a directory of the other parties' public keys (<party>.pub), "
                        "exchanged with the partners: the node signs its alignment channel key "
                        "with --auth-key and refuses a peer's that is not signed")
    p.add_argument("--state-dir", required=True, type=Path,
                   help="where the node keeps its accountant, audit log and outputs")
    p.add_argument("--max-epsilon", required=True, type=_cap,
                   help="required: this node's lifetime privacy limit over every run, whatever "
                        "its data file; requests past it are refused ('none': no cap, the "
                        "partner's explicit choice)")
    p.add_argument("--categorical", default="", help="comma-separated non-numeric columns")
    p.add_argument("--query", help="with --data naming a DuckDB database (.duckdb): the SQL "
                   "whose result is this party's table (read-only, no other file reachable)")
    p.add_argument("--consent", type=Path,
                   help="this party's consent records (CSV; docs/consent.md): only customers "
                        "consenting to a run's purpose take part")
    p.add_argument("--release-consent-counts", action="store_true",
                   help="with --consent: tell the server, besides the rows a run uses (its set "
                        "size), how many of your customers you hold, withdrew or have no "
                        "record (aggregate counts for results.json; recorded in your ledger)")
    p.add_argument("--grant", help="the name of this node's grant (its agreement): with the "
                   "--grant-* flags, what it serves; a run outside it is refused, naming it")
    p.add_argument("--grant-purposes", default="",
                   help="comma-separated purposes the grant covers (default: all)")
    p.add_argument("--grant-lenders", default="",
                   help="comma-separated lenders the grant covers (default: all)")
    p.add_argument("--grant-expires", default="", help="when the grant ends (ISO 8601)")
    p.add_argument("--applicants-dir", type=Path,
                   help="lender: the directory of new applicants' CSV files a scoring run may "
                        "name (scoring.applicants=<file>)")
    p.add_argument("--id-column", help="the ID column (default: the run's data.id_column)")
    p.add_argument("--lender-applications", type=int,
                   help="a party or blacklist holder: the lender's applications a month, as "
                        "your agreement with it declares them; your node's query caps default "
                        f"to {QUERY_MULTIPLE}x it a month and a tenth of that a day (without it "
                        "or --max-queries your node answers none of the lender's IDs)")
    p.add_argument("--lender-training-rows", type=int,
                   help="a party or blacklist holder: the lender's training table (its "
                        "historic applicants), as your agreement declares it; training "
                        f"alignments may ask {TRAINING_MULTIPLE}x it a month (default: they "
                        "count against the monthly cap of applications)")
    p.add_argument("--max-queries", type=int,
                   help="the IDs of applications one lender may ask this node per calendar "
                        "month (UTC), every path counted in one ledger (scoring, a scoring "
                        "service, blacklist lookups); past it the node refuses (default: "
                        f"{QUERY_MULTIPLE}x --lender-applications; a run's "
                        "blacklists.max_queries may lower it, never raise it)")
    p.add_argument("--max-queries-per-day", type=int,
                   help="the same, per UTC day (default: a tenth of the monthly cap)")
    p.add_argument("--monitor-min-count", type=int,
                   help="the fewest rows any monitoring figure this node sends describes: bins "
                        "merged to at least this many, no model section of a smaller period, "
                        "no default rate of a smaller grade; a request may raise it, never "
                        f"lower it (default: {MONITOR_MIN_COUNT})")
    p.add_argument("--release-exact-embeddings", action="store_true",
                   help="a passive party: let runs and scoring send the lender exact "
                        "(un-noised) embeddings of your customers, a release outside any "
                        "epsilon (without it your node refuses them; recorded in your ledger)")
    p.add_argument("--release-record-gradients", action="store_true",
                   help="the lender (vertical): let training send each party the per-record "
                        "gradients of its embeddings, a release outside any epsilon (they "
                        "carry your features' influence; without it your node refuses)")
    p.add_argument("--release-explanations", action="store_true",
                   help="a passive party: let scoring send the lender, per applicant and column "
                        "of yours, the points it moved the score (reason codes), a release "
                        "outside any epsilon (without it your columns are one factor)")
    p.add_argument("--release-monitoring", action="store_true",
                   help="a party: answer monitoring requests (deploy monitor) with the "
                        "stability index and merged bins' counts of your rows per column; "
                        "under a DP budget (capped, or the model trained under DP) the counts "
                        "are noised and charged, otherwise exact, outside any epsilon "
                        "(recorded in your ledger); without it your node refuses")
    p.add_argument("--periods-dir", type=Path,
                   help="a party: the directory of your later periods' files a monitoring "
                        "request may name (monitor.period=<file>; without it the node "
                        "monitors its --data)")
    p.add_argument("--list-mode", choices=("lookup", "cardinality"), default="lookup",
                   help="blacklist holder: tell a lender which of its applicants are on the "
                        "list (lookup, the only mode answered); cardinality (only how many) "
                        "is withdrawn and refused: an exact count of a small request, or a "
                        "difference of two, says which IDs are listed")
    p.add_argument("--runtime-port", type=int, default=9094,
                   help="local port of the SuperNode's Runtime API (loopback only)")
    p.add_argument("--max-retries", type=int, default=30,
                   help="connection attempts before the SuperNode gives up (default 30)")
    p.add_argument("--insecure", action="store_true",
                   help="connect without TLS (any SuperLink of this project refuses it)")
    p.add_argument("--poll-interval", type=float, default=DEFAULT_POLL,
                   help=f"seconds an idle SuperNode waits before it asks the SuperLink again "
                        f"(0.01 to 3; default {DEFAULT_POLL}; Flower waits 3)")
    p.add_argument("--reproducible-noise", action="store_true",
                   help="derive this node's noise from the public seed: for research only, "
                        "its epsilon is then no guarantee (a run config cannot ask for it)")
    return p


def node_config(args: argparse.Namespace) -> dict[str, object]:
    """Return the node's own config, as the ClientApp reads it (:mod:`deployment.client_app`)."""
    config: dict[str, object] = {"party": args.party, "data-path": str(args.data.resolve()),
                                 "state-dir": str(args.state_dir.resolve()),
                                 "categorical": args.categorical}
    config["max-epsilon"] = "none" if args.max_epsilon is None else float(args.max_epsilon)
    if args.id_column:
        config["id-column"] = args.id_column
    if args.reproducible_noise:
        config["reproducible-noise"] = True
    if args.applicants_dir is not None:
        config["applicants-dir"] = str(args.applicants_dir.resolve())
    if args.periods_dir is not None:
        config["periods-dir"] = str(args.periods_dir.resolve())
    if args.query:
        config["data-query"] = args.query
    if args.consent is not None:
        config["consent"] = str(args.consent.resolve())
    if args.grant:
        config |= {"grant": args.grant, "grant-purposes": args.grant_purposes,
                   "grant-lenders": args.grant_lenders, "grant-expires": args.grant_expires}
    for key in NODE_KEYS:
        value = getattr(args, key.replace("-", "_"))
        if value is not None:
            config[key] = int(value)
    if args.monitor_min_count is not None:
        config["monitor-min-count"] = args.monitor_min_count
    for key in OPT_IN_KEYS:
        if getattr(args, key.replace("-", "_")):
            config[key] = True
    config["list-mode"] = args.list_mode
    if args.peer_keys is not None:
        config["signing-key"] = str(args.auth_key.resolve())
        config["peer-keys"] = str(args.peer_keys.resolve())
    return config


def _check(args: argparse.Namespace) -> None:
    if not args.data.is_file():
        raise SystemExit(f"error: --data {args.data}: file not found")
    database = args.data.suffix.lower() in DUCKDB_SUFFIXES
    if database and not args.query:
        raise SystemExit(f"error: --data {args.data} is a DuckDB database: --query is required "
                         "(the SQL that selects this party's rows)")
    if args.query and not database:
        raise SystemExit(f"error: --query needs --data to name a DuckDB database "
                         f"({', '.join(DUCKDB_SUFFIXES)}), got {args.data}")
    if (args.grant_purposes or args.grant_lenders or args.grant_expires) and not args.grant:
        raise SystemExit("error: --grant-purposes, --grant-lenders and --grant-expires need "
                         "--grant (the grant's name, which a refusal cites)")
    if args.grant:
        try:
            Grant.parse(args.grant, args.grant_purposes, args.grant_lenders, args.grant_expires)
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from exc
    if args.consent is not None and not args.consent.is_file():
        raise SystemExit(f"error: --consent {args.consent}: file not found")
    if args.applicants_dir is not None and not args.applicants_dir.is_dir():
        raise SystemExit(f"error: --applicants-dir {args.applicants_dir}: no such directory")
    if args.periods_dir is not None and not args.periods_dir.is_dir():
        raise SystemExit(f"error: --periods-dir {args.periods_dir}: no such directory")
    for key in NODE_KEYS:
        value = getattr(args, key.replace("-", "_"))
        if value is not None and value < 1:
            raise SystemExit(f"error: --{key} must be at least 1, got {value}")
    if args.monitor_min_count is not None and args.monitor_min_count < 1:
        raise SystemExit(f"error: --monitor-min-count must be at least 1, got "
                         f"{args.monitor_min_count}")
    if args.max_epsilon is not None and not args.max_epsilon > 0:
        raise SystemExit(f"error: --max-epsilon must be positive, got {args.max_epsilon}")
    if not 0.01 <= args.poll_interval <= 3.0:
        raise SystemExit(f"error: --poll-interval must lie between 0.01 and 3 seconds, got "
                         f"{args.poll_interval}")
    if not args.insecure and args.root_certificates is None:
        raise SystemExit("error: --root-certificates is required (or --insecure, which the "
                         "SuperLink refuses)")
    if args.peer_keys is not None and args.auth_key is None:
        raise SystemExit("error: --peer-keys needs --auth-key (the key the node signs with)")
    if args.peer_keys is not None and not args.peer_keys.is_dir():
        raise SystemExit(f"error: --peer-keys {args.peer_keys}: no such directory")
    for flag, path in (("--root-certificates", args.root_certificates),
                       ("--auth-key", args.auth_key)):
        if path is not None and not path.is_file():
            raise SystemExit(f"error: {flag} {path}: file not found")


def redactor(args: argparse.Namespace) -> Callable[[str], str]:
    """Return a function that puts the flag naming each of this node's paths in their place.

    An error a node sends the coordinator names the file at fault by the flag that named it
    (``<--data>: file is empty``), never by the node's absolute path; its own log keeps the path.

    >>> args = _parser().parse_args(["--party", "bureau", "--data", "/srv/b/bureau.csv",
    ...     "--superlink", "x:1", "--state-dir", "/srv/b", "--max-epsilon", "3"])
    >>> redactor(args)("DataError: /srv/b/bureau.csv: empty; /srv/b/run/bureau/model: bad")
    'DataError: <--data>: empty; <--state-dir>/run/bureau/model: bad'
    """
    named = {"--data": args.data, "--state-dir": args.state_dir,
             "--applicants-dir": args.applicants_dir, "--peer-keys": args.peer_keys,
             "--periods-dir": args.periods_dir,
             "--consent": args.consent,
             "--auth-key": args.auth_key, "--root-certificates": args.root_certificates}
    paths = sorted(((str(Path(p).resolve()), f"<{flag}>") for flag, p in named.items()
                    if p is not None), key=lambda pair: -len(pair[0]))  # the longest first

    def redact(text: str) -> str:
        for path, flag in paths:
            text = text.replace(path, flag)
        return text

    return redact


RUNTIME_SECRET = "runtime-api.secret"
"""The node's Runtime API secret, in its state directory (0600), fresh at every start."""


def runtime_secret(state_dir: Path) -> tuple[Path, bytes]:
    """Write a fresh secret for the SuperNode's Runtime API; return its file and the secret.

    With it, Flower's SuperNode (``--superexec-auth-secret-file``) answers a request for the
    next task only when it is signed with the secret (HMAC, with a timestamp and a nonce): a
    local process that does not hold the file can no longer take the node's tasks, and with
    them the party's messages and its noise key. The party worker signs its requests.
    """
    path = state_dir / RUNTIME_SECRET
    secret = secrets.token_bytes(32)
    write_private(path, secret)  # over any file made earlier, whatever its mode or owner
    return path, secret


def check_port_free(port: int) -> None:
    """Refuse to start when the Runtime API port is taken, naming the port and the likely cause.

    The SuperNode would otherwise fail to bind it and the node would report a SuperNode that
    stopped, which reads as the SuperLink's doing.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the SuperNode binds it
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(
                f"error: --runtime-port {port}: the port is in use ({exc.strerror}). Another "
                "process holds it: often the SuperNode of this node's previous start, still "
                f"stopping (wait a few seconds) or left running (find it with `ss -ltnp "
                f"'sport = :{port}'` and stop it), or choose another --runtime-port") from None


def stop_process(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """Terminate a child process; kill it if it is still there after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def supernode_command(args: argparse.Namespace, config_file: Path, secret: Path) -> list[str]:
    """Return the SuperNode's command line."""
    cmd = [sys.executable, "-m", "fl_client.supernode", "--superlink", args.superlink,
           "--isolation", "process", "--port", str(args.runtime_port),
           "--superexec-auth-secret-file", str(secret),
           "--node-config", str(config_file), "--max-retries", str(args.max_retries)]
    if args.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(args.root_certificates)]
    if args.auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(args.auth_key)]
    return cmd


def main(argv: list[str] | None = None) -> int:
    """Run the node until the SuperNode ends or the process is stopped."""
    args = _parser().parse_args(argv)
    try:  # the node's worker and SuperNode tuning rely on this exact Flower release
        check_engine_versions(("flwr",))
    except EngineVersionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _check(args)
    check_port_free(args.runtime_port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.update(QUIET)  # the SuperNode inherits it
    args.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_file = args.state_dir / "node-config.toml"
    config_file.write_text(tomli_w.dumps(node_config(args)), encoding="utf-8")

    secret_file, secret = runtime_secret(args.state_dir)
    supernode = subprocess.Popen(supernode_command(args, config_file, secret_file),  # connects
                                 env={**os.environ, POLL_ENV: str(args.poll_interval)},
                                 preexec_fn=die_with_parent())  # it dies with this process

    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        from deployment.client_app import app  # torch and the handlers load once, here
        from fl_client.executor import serve

        serve(f"127.0.0.1:{args.runtime_port}", app, expected_fab_id=APP_ID, stop=stop,
              alive=lambda: supernode.poll() is None, secret=secret, redact=redactor(args))
    finally:
        secret_file.unlink(missing_ok=True)
        stop_process(supernode)
    code = supernode.returncode
    if not stop.is_set() and code:
        print(f"error: the SuperNode of '{args.party}' stopped with exit code {code}: the "
              f"SuperLink at {args.superlink} refused it (a node whose key is not registered, "
              "or that connects without TLS, is refused; a SuperLink restarted without its "
              "database has forgotten the registrations; a node lost without leaving is "
              "refused until the SuperLink counts it offline, 20 s after its last heartbeat: "
              "start it again then) or stayed unreachable for "
              f"--max-retries {args.max_retries} attempts (stopped). Check with the "
              "coordinator, then start the node again", file=sys.stderr)
        return code
    if not stop.is_set():  # nobody stopped this node, yet its SuperNode left
        print(f"error: the SuperNode of '{args.party}' ended on its own: the SuperLink at "
              f"{args.superlink} told it to leave. Most likely its registration was removed "
              "(`flwr supernode unregister`, which any process holding the federation's "
              "ca.crt can call on the coordinator's machine): ask the coordinator whether "
              "`flwr supernode list` still shows this node, and to register your public key "
              "again before you start the node again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
