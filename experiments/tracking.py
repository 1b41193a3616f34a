"""Log a finished run to MLflow (``tracking=mlflow``): what its directory holds, nothing more.

Everything logged comes from ``results.json`` (the public record of the run) and the files
beside it:

- params: the resolved config (results.json's ``config``), flattened: ``train.lr``,
  ``privacy.target_epsilon``, ...; lists and nulls as JSON (``[32]``, ``null``);
- metrics per epoch or round (``metrics.history``; the step is the epoch or the round):
  ``val_auc``, ``train_loss``, ``val_log_loss``, ``pooled_auc``, ``epsilon``, ``seconds``, ...;
  and each ledger entry's epsilon as it grew, ``privacy.history.<entry>.epsilon`` (its value at
  the end of each round);
- final metrics (step 0): ``test.auc``, ``val.ks``, ``best_epoch``, ``party_lift.<party>``, ...;
  the ledger, ``privacy.epsilon``, ``privacy.delta``, ``privacy.parties.<entry>.epsilon``,
  ``privacy.party_totals.<party>.epsilon``, ...; ``audit.*``, ``references.*``, ``timing.*``;
- tags: ``credit_fl.mode``, ``credit_fl.dataset``, ``credit_fl.privacy``, ``credit_fl.run_dir``,
  ``credit_fl.sweep`` (a sweep's jobs); the run is named after its directory;
- artifacts: ``results.json``, ``report.md``, ``plots.png`` and (``tracking.predictions``)
  ``predictions.csv``.

The store is reached before the run trains (:func:`open_tracker`), so a wrong URI or a missing
MLflow fails in seconds; the run is logged once its directory is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from credit_data.errors import ConfigError
from federation.run_settings import TrackingBackend, TrackingSettings, check_tracking

log = logging.getLogger("credit_fl")

DEFAULT_STORE = Path("outputs") / "mlflow"
"""Where runs go without ``tracking.uri`` or ``MLFLOW_TRACKING_URI``: ``mlflow.db`` (SQLite)
and ``artifacts/`` beside it, relative to the working directory, as Hydra's run directories."""
SINGLE_RUN_EXPERIMENT = "credit-fl"
ARTIFACTS = ("results.json", "report.md", "plots.png")
_BATCH = 100  # MLflow takes at most 100 params or tags in one request
_INVALID = re.compile(r"[^\w./\- ]")  # what MLflow refuses in a param or metric name


@dataclass(frozen=True)
class Tracker:
    """An MLflow store and the experiment this process logs its runs into."""

    client: Any  # mlflow.tracking.MlflowClient
    uri: str
    experiment_id: str
    settings: TrackingSettings
    sweep: str | None = None

    def log_run(self, run_dir: Path) -> str:
        """Log a written run directory (its results.json, as on disk) as an MLflow run.

        Returns the MLflow run's id.
        """
        from mlflow.entities import Metric, Param, RunTag

        results = json.loads((run_dir / "results.json").read_text())
        now = int(time.time() * 1000)
        start = now - int(1000 * results["timing"]["wall_s"])
        run = self.client.create_run(self.experiment_id, start_time=start,
                                     run_name=run_dir.name)
        run_id = run.info.run_id
        try:
            tags = [RunTag(k, v) for k, v in run_tags(results, run_dir, self.sweep).items()]
            params = [Param(k, v) for k, v in run_params(results["config"]).items()]
            metrics = [Metric(k, v, now, step) for k, v, step in run_metrics(results)]
            for chunk in _chunks([*tags, *params, *metrics]):
                self.client.log_batch(
                    run_id, metrics=[e for e in chunk if isinstance(e, Metric)],
                    params=[e for e in chunk if isinstance(e, Param)],
                    tags=[e for e in chunk if isinstance(e, RunTag)])
            for path in self._files(run_dir):
                self.client.log_artifact(run_id, str(path))
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED", end_time=now)
        log.info("logged to MLflow: run %s in experiment %s at %s", run_id,
                 self.experiment_id, shown(self.uri))
        return str(run_id)

    def _files(self, run_dir: Path) -> list[Path]:
        names = [*ARTIFACTS, *(["predictions.csv"] if self.settings.predictions else [])]
        return [run_dir / n for n in names if (run_dir / n).is_file()]


def open_tracker(settings: TrackingSettings, sweep: str | None = None) -> Tracker | None:
    """Check ``tracking.*``, reach the store and its experiment; None with ``tracking=none``.

    ``sweep`` names the sweep this run belongs to (its directory): the experiment of every
    job of it, unless ``tracking.experiment`` names one.

    Raises
    ------
    ConfigError
        MLflow is not installed, or the store cannot be reached or used; the message names
        the key.
    """
    check_tracking(settings)
    if settings.backend is TrackingBackend.none:
        return None
    client_class, mlflow_error = _mlflow()
    uri = tracking_uri(settings)
    name = settings.experiment or sweep or SINGLE_RUN_EXPERIMENT
    try:
        artifacts = _artifacts(uri)  # SQLite makes no folder: its file's is made here
        client = client_class(tracking_uri=uri)
        found = client.get_experiment_by_name(name)
        if found is None:
            experiment_id = client.create_experiment(name, artifact_location=artifacts)
        elif found.lifecycle_stage != "active":
            raise ConfigError(f"tracking.experiment: MLflow experiment '{name}' at "
                              f"{shown(uri)} is deleted; restore it or name another")
        else:
            experiment_id = found.experiment_id
    except (mlflow_error, OSError) as exc:
        raise ConfigError(f"tracking.uri={shown(uri)}: MLflow cannot use this store: "
                          f"{exc}") from exc
    return Tracker(client, uri, experiment_id, settings, sweep)


