"""The scoring report's section "Why applicants were scored as they were".

Its plot is :func:`experiments.plots.plot_explanations`.

From what the lender kept (``scores.csv``'s reasons) and what the server received (each
party's global table, computed at the party, and the parties' mean shares).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from federation.explanation import GLOBAL_MIN_APPLICANTS

__all__ = ["explanation_lines"]

TOP = 5
"""Columns per party in the report's global table."""


def _declined(scores: pd.DataFrame, count: int = 3) -> pd.DataFrame:
    """Return ``count`` applicants of the worst grade present, lowest points first."""
    ranked = scores.sort_values("points")
    worst = ranked["grade"].iloc[0]
    return ranked[ranked["grade"] == worst].head(count)


def explanation_lines(scoring: dict[str, Any], scores: pd.DataFrame | None) -> list[str]:
    """Return the report's explanation section (empty when nothing was explained)."""
    explanation = scoring.get("explanation") or {}
    if not explanation.get("explained"):
        return []
    gap = max(explanation["completeness_gap_logodds"].values())
    how = (f"Each score is the reference applicant's {explanation['base_points']:.1f} points "
           "plus each party's exact Shapley share; each party split its share over its own "
           f"columns at its own node ({explanation['method']} integrated gradients; largest "
           f"completeness gap {gap:.1e} log-odds). ")
    if str(explanation["method"]).startswith("scorecard"):  # a scorecard's points below
        how = (f"Each score is the reference's {explanation['base_points']:.1f} points less "
               "what each party's columns cost against their reference "
               f"({explanation['method']}, Regulation B comment 9(b)(2)-5), each counted at the "
               f"party's own node (largest completeness gap {gap:.1e} log-odds). ")
    lines = ["", "## Why applicants were scored as they were", "",
             how + "How to read it: [docs/explanations.md](docs/explanations.md).", "",
             "| party | mean \\|share\\| (points) |", "|---|---:|"]
    lines += [f"| {p} | {'withheld' if v is None else f'{v:.2f}'} |"
              for p, v in explanation["mean_abs_share"].items()]
    withheld = explanation.get("columns_withheld") or []
    if withheld:
        lines += ["", f"Not split over their columns (their own choice): {', '.join(withheld)}."]
    lines += ["", f"Global explanation (per party, its {TOP} strongest columns; computed at the "
              "party, shared only as this table):", "",
              "| party | column | mean \\|points\\| | mean points |", "|---|---|---:|---:|"]
    if explanation.get("explained", 0) < GLOBAL_MIN_APPLICANTS:
        lines += [f"| (withheld: fewer than {GLOBAL_MIN_APPLICANTS} applicants explained, each "
                  "party sends no global figure) | | | |"]
    for party, table in explanation.get("global", {}).items():
        lines += [f"| {party} | {row['description']} | {row['mean_abs_points']:.2f} | "
                  f"{row['mean_points']:+.2f} |" for row in table[:TOP]]
    if scores is not None and "reason_1" in scores:
        reasons = [c for c in scores.columns if c.startswith("reason_") and c[7:].isdigit()]
        lines += ["", "Three declined applicants (the worst grade), their reasons and the points "
                  "each cost:", ""]
        for _, row in _declined(scores).iterrows():
            said = [f"{row[r]} ({row[f'{r}_points']:.2f})" for r in reasons if row[r]]
            lines.append(f"- {row['id']}: {row['points']:.1f} points, grade {row['grade']}: "
                         + ("; ".join(said) if said else "no adverse factor"))
    return lines
