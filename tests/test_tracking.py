"""Issue 31, item 8: ``tracking=mlflow`` logs each run to MLflow, and MLflow's own client reads
it back: params, the history per epoch, the ledger's epsilons, the final metrics, the files; a
sweep is one experiment with a run per job; a bad ``tracking.`` value names its key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from credit_data.errors import ConfigError
from experiments.config import to_settings
from experiments.tracking import open_tracker, tracking_uri
from federation.run_settings import TrackingBackend, TrackingSettings
from tests.conftest import CONF_DIR, REPO, compose_config, run_experiment

OPTIONS = sorted(p.stem for p in (CONF_DIR / "tracking").glob("*.yaml"))


def _client(db: Path):
    """MLflow's own client on a SQLite store (imported here: collecting stays light)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # as experiments.tracking does
    from mlflow.tracking import MlflowClient  # the test extra installs it

    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def _tracked(store: Path) -> list[str]:
    return ["tracking=mlflow", f"tracking.uri=sqlite:///{store / 'mlflow.db'}"]


@pytest.mark.unit
@pytest.mark.parametrize("option", OPTIONS)
def test_each_tracking_option_composes_and_python_defaults_match(option):
    # Prepare / Execute
    settings = to_settings(compose_config([f"tracking={option}"])).tracking
    # Assert: the option picks the backend; every other key keeps the Python default
    assert OPTIONS == ["mlflow", "none"]
    assert settings == TrackingSettings(backend=TrackingBackend(option))
    assert to_settings(compose_config([])).tracking == TrackingSettings()


@pytest.mark.unit
@pytest.mark.parametrize(("override", "key"), [
    ("tracking.backend=wandb", "tracking.backend"),
    ("tracking.predictions=maybe", "tracking.predictions"),
    ("tracking.url=http://x", "tracking.url"),
], ids=["backend", "predictions", "unknown-key"])
def test_a_bad_tracking_value_is_refused_by_hydra_naming_its_key(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["tracking=mlflow", override])
    assert key in str(err.value) + str(err.value.__cause__)


@pytest.mark.unit
def test_an_unknown_tracking_option_lists_the_options():
    with pytest.raises(MissingConfigException, match="tracking/wandb") as err:
        compose_config(["tracking=wandb"])
    assert "mlflow" in str(err.value) and "none" in str(err.value)


@pytest.mark.unit
@pytest.mark.parametrize(("override", "message"), [
    ("tracking.uri=outputs/runs", r"tracking\.uri=outputs/runs is not a tracking URI"),
    ("tracking.uri=''", r"tracking\.uri= is not a tracking URI"),
    ("tracking.experiment=' '", r"tracking\.experiment is empty"),
    ("tracking.uri='https://ann:secret@mlflow.example:5000'",
     r"tracking\.uri holds a password.*MLFLOW_TRACKING_PASSWORD"),
])
def test_a_bad_tracking_value_is_refused_before_the_run_naming_its_key(override, message):
    settings = to_settings(compose_config(["tracking=mlflow", override])).tracking
    with pytest.raises(ConfigError, match=message):
        open_tracker(settings)


@pytest.mark.unit
def test_a_store_mlflow_cannot_use_is_refused_naming_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    (tmp_path / "a-file").write_text("")
    for uri in (f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}",  # no folder can be made
                f"file://{tmp_path / 'mlruns'}"):  # MLflow 3 refuses its old file store
        settings = TrackingSettings(TrackingBackend.mlflow, uri=uri)
        with pytest.raises(ConfigError, match=r"tracking\.uri=.*MLflow cannot use this store"):
            open_tracker(settings)


@pytest.mark.unit
def test_without_mlflow_the_error_names_the_extra(monkeypatch):
    for name in ("mlflow", "mlflow.tracking", "mlflow.exceptions"):
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"tracking=mlflow needs MLflow.*'\.\[mlflow\]'"):
        open_tracker(TrackingSettings(TrackingBackend.mlflow))
    assert open_tracker(TrackingSettings()) is None  # tracking=none never imports it


