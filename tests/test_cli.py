"""The runner as a user meets it: `python -m experiments.run key=value ...` in a subprocess."""

import subprocess
import sys

from tests.conftest import REPO


def _run(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.run", *overrides], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_progress_lines_and_quiet_mode(tmp_path):
    loud = _run("federation=centralized", "data.n_customers=1000", "train.epochs=2",
                f"hydra.run.dir={tmp_path}/loud")
    quiet = _run("federation=centralized", "data.n_customers=1000", "train.epochs=2",
                 "verbose=false",
                 f"hydra.run.dir={tmp_path}/quiet")
    assert loud.returncode == 0 and quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "epoch   1/2" in loud.stdout + loud.stderr
    assert "epoch   1/" not in quiet.stdout + quiet.stderr
    assert "train_loss" not in quiet.stdout + quiet.stderr
    assert "# Credit-risk run: centralized on synthetic" in quiet.stdout
    for name in ("results.json", "predictions.csv", "report.md", "plots.png", ".hydra/config.yaml"):
        assert (tmp_path / "quiet" / name).is_file(), name


def test_unknown_key_and_wrong_type_fail_naming_the_key(tmp_path):
    unknown = _run("federation.roundz=3", f"hydra.run.dir={tmp_path}/a")
    assert unknown.returncode != 0 and "roundz" in unknown.stderr
    wrong = _run("federation.rounds=three", f"hydra.run.dir={tmp_path}/b")
    assert wrong.returncode != 0 and "federation.rounds" in wrong.stderr


def test_bad_data_fails_with_the_file_named_and_nothing_written(tmp_path):
    (tmp_path / "lender.csv").write_text("id,income,default\na,1.0,0\nb,2.0,7\n")
    run_dir = tmp_path / "run"
    bad = _run("data=csv", f"data.parties.lender.path={tmp_path}/lender.csv",
               "~data.parties.bureau", "~data.parties.social", f"hydra.run.dir={run_dir}")
    assert bad.returncode == 2
    assert "lender.csv: label column 'default' must hold only 0 and 1" in bad.stderr
    assert not (run_dir / "results.json").exists()
    assert not (run_dir / "predictions.csv").exists()


def test_the_console_shows_the_runs_own_lines_and_run_log_keeps_the_rest(tmp_path):
    done = _run("federation=horizontal", "privacy=dpsgd", "data.n_customers=2000",
                "federation.rounds=2", f"hydra.run.dir={tmp_path}/run")
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    for noise in ("alembic", "DEPRECATED FEATURE", "FutureWarning", "Manually terminating",
                  "Optimal order is the largest alpha"):
        assert noise not in console, noise
    assert done.stderr.strip() == ""
    assert "round 1/2" in console and "# Credit-risk run: horizontal" in done.stdout
    log = (tmp_path / "run" / "run.log").read_text()
    assert "DEPRECATED FEATURE" in log and "round 1/2" in log  # library lines stay in run.log
