"""Issue 32: a training run's report says why its test applicants were scored as they were.

``credit-fl run`` ends, for a model that explains, by scoring the run's test rows once more
with reasons (:mod:`experiments.run_explanation`): the same bundles, nodes' code and release
rules as ``credit-fl score <run> scoring.rows=test``.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from experiments.run_explanation import EXPLAINED, explain_test_rows

pytestmark = pytest.mark.engine


def test_the_run_report_says_why_with_three_declined_test_applicants(vertical_pairs, tmp_path):
    # Prepare: a copy of a small vertical run without DP (the session's runs are read only)
    run_dir = tmp_path / "run"
    shutil.copytree(vertical_pairs["plain"][0][0], run_dir)
    before = (run_dir / "report.md").read_text()
    assert "## Why applicants were scored as they were" not in before
    # Execute
    scoring = explain_test_rows(run_dir)
    # Assert: the test rows, scored as the run scored them, each with its reasons
    assert scoring is not None and scoring["rows"] == "test"
    scores = pd.read_csv(run_dir / EXPLAINED / "scores.csv", dtype={"id": str},
                         keep_default_na=False)
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    both = predictions.merge(scores, on="id")
    assert len(both) == len(predictions) == len(scores)
    assert float((both["score"] - both["probability"]).abs().max()) <= 1e-6
    assert (scores["reason_1"] != "").mean() > 0.9
    report = (run_dir / "report.md").read_text()
    assert report.startswith(before.rstrip("\n").rsplit("\nWall time", 1)[0])
    section = report.split("## Why applicants were scored as they were", 1)[1]
    for party in ("lender", "bureau", "social"):
        assert f"| {party} |" in section  # its share, and its global table's columns
    declined = [line for line in section.splitlines() if line.startswith("- ")]
    worst = scores.sort_values("points").head(3)
    assert len(declined) == 3
    for line, (_, row) in zip(declined, worst.iterrows(), strict=True):
        assert line.startswith(f"- {row['id']}:") and str(row["reason_1"]) in line
    assert "Wall time" in report.rsplit("## Why applicants", 1)[1]