@pytest.mark.unit
def test_the_store_is_the_given_uri_else_mlflows_variable_else_outputs_mlflow(tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = TrackingSettings(TrackingBackend.mlflow)
    assert tracking_uri(local) == f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(local) == "http://127.0.0.1:5000"
    given = TrackingSettings(TrackingBackend.mlflow, uri="sqlite:////x/y.db")
    assert tracking_uri(given) == "sqlite:////x/y.db"


@pytest.mark.unit
def test_a_uri_without_tracking_on_is_a_warning_and_nothing_is_logged(caplog):
    settings = to_settings(compose_config(["tracking.uri=http://127.0.0.1:5000"])).tracking
    with caplog.at_level("WARNING", logger="credit_fl"):
        assert open_tracker(settings) is None
    assert "tracking.backend is none: nothing is logged" in caplog.text


# --- end to end: a private vertical run, then a two-job sweep -------------------------------


@pytest.fixture(scope="module")
def private_run(tmp_path_factory):
    """The smallest private vertical run the tests use, logged into the default local store of
    its working directory (``outputs/mlflow``)."""
    work = tmp_path_factory.mktemp("work")
    run_dir = work / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        results = run_experiment(["federation=vertical", "data.n_customers=1000",
                                  "train.epochs=2", "audit.enabled=false", "tracking=mlflow"],
                                 run_dir)
    client = _client(work / "outputs" / "mlflow" / "mlflow.db")
    return work, run_dir, results, client


def _only_run(client, experiment):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_the_run_is_logged_with_its_params_and_final_metrics(private_run):
    work, run_dir, results, client = private_run
    run = _only_run(client, "credit-fl")
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.tags["credit_fl.run_dir"] == str(run_dir.resolve())
    assert run.data.tags["credit_fl.privacy"] == "label_dp+dpsgd"
    # every leaf of the resolved config is a param, as results.json holds it
    leaves = pd.json_normalize(results["config"], sep=".").to_dict(orient="records")[0]
    for key, value in leaves.items():
        assert run.data.params[key] == (value if isinstance(value, str) else json.dumps(value))
    assert set(run.data.params) - set(leaves) == {  # the empty sections, as {}
        k for k, v in run.data.params.items() if v == "{}"}
    assert run.data.params["data.n_customers"] == "1000"
    assert run.data.params["tracking.backend"] == "mlflow"
    for split in ("test", "val"):
        for name, value in results["metrics"][split].items():
            if isinstance(value, float):
                assert run.data.metrics[f"{split}.{name}"] == pytest.approx(value, abs=1e-12)
    assert run.data.metrics["best_epoch"] == results["metrics"]["best_epoch"]
    assert run.data.metrics["party_lift.bureau"] == pytest.approx(
        results["metrics"]["party_lift"]["bureau"], abs=1e-12)


def test_the_history_per_epoch_reads_back_step_by_step(private_run):
    _, _, results, client = private_run
    run = _only_run(client, "credit-fl")
    history = results["metrics"]["history"]
    assert len(history) >= 2
    logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                         "val_auc"))
    assert [step for step, _ in logged] == [h["epoch"] for h in history]
    assert [value for _, value in logged] == pytest.approx([h["val_auc"] for h in history],
                                                           abs=1e-12)
    seconds = client.get_metric_history(run.info.run_id, "seconds")
    assert [m.step for m in sorted(seconds, key=lambda m: m.step)] == [
        h["epoch"] for h in history]


def test_the_ledgers_epsilons_read_back(private_run):
    _, _, results, client = private_run
    run = _only_run(client, "credit-fl")
    privacy = results["privacy"]
    metrics = run.data.metrics
    assert metrics["privacy.epsilon"] == pytest.approx(privacy["epsilon"], abs=1e-12)
    assert metrics["privacy.delta"] == pytest.approx(privacy["delta"], abs=1e-18)
    assert set(privacy["parties"]) == {"lender/label_dp", "lender/dpsgd", "bureau/dpsgd",
                                       "social/dpsgd"}
    for entry, spend in privacy["parties"].items():
        assert metrics[f"privacy.parties.{entry}.epsilon"] == pytest.approx(spend["epsilon"],
                                                                           abs=1e-12)
    for party, total in privacy["party_totals"].items():
        assert metrics[f"privacy.party_totals.{party}.epsilon"] == pytest.approx(
            total["epsilon"], abs=1e-12)
    # each entry's epsilon as it grew: its value at the end of every round, never decreasing
    for entry in privacy["parties"]:
        rows = [h for h in privacy["history"] if h["party"] == entry]
        at_end = {h["round"]: h["epsilon"] for h in rows}
        logged = client.get_metric_history(run.info.run_id, f"privacy.history.{entry}.epsilon")
        by_step = {m.step: m.value for m in logged}
        assert by_step == pytest.approx(at_end, abs=1e-12), entry
        values = [by_step[s] for s in sorted(by_step)]
        assert values == sorted(values), entry
    assert metrics["privacy.history.lender/dpsgd.epsilon"] > 0


def test_the_run_files_are_its_artifacts_byte_for_byte(private_run, tmp_path):
    work, run_dir, _, client = private_run
    run = _only_run(client, "credit-fl")
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"results.json", "report.md", "plots.png", "predictions.csv"}
    for name in names:
        copy = client.download_artifacts(run.info.run_id, name, str(tmp_path))
        assert Path(copy).read_bytes() == (run_dir / name).read_bytes(), name
    # the local store keeps them beside its database, under the working directory
    assert (work / "outputs" / "mlflow" / "artifacts" / run.info.run_id / "artifacts" /
            "results.json").is_file()


def test_a_sweep_is_one_experiment_with_a_run_per_job(tmp_path):
    sweep_dir = tmp_path / "multirun"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.run", "-m", "federation=centralized",
         "data.n_customers=1000", "train.epochs=2", "verbose=false", "seed=0,1",
         *_tracked(tmp_path), "tracking.predictions=false", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = _client(tmp_path / "mlflow.db")
    experiments = [e.name for e in client.search_experiments() if e.name != "Default"]
    assert experiments == [str(sweep_dir)]
    runs = client.search_runs([client.get_experiment_by_name(str(sweep_dir)).experiment_id])
    jobs = sorted(p.parent for p in sweep_dir.glob("*/results.json"))
    assert len(runs) == len(jobs) == 2
    assert {r.info.run_name for r in runs} == {j.name for j in jobs}
    for run in runs:
        job = sweep_dir / run.info.run_name
        results = json.loads((job / "results.json").read_text())
        assert run.data.params["seed"] == str(results["seed"])
        assert run.data.tags["credit_fl.sweep"] == str(sweep_dir)
        assert run.data.metrics["test.auc"] == pytest.approx(results["metrics"]["test"]["auc"],
                                                             abs=1e-12)
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
            "results.json", "report.md", "plots.png"}  # tracking.predictions=false
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert all("tracking" not in j.name for j in jobs)  # the job directories are as untracked


def test_a_store_that_cannot_be_used_stops_the_run_before_it_trains(tmp_path):
    (tmp_path / "a-file").write_text("")
    bad = f"tracking.uri=sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    with pytest.raises(ConfigError, match=r"tracking\.uri=.*MLflow cannot use this store"):
        run_experiment(["federation=centralized", "data.n_customers=1000", "tracking=mlflow",
                        bad], tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before training wrote anything