def tracking_uri(settings: TrackingSettings) -> str:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else the local SQLite store.

    >>> tracking_uri(TrackingSettings(uri="http://localhost:5000"))
    'http://localhost:5000'
    """
    uri = settings.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(DEFAULT_STORE / 'mlflow.db').resolve()}"


def shown(uri: str) -> str:
    """Return a URI as a message may show it: without the user and password it may hold.

    >>> shown("https://ann:secret@mlflow.example:5000/x")
    'https://mlflow.example:5000/x'
    """
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri  # as given: geturl() would fold sqlite:////abs into sqlite://abs
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _artifacts(uri: str) -> str | None:
    """Return where a SQLite store keeps artifacts: ``artifacts/`` beside its file (made here).

    Other stores decide for themselves (None).
    """
    path = uri.removeprefix("sqlite:///").split("?")[0]
    if not uri.startswith("sqlite:///") or path in ("", ":memory:"):
        return None
    folder = Path(path).resolve().parent
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    return (folder / "artifacts").as_uri()


def _mlflow() -> tuple[Any, type[Exception]]:
    """Import MLflow's client; telemetry off unless asked for, its log lines to run.log."""
    imported = "mlflow" in sys.modules
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a run sends nothing elsewhere
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError("tracking=mlflow needs MLflow, an optional extra: pip install -c "
                          "constraints.txt -e '.[mlflow]' (or pip install "
                          "'credit-fl[mlflow]')") from exc
    if imported:  # imported before the variable was set: its telemetry client may be on
        from mlflow.telemetry import set_telemetry_client

        set_telemetry_client()
    for name in ("mlflow", "alembic", "sqlalchemy.engine", "huey"):  # MLflow set them up
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    return MlflowClient, MlflowException


def run_tags(results: dict[str, Any], run_dir: Path, sweep: str | None) -> dict[str, str]:
    """Return the run's tags: what it is and where its directory is."""
    privacy = results.get("privacy")
    tags = {"credit_fl.mode": results["mode"], "credit_fl.dataset": results["dataset"]["name"],
            "credit_fl.privacy": privacy["mechanism"] if privacy else "off",
            "credit_fl.seed": str(results["seed"]),
            "credit_fl.schema_version": str(results["schema_version"]),
            "credit_fl.run_dir": str(run_dir.resolve())}
    if sweep is not None:
        tags["credit_fl.sweep"] = sweep
    return tags


def run_params(config: dict[str, Any]) -> dict[str, str]:
    """Return the resolved config as MLflow params, one per leaf (non-strings as JSON).

    >>> run_params({"train": {"lr": 0.001, "hidden": [32]}, "resume": None, "x": {}})
    {'train.lr': '0.001', 'train.hidden': '[32]', 'resume': 'null', 'x': '{}'}
    """
    return {_name(k): v if isinstance(v, str) else json.dumps(v)
            for k, v in _leaves(config, keep_empty=True)}


def run_metrics(results: dict[str, Any]) -> list[tuple[str, float, int]]:
    """Return every figure results.json holds, as ``(name, value, step)``.

    >>> run_metrics({"metrics": {"test": {"auc": 0.8}, "history": [
    ...     {"epoch": 1, "val_auc": 0.7, "train_loss": None}]}, "privacy": None})
    [('test.auc', 0.8, 0), ('val_auc', 0.7, 1)]
    """
    out = [(k, v, 0) for k, v in _numbers(_without(results["metrics"], "history"))]
    for row in results["metrics"].get("history") or []:
        step = int(row.get("epoch", row.get("round", 0)))
        out += [(k, v, step) for k, v in _numbers(row) if k not in ("epoch", "round")]
    privacy = results.get("privacy")
    if privacy:
        out += [(f"privacy.{k}", v, 0) for k, v in _numbers(_without(privacy, "history"))]
        last = {(int(h["round"]), h["party"]): h["epsilon"] for h in privacy.get("history") or []}
        out += [(_name(f"privacy.history.{party}.epsilon"), float(eps), step)
                for (step, party), eps in last.items()]
    for section in ("audit", "references", "timing"):
        out += [(f"{section}.{k}", v, 0) for k, v in _numbers(results.get(section) or {})]
    return out


def _without(tree: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in tree.items() if k != key}


def _numbers(tree: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """Yield the numeric leaves of a nested dict (lists, strings, booleans, nulls left out)."""
    for key, value in _leaves(tree, keep_empty=False):
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield _name(key), float(value)


def _leaves(tree: dict[str, Any], keep_empty: bool, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict) and (value or not keep_empty):
            yield from _leaves(value, keep_empty, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _name(key: str) -> str:
    """Return a key as MLflow takes it: characters it refuses become ``_``.

    >>> _name("audit.inversion.bureau.r2.debt (usd)")
    'audit.inversion.bureau.r2.debt _usd_'
    """
    return _INVALID.sub("_", key)


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _BATCH):
        yield items[i:i + _BATCH]
