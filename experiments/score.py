"""``credit-fl score <run dir> [key=value ...]`` (alias ``python -m experiments.score``).

Scores applicants with the model bundles a finished training run kept. By default every
applicant of the lender's table in the run's own data config; ``data=csv
data.parties.lender.path=new.csv`` (and the other parties' current files) scores new ones;
``scoring.rows=test`` scores the run's own test split, which reproduces its predictions.csv.
Writes ``scores.csv``, ``scoring.json`` and ``report.md`` to ``scoring.out`` (by default
``<run dir>/scoring/<date>_<time>``), whole or not at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from credit_data.errors import CreditFLError

USAGE = ("usage: credit-fl score <run dir> [scoring.rows=all|test] [scoring.missing_party="
         "error|unknown] [scoring.out=<dir>] [data=<config> data.<key>=<value> ...]")


def main(argv: list[str] | None = None) -> int:
    """Score with a run's bundles; print where the scores went. Exit 2 on bad input."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        print(USAGE)
        return 0 if args else 2
    import logging

    from experiments.console import quiet_console

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    quiet_console()
    from experiments.interrupt import stop_on_signals
    from experiments.scoring import score_run

    stop_on_signals()
    quiet_console()
    try:
        out, scoring = score_run(Path(args[0]), args[1:])
    except CreditFLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text())
    print(f"Scores: {out / 'scores.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
