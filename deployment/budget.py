"""A partner's view of its node's lifetime privacy budget: ``python -m deployment.budget``.

``show`` prints, per run, the epsilon it spent at the node (whatever the data file: the budget
is the node's, and a changed file keeps the spend), what a run let leave outside any epsilon
under the node's opt-in flags, and the total against the cap; ``reset``
starts the budget again (a line of the ledger: the history stays), the only way to start
afresh. Only the node's operator can do either: there is no message for it, and the
coordinator cannot reach the node's disk.

    python -m deployment.budget show --state-dir /var/lib/credit-fl --data /data/bureau.csv
    python -m deployment.budget reset --state-dir ... --reason "new consent period"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from credit_data.errors import PrivacyLedgerError
from federation.lifetime_budget import LifetimeBudget, run_spend


def parser() -> argparse.ArgumentParser:
    """Return the command's argument parser."""
    p = argparse.ArgumentParser(prog="python -m deployment.budget",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["show", "reset"])
    p.add_argument("--state-dir", required=True, type=Path, help="the node's --state-dir")
    p.add_argument("--data", type=Path, help="the node's --data file (optional: its SHA-256 is "
                   "shown; the budget is the node's whatever the file)")
    p.add_argument("--max-epsilon", type=float, help="the node's cap, to show what is left")
    p.add_argument("--reason", help="why the budget starts again (reset; kept in the ledger)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit code."""
    args = parser().parse_args(argv)
    if args.data is not None and not args.data.is_file():
        print(f"error: --data {args.data}: file not found", file=sys.stderr)
        return 2
    try:
        budget = LifetimeBudget.of(args.state_dir, args.max_epsilon, data_path=args.data)
        if args.command == "reset":
            if not args.reason:
                print("error: reset needs --reason (it is kept in the ledger)", file=sys.stderr)
                return 2
            budget.reset(args.reason)
            print(f"{budget.path}: reset ({args.reason})")
            return 0
        runs, opted = budget.runs(), budget.opt_ins()
    except PrivacyLedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = "" if args.data is None else f" (data now {args.data}, sha256 {budget.dataset})"
    print(f"ledger {budget.path}{data}")
    for run, figures in runs.items():
        print(f"  {run}: epsilon {run_spend(figures):.4f} {figures}")
    for run, releases in opted.items():  # outside any epsilon, by the node's own flags
        print(f"  {run}: released outside any epsilon (opted in): {', '.join(releases)}")
    total = budget.spent()
    cap = "" if args.max_epsilon is None else f" of {args.max_epsilon:g}"
    print(f"spent since the last reset: epsilon {total:.4f}{cap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
