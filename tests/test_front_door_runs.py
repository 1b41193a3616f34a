"""``credit-fl run`` and ``credit_fl.train`` write the same run; both engines agree (issue 31).

Small runs (1,000 customers, two epochs or rounds) without privacy: differential privacy draws
its noise from the operating system at each node, so only non-private runs can be compared
number for number. ``seconds`` in each epoch's or round's history is the one timing there and
is left out of the comparison.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import credit_fl
from federation.run_settings import Engine

ROOT = Path(__file__).resolve().parents[1]
MODES = ("vertical", "horizontal", "centralized", "local")
SMALL = ["data.n_customers=1000", "privacy=off", "train.epochs=2", "federation.rounds=2",
         "verbose=false", "engine=in_process"]
"""The in-process engine starts nothing; the engines' test runs the other (the default)."""


def _metrics(results: dict) -> dict:
    """results.json's metrics without the wall time of each epoch or round."""
    metrics = dict(results["metrics"])
    metrics["history"] = [{k: v for k, v in h.items() if k != "seconds"}
                          for h in metrics["history"]]
    return metrics


@pytest.fixture(scope="module")
def python_runs(tmp_path_factory) -> dict[str, Path]:
    """Each mode trained through the Python front door and saved."""
    out = {}
    for mode in MODES:
        run_dir = tmp_path_factory.mktemp("python") / mode
        credit_fl.train(credit_fl.settings(f"federation={mode}", *SMALL)).save(run_dir)
        out[mode] = run_dir
    return out


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, Path]:
    """The same overrides through ``credit-fl run``: one command line, one job per mode."""
    sweep = tmp_path_factory.mktemp("cli")
    done = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "run", "-m",
         f"federation={','.join(MODES)}", *SMALL, f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    runs = {}
    for results in sweep.glob("*/results.json"):
        runs[json.loads(results.read_text())["mode"]] = results.parent
    assert sorted(runs) == sorted(MODES), done.stderr[-3000:]
    return runs


@pytest.mark.parametrize("mode", MODES)
def test_the_command_line_and_python_write_the_same_metrics_and_predictions(
        python_runs, cli_runs, mode):
    import json

    python, cli = python_runs[mode], cli_runs[mode]
    py_results = json.loads((python / "results.json").read_text())
    cli_results = json.loads((cli / "results.json").read_text())
    assert _metrics(py_results) == _metrics(cli_results)
    assert (python / "predictions.csv").read_bytes() == (cli / "predictions.csv").read_bytes()
    assert py_results["config"] == cli_results["config"]
    # the same bundles, each where the command line keeps it
    bundles = py_results["model"]["bundles"]
    assert bundles == cli_results["model"]["bundles"] and bundles
    for relative in bundles.values():
        assert (python / relative / "weights.safetensors").is_file()


@pytest.mark.parametrize("mode", ["vertical", "horizontal"])
def test_both_engines_give_the_same_metrics_for_the_same_seed(python_runs, mode):
    import json

    model = credit_fl.train(credit_fl.settings(f"federation={mode}", *SMALL),
                            engine=Engine.simulation)
    saved = json.loads((python_runs[mode] / "results.json").read_text())
    assert model.results["federation"]["engine"] == "simulation"
    assert saved["federation"]["engine"] == "in_process"
    assert _metrics(model.results) == _metrics(saved)
    assert model.predictions.equals(credit_fl.load(python_runs[mode]).predictions)


def test_a_loaded_run_scores_as_the_trained_model_did(python_runs):
    # Prepare: the saved local model, and its test rows as new applicants
    model = credit_fl.load(python_runs["local"])
    frames = credit_fl.synthetic_frames(1000, seed=0)
    # Execute
    scores = model.score(frames)
    # Assert: the scores of the test rows are predictions.csv's
    test = model.predictions.set_index("id")["score"]
    by_id = scores.set_index("id")["probability"]
    assert len(scores) == 1000
    assert by_id.loc[test.index].to_numpy() == pytest.approx(test.to_numpy(), abs=1e-7)
