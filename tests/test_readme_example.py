"""The README's Python example runs as written (issue 31's notebook acceptance)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_one_python_example_of_about_ten_lines():
    (block,) = _python_blocks()
    assert 8 <= len(block.strip().splitlines()) <= 14
    assert "import credit_fl" in block and "credit_fl.load(" in block


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    # Prepare: the block as a notebook cell would run it, in a fresh working directory
    (block,) = _python_blocks()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    # Execute
    exec(compile(block, "README.md", "exec"), namespace)
    # Assert: what the example claims, checked against the files it saved
    run = tmp_path / "runs" / "notebook"
    model, scores, frames = namespace["model"], namespace["scores"], namespace["frames"]
    assert (run / "results.json").is_file() and (run / "predictions.csv").is_file()
    assert {"lender", "bureau", "social"} <= {p.name for p in (run / "parties").iterdir()}
    assert list(scores.columns[:4]) == ["id", "probability", "points", "grade"]
    assert set(scores["id"]) == set(frames["lender"]["customer_id"])
    assert model.ledger["epsilon"] > 0 and model.ledger["guarantee"] is True
    # the test AUC recomputed from the saved predictions.csv (10,000-bin summaries: 1e-4)
    from sklearn.metrics import roc_auc_score

    predictions = pd.read_csv(run / "predictions.csv")
    assert roc_auc_score(predictions["label"], predictions["score"]) == pytest.approx(
        model.metrics["test"]["auc"], abs=1e-4)
