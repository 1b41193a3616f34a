"""Issue 20, point 4: score points, grades, and each grade's default rate in every report."""

from __future__ import annotations

import numpy as np
import pytest

from credit_data.errors import ConfigError
from models.metrics import SCORE_CELLS, ScoreSummary
from models.scorecard import grade_table, grades_of, points
from models.settings import ScorecardSettings
from tests.conftest import run_experiment

pytestmark = pytest.mark.unit


def test_points_follow_the_log_odds_scaling():
    card = ScorecardSettings(base_points=600, base_odds=19, pdo=50)
    p = np.array([0.05, 1 / 39, 1 / 77, 0.5])
    got = points(p, card)
    assert got[:3] == pytest.approx([600, 650, 700])  # odds of good 19, 38, 76: +50 each
    assert got[3] == pytest.approx(600 - 50 * np.log2(19))  # even odds
    assert np.all(np.diff(points(np.linspace(0.01, 0.99, 50), card)) < 0)  # riskier: fewer


def test_the_grade_table_from_a_summary_matches_the_rows():
    # Prepare: scores spread over every grade
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    card = ScorecardSettings()
    # Execute
    table = grade_table(ScoreSummary.of(y, p), card)
    # Assert: a bin is graded at its mean score, so only rows in a bin across a grade's edge
    # (a cell of the grid is 18.4 / 199 in log-odds wide) can land in the next grade
    score_points = points(p, card)
    grades = grades_of(score_points, card)
    cell = card.pdo / np.log(2) * 18.4 / (SCORE_CELLS - 1)
    for row in table:
        mine = grades == row["grade"]
        edges = [f for f in (row["min_points"], *card.grade_floors) if f is not None]
        near = int(sum((np.abs(score_points - f) < cell).sum() for f in set(edges)))
        assert abs(row["rows"] - int(mine.sum())) <= near
        assert abs(row["defaulters"] - int(y[mine].sum())) <= near
    assert sum(r["rows"] for r in table) == 20_000
    assert sum(r["defaulters"] for r in table) == int(y.sum())
    rates = [r["default_rate"] for r in table if r["rows"]]
    assert rates == sorted(rates)  # the worse the grade, the more defaults


@pytest.mark.parametrize(("override", "key"), [
    ("scorecard.pdo=0", "scorecard.pdo"), ("scorecard.base_odds=-1", "scorecard.base_odds"),
    ("scorecard.grade_floors=[600]", "scorecard.grade_floors"),
    ("scorecard.grade_floors=[500,600,640,680]", "scorecard.grade_floors"),
    ("scorecard.grades=[A,A,B,C,D]", "scorecard.grades")])
def test_a_bad_scorecard_names_its_key_and_writes_nothing(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_experiment(["federation=centralized", "data.n_customers=1000", override],
                       tmp_path / "run")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_every_report_shows_the_grades_with_their_default_rates(tmp_path):
    results = run_experiment(["federation=centralized", "data.n_customers=2000"],
                             tmp_path / "run")
    card = results["scorecard"]
    assert [g["grade"] for g in card["test_grades"]] == ["A", "B", "C", "D", "E"]
    assert sum(g["rows"] for g in card["test_grades"]) == results["dataset"]["rows"]["test"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Score points and grades" in report and "| E | below 560 |" in report
