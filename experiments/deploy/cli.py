"""A whole federation on this machine, on Flower's deployment engine.

``credit-fl deploy <command>`` (alias ``python -m experiments.deploy``):

``up [key=value ...]``
    Make a CA, the SuperLink's certificate and one key pair per node; start a SuperLink with TLS
    and SuperNode authentication (and no runtime dependency installation); register the node
    keys; write each party's own CSV file (from the configured data); start one node per party
    (:mod:`deployment.node`) with its own data path and state directory. ``--node-max-epsilon
    bureau=1`` gives a node its own lifetime privacy limit; a node must state one, so the nodes
    it does not name start with ``--max-epsilon none`` (uncapped, said so: the local
    federation's parties hold synthetic rows, and a capped node refuses runs without DP). The
    demo's vertical nodes opt into the default run's releases outside any epsilon
    (``--release-exact-embeddings``, ``--release-record-gradients``) and declare a lender
    volume of 100 times its rows (:func:`demo_release_flags`): a partner's node does neither
    unless it says so.
``run [key=value ...]``
    Submit the run with ``flwr run`` (the overrides of ``up``, plus these), wait for it, and
    write ``results.json``, ``report.md`` and ``plots.png`` from what the server received.
``score <run dir> [key=value ...]``
    Score applicants with the bundles each node kept from that (vertical) run: each node loads
    its own bundle and rows; the scores stay at the lender; ``scoring.json`` and ``report.md``
    (counts only) go to the scoring directory. ``scoring.rows=test`` scores the run's test
    rows again; ``scoring.applicants=<file>`` a file in the lender node's ``--applicants-dir``.
``monitor <run dir> [monitor.period=<file>] [monitor.<key>=<value> ...]``
    Watch that (vertical) run's model on a later period: each node computes the stability
    indices of its own period's rows (the file in its ``--periods-dir``, or its ``--data``)
    against its bundle's bins and sends only indices and counts, under its own
    ``--release-monitoring`` (:mod:`experiments.deploy.monitor`); exit 1 on ``act``.
``serve <run dir> [key=value ...]``
    Start a scoring service with that (vertical) run's bundles: one Flower run that stays up;
    ``score`` with the same run directory then hands it each request (four message rounds)
    instead of starting a run (:mod:`experiments.deploy.scoring_service`).
``stop-service``
    Stop the scoring service.
``down``
    Stop every process ``up`` started (a scoring service too).
``all [key=value ...]``
    ``up``, ``run`` and ``down`` in one go; ``down`` also runs when something fails.

Everything lives under ``--dir`` (default ``deploy/``). ``up`` stops what it started if it fails.
The collector reads nothing from the nodes' directories, as a real coordinator could not: the
metrics come from the lender's score summaries (a horizontal server pools the lenders'), the
same summaries a simulation's metrics come from. The row-level scores stay at the lender
(``scores.npz`` in its state directory); there is no ``predictions.csv`` and no membership audit
at the coordinator.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from credit_data.errors import ConfigError, CreditFLError
from credit_fl.report import render_report
from experiments.deploy import scoring_service as served
from experiments.deploy.federation import (
    ROOT,
    Federation,
    RunInterrupted,
    down,
    local_federation,
    own_run,
    run,
    score,
    up,
)
from experiments.deploy.monitor import monitor


def _caps(values: list[str]) -> dict[str, float]:
    out = {}
    for value in values:
        party, _, cap = value.partition("=")
        try:
            out[party] = float(cap)
        except ValueError:
            raise ConfigError(f"--node-max-epsilon {value!r}: expected party=number") from None
        if not out[party] > 0:
            raise ConfigError(f"--node-max-epsilon {value!r}: must be positive")
    return out


COMMANDS = ("up", "run", "score", "monitor", "serve", "stop-service", "down", "all")


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m experiments.deploy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for experiments.run")
    parser.add_argument("--dir", type=Path, default=ROOT / "deploy")
    parser.add_argument("--node-max-epsilon", action="append", default=[],
                        metavar="PARTY=EPS", help="a node's own privacy limit (repeatable)")
    args = parser.parse_intermixed_args(argv)
    received = {"signal": signal.SIGINT}

    def on_signal(signum: int, frame: object) -> None:  # SIGTERM stops a run as Ctrl-C does
        received["signal"] = signal.Signals(signum)
        raise KeyboardInterrupt(received["signal"].name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        done = _command(args)
    except CreditFLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RunInterrupted, KeyboardInterrupt) as exc:
        name = received["signal"].name
        what = (f"{exc}; no report was written (the nodes' audit logs show what was sent)"
                if isinstance(exc, RunInterrupted) else "nothing was running on the federation")
        print(f"\nstopped by {name}: {what}", file=sys.stderr)
        return 128 + int(received["signal"])
    if isinstance(done, int):
        return done
    print(render_report(done))
    print(f"Run directory: {Path(done['federation']['server_audit_log']).parents[1]}")
    return 0


def _command(args: argparse.Namespace) -> int | dict[str, Any]:
    """Run one command; return its exit code, or a run's results (``run``, ``all``)."""
    if args.command in ("score", "serve", "monitor") and not args.overrides:
        raise ConfigError(f"deploy {args.command} <run dir> [key=value ...]: name the run "
                          "whose bundles score")
    handlers = {"down": _down, "up": _up, "monitor": _monitor, "serve": _serve,
                "stop-service": _stop_service, "score": _score}
    if args.command in handlers:
        return handlers[args.command](args)
    if args.command == "run":
        return run(args.dir, args.overrides)
    with local_federation(args.dir, args.overrides, _caps(args.node_max_epsilon)):
        return run(args.dir)


def _down(args: argparse.Namespace) -> int:
    stopping = down(args.dir)
    print(stopping.describe())
    return 1 if stopping.left else 0


def _up(args: argparse.Namespace) -> int:
    fed = up(args.dir, args.overrides, _caps(args.node_max_epsilon))
    print(f"SuperLink {fed.superlink} (TLS, node authentication); nodes: "
          f"{', '.join(fed.parties)}; logs in {fed.root / 'logs'}")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    out, report = monitor(args.dir, Path(args.overrides[0]), args.overrides[1:])
    print((out / "report.md").read_text())
    print(f"Monitoring: {out / 'monitor.json'}")
    return 1 if report["status"] == "act" else 0


def _serve(args: argparse.Namespace) -> int:
    status = served.serve(args.dir, Path(args.overrides[0]), args.overrides[1:])
    print(f"scoring service of {status['model_run']} ready: tables {status['tables']}; "
          f"`deploy score {status['model_run']} scoring.applicants=<file>` sends it a "
          "request, `deploy stop-service` stops it")
    return 0


def _stop_service(args: argparse.Namespace) -> int:
    last = served.stop(args.dir)
    if last is None:
        print("no scoring service was up")
    elif "ended" in last:
        print(f"the scoring service had already ended: {last['ended']}; it answered "
              f"{last.get('requests', 0)} requests")
    else:
        print(f"scoring service stopped after {last.get('requests', 0)} requests")
    return 0


def _score(args: argparse.Namespace) -> int:
    """Score with a run's bundles: through the scoring service when it serves that run."""
    fed = Federation.load(args.dir)
    model_run = own_run(fed, Path(args.overrides[0]), "deploy score ")
    served.check_not_ended(fed, model_run)  # never an uncapped batch run instead
    service = served.running(fed)
    by = (served.score if service is not None
          and Path(service["model_run"]) == model_run else score)
    out, _ = by(args.dir, model_run, args.overrides[1:])
    print((out / "report.md").read_text())
    print(f"Scoring directory: {out}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
