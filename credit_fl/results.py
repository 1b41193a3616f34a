"""What a run leaves in its directory: results.json, predictions.csv, report.md, plots.png.

plots.png is drawn by the command line (``figures``): credit_fl imports no matplotlib.

Each file is written to a temporary name and moved into place, results.json last, so a run
directory never holds a half-written file; a run that fails before this point writes none.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from credit_fl.outcome import RunOutcome
from credit_fl.report import render_report
from credit_fl.results_schema import SCHEMA_VERSION, check_results
from federation.audit_log import anchors
from federation.consent_counts import consent_released
from federation.releases import run_outside_epsilon
from federation.settings import MODE_ROLES
from federation.storage import write_atomic
from models.metrics import ScoreSummary
from models.scorecard import grade_table
from models.settings import ScorecardSettings

Figures = Callable[[Path, ScoreSummary, list[dict[str, Any]], str], None]
"""Draws ``plots.png`` (the test split's summary, the history, a title): the command line's
:func:`experiments.plots.write_plots`; ``credit_fl`` itself draws nothing (no matplotlib)."""


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "flwr", "opacus", "numpy", "pandas", "scikit-learn", "hydra-core"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def scorecard_results(card: ScorecardSettings, test: ScoreSummary) -> dict[str, Any]:
    """Return the scaling of score points and how the test rows fall into the grades."""
    factor = card.pdo / math.log(2)
    return {"base_points": card.base_points, "base_odds": card.base_odds, "pdo": card.pdo,
            "factor": factor, "offset": card.base_points - factor * math.log(card.base_odds),
            "test_grades": grade_table(test, card)}


def build_results(outcome: RunOutcome, wall_s: float, config: dict[str, Any],
                  audit: dict[str, Any] | None = None,
                  references: dict[str, Any] | None = None,
                  audit_logs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the results.json document (:mod:`credit_fl.results_schema`)."""
    s = outcome.settings
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "mode": s.federation.mode.value,
        "role": MODE_ROLES[s.federation.mode],
        "seed": s.seed,
        "dataset": outcome.dataset,
        "model": outcome.model,
        "metrics": outcome.metrics,
        "privacy": outcome.privacy,
        "audit": audit,
        "audit_logs": audit_logs,
        "timing": {"wall_s": wall_s, "data_s": outcome.data_seconds,
                   "train_s": outcome.train_seconds,
                   "train_rows_per_s": outcome.train_rows_per_s},
        "versions": _versions(),
        "config": config,
    }
    assert outcome.report is not None
    results["scorecard"] = scorecard_results(outcome.settings.scorecard, outcome.report["test"])
    if outcome.federation is not None:
        results["federation"] = outcome.federation
        results["outside_epsilon"] = run_outside_epsilon(
            s.privacy, [p for p in outcome.dataset["parties"] if p not in s.blacklists.holders],
            s.federation.mode, s.blacklists.holders) + consent_released(
            outcome.dataset.get("consent"))
    both = {**(outcome.references or {}), **(references or {})}
    if both:
        results["references"] = both
    problems = check_results(json.loads(json.dumps(results, default=str)))
    if problems:
        raise RuntimeError(f"results.json would not follow its schema: {'; '.join(problems)}")
    return results


def write_run(run_dir: Path, outcome: RunOutcome, wall_s: float, config: dict[str, Any],
              audit: dict[str, Any] | None = None,
              references: dict[str, Any] | None = None,
              figures: Figures | None = None) -> dict[str, Any]:
    """Write report.md, results.json, predictions.csv where the rows are at hand, plots.png.

    plots.png only with ``figures`` (the command line's drawing).

    A deployed coordinator has no row: the lender keeps its scores on its own disk.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    server_log = run_dir / "server" / "audit.jsonl"
    results = build_results(outcome, wall_s, config, audit, references,
                            anchors(server_log) if server_log.is_file() else None)
    if outcome.predictions is not None:
        write_atomic(run_dir / "predictions.csv", outcome.predictions.to_csv(
            index=False, float_format="%.8g"))
    assert outcome.report is not None
    if figures is not None:
        figures(run_dir / "plots.png", outcome.report["test"], outcome.metrics["history"],
                f"{results['mode']} on {results['dataset']['name']}")
    write_atomic(run_dir / "report.md", render_report(results))
    write_atomic(run_dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    return results
