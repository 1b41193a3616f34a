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
from typing import Any

from credit_data.errors import ConfigError, CreditFLError

USAGE = ("usage: credit-fl score <run dir> [scoring.rows=all|test] [scoring.missing_party="
         "error|unknown] [scoring.out=<dir>] [data=<config> data.<key>=<value> ...]")


def score_run(run_dir: Path, overrides: list[str]) -> tuple[Path, dict[str, Any]]:
    """Score with the bundles of ``run_dir``; return the scoring directory and scoring.json."""
    import json
    import shutil
    import tempfile
    import time
    from datetime import datetime

    from credit_fl.batch_scoring import render_scoring, score_bundles
    from credit_fl.config import settings_of
    from experiments.plots import plot_explanations
    from federation.storage import write_atomic

    start = time.perf_counter()
    run_dir = run_dir.resolve()
    settings = settings_of(run_dir, *overrides)
    model = json.loads((run_dir / "results.json").read_text())["model"]
    out = Path(settings.scoring.out) if settings.scoring.out else (
        run_dir / "scoring" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    if out.exists():
        raise ConfigError(f"scoring.out={out} exists; name a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        scores, summary = score_bundles(run_dir, settings, stage)
        scoring = {
            "run": str(run_dir), "mode": settings.federation.mode.value,
            "rows": settings.scoring.rows.value, "applicants": len(scores),
            "data": {"name": settings.data.name, "source": settings.data.source.value},
            "bundles": _fingerprints(run_dir, model["bundles"]),
            **summary, "wall_seconds": time.perf_counter() - start}
        write_atomic(stage / "scores.csv", scores.to_csv(index=False, float_format="%.10g"))
        write_atomic(stage / "scoring.json", json.dumps(scoring, indent=2, default=str) + "\n")
        write_atomic(stage / "report.md", render_scoring(scoring, scores))
        plot_explanations(scoring, stage / "explanations.png")
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out, scoring


def _fingerprints(run_dir: Path, bundles: dict[str, str]) -> dict[str, Any]:
    from models.bundle import read_manifest

    out = {}
    for party, relative in bundles.items():
        manifest = read_manifest(run_dir / relative)
        out[party] = {"directory": relative, "model_id": manifest["model_id"],
                      "files": manifest["files"]}
    return out


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
    from credit_fl.interrupt import stop_on_signals

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
