"""A training run's "Why applicants were scored as they were": its test rows scored and explained.

At the end of ``credit-fl run`` (``python -m experiments.run``, in simulation), when the model
explains (``explain.enabled``; a vertical ``split_mlp``, or ``model=scorecard`` in any mode),
the run's own bundles score its test rows once more, with reasons, exactly as ``credit-fl
score <run> scoring.rows=test`` would (the same nodes' code, the same release rules): the
scores, reasons and counts go to ``<run>/explained/`` (``scores.csv``, ``scoring.json``,
``report.md``, ``explanations.png``) and ``report.md`` of the run gets the section, with the
global tables and three declined applicants. The cost is one scoring request over the test
rows (``python experiments/bench.py explain``: explaining costs about 1.8 times plain scoring).

A deployed run (``deploy run``) is not explained here: its coordinator holds no row, and its
test rows' scores stay at the lender. ``deploy score <run> scoring.rows=test`` explains them as
one more request, and that request's ``report.md`` has the section; the run's report says so.
Library calls that train (:func:`credit_fl.train`, the tests) do not pay for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from credit_fl.config import settings_of
from credit_fl.report import render_report
from federation.settings import Mode
from federation.storage import write_atomic
from models.settings import ModelKind

__all__ = ["EXPLAINED", "explain_test_rows", "explains"]

EXPLAINED = "explained"
"""The run's scoring directory of its explained test rows."""


def explains(mode: Mode, kind: ModelKind, enabled: bool) -> bool:
    """Say whether scoring a model of ``kind`` in ``mode`` gives reasons.

    >>> explains(Mode.vertical, ModelKind.split_mlp, True), explains(Mode.local,
    ...          ModelKind.mlp, True), explains(Mode.horizontal, ModelKind.scorecard, True)
    (True, False, True)
    """
    return enabled and (kind is ModelKind.scorecard
                        or (mode is Mode.vertical and kind is ModelKind.split_mlp))


def explain_test_rows(run_dir: Path) -> dict[str, Any] | None:
    """Score and explain the run's test rows; add the section to its report.md.

    Returns the scoring's ``scoring.json`` (None when the model does not explain, or the run
    was deployed: no ``predictions.csv`` at the coordinator).
    """
    from experiments.score import score_run

    run_dir = run_dir.resolve()
    settings = settings_of(run_dir)
    if not explains(settings.federation.mode, settings.model.kind, settings.explain.enabled):
        return None
    if not (run_dir / "predictions.csv").is_file():
        return None
    out, scoring = score_run(run_dir, ["scoring.rows=test",
                                       f"scoring.out={run_dir / EXPLAINED}"])
    if not scoring.get("explanation"):
        return None
    scores = pd.read_csv(out / "scores.csv", dtype={"id": str}, keep_default_na=False)
    results = json.loads((run_dir / "results.json").read_text())
    write_atomic(run_dir / "report.md", render_report(results, (scoring, scores)))
    return scoring
