"""Train a model, look at it, score applicants with it, save it and load it again.

:func:`train` runs any mode (vertical, horizontal, centralized, local) on the settings' data
or on pandas DataFrames, and writes the run's files into a directory of its own: the same
``results.json``, ``report.md``, ``predictions.csv``, plots and per-party bundles that
``credit-fl run`` writes (``credit-fl run`` calls it). :meth:`TrainedModel.save` copies them
where the user says; :func:`load` reads a saved or command-line run back.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from credit_data.errors import ConfigError
from credit_data.loading import load_population
from credit_data.settings import DataSettings, Source
from credit_data.tables import Population
from credit_fl.checks import check_settings
from credit_fl.config import config_of, settings_of
from federation.run_settings import Engine, RunSettings
from federation.settings import Mode

if TYPE_CHECKING:
    from credit_fl.results import Figures

Frames = Mapping[str, pd.DataFrame]
"""One pandas DataFrame per party (``lender``, ``bureau``, ``social``), keyed by its name."""


def _engine(settings: RunSettings, engine: Engine | str | None) -> RunSettings:
    if engine is None:
        return settings
    try:
        chosen = Engine(engine)
    except ValueError:
        raise ConfigError(f"engine={engine}: expected one of "
                          f"{[e.value for e in Engine]}") from None
    return dataclasses.replace(settings, engine=chosen)


def frames_data(data: DataSettings) -> DataSettings:
    """Return the data settings of rows handed over as DataFrames (``data.source=frames``)."""
    name = "frames" if data.source is Source.synthetic else data.name
    return dataclasses.replace(data, source=Source.frames, name=name)


def _outcome(settings: RunSettings, directory: Path, population: Population | None) -> Any:
    """Run the settings' mode; the runners load torch, Flower and Ray, so only now."""
    from credit_fl.baselines import run_baseline
    from credit_fl.horizontal import run_horizontal
    from credit_fl.vertical import run_vertical

    mode = settings.federation.mode
    if mode is Mode.horizontal:
        return run_horizontal(settings, directory, population=population)
    if mode is Mode.vertical:
        return run_vertical(settings, directory, population=population)
    return run_baseline(settings, directory, population=population)


def train(settings: RunSettings, frames: Frames | None = None, *,
          engine: Engine | str | None = None, run_dir: str | Path | None = None,
          references_cache: Path | None = None, figures: Figures | None = None) -> TrainedModel:
    """Train the model ``settings`` describe; return it with its metrics, ledger and files.

    Parameters
    ----------
    settings:
        From :func:`credit_fl.settings` (the command line's defaults) or built as dataclasses.
    frames:
        The rows, one DataFrame per party, validated exactly as CSV files are
        (:func:`credit_data.files.load_frames`); ``None`` loads the settings' data config.
    engine:
        ``"in_process"`` or ``"simulation"`` (Flower's on Ray); ``None``: ``settings.engine``.
    run_dir:
        Where the run's files go (``credit-fl run`` passes Hydra's run directory); ``None``: a
        temporary directory that lives as long as the model (:meth:`TrainedModel.save` keeps it).
    references_cache:
        A sweep's directory of references (``references=true``), shared by its jobs.
    figures:
        Draws ``plots.png`` (:data:`credit_fl.results.Figures`; the command line passes
        :func:`experiments.plots.write_plots`); ``None``: no plot (credit_fl draws nothing).

    Raises
    ------
    ConfigError, DataError
        Bad settings or rows, named before anything is trained or written.
    """
    start = time.perf_counter()
    settings = _engine(settings, engine)
    if frames is not None:
        settings = dataclasses.replace(settings, data=frames_data(settings.data))
    check_settings(settings)
    population = (load_population(settings.data, settings.seed, frames=frames)
                  if frames is not None else None)
    temporary = run_dir is None
    directory = Path(tempfile.mkdtemp(prefix="credit-fl-run-") if run_dir is None else run_dir)
    try:
        results = _train_into(settings, directory, population, references_cache, start,
                              figures)
    except BaseException:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return TrainedModel(results, directory, settings, temporary=temporary)


def _train_into(settings: RunSettings, directory: Path, population: Population | None,
                references_cache: Path | None, start: float, figures: Figures | None
                ) -> dict[str, Any]:
    from credit_fl.attacks import attack_outcome
    from credit_fl.references import references_for
    from credit_fl.results import write_run

    outcome = _outcome(settings, directory, population)
    audit = attack_outcome(outcome)
    references = (references_for(settings, references_cache, population)
                  if settings.references else None)
    return write_run(directory, outcome, time.perf_counter() - start, config_of(settings),
                     audit, references, figures)


class TrainedModel:
    """A trained model and its run's files (``directory``).

    ``metrics``, ``references`` and ``ledger`` (the privacy spending per party, None without
    privacy) are the run's ``results.json`` sections; :meth:`report` is its ``report.md``.
    """

    def __init__(self, results: dict[str, Any], directory: Path, settings: RunSettings, *,
                 temporary: bool = False) -> None:
        self.results = results
        self.directory = directory
        self.settings = settings
        if temporary:  # the run's files go with the model, unless saved
            weakref.finalize(self, shutil.rmtree, str(directory), True)

    def __repr__(self) -> str:
        auc = self.metrics["test"]["auc"]
        return (f"TrainedModel({self.results['mode']}, test AUC {auc:.4f}, "
                f"{self.directory})")

    @property
    def metrics(self) -> dict[str, Any]:
        """Per split (``train``, ``val``, ``test``): AUC, KS, Gini, Brier, log-loss; history."""
        return dict(self.results["metrics"])

    @property
    def references(self) -> dict[str, Any] | None:
        """Logistic regressions on the same rows, and with ``references=true`` the baselines."""
        return self.results.get("references")

    @property
    def ledger(self) -> dict[str, Any] | None:
        """The privacy ledger's summary: each party's spending and epsilon (None: no DP)."""
        return self.results.get("privacy")

    @property
    def predictions(self) -> pd.DataFrame | None:
        """The test split's ``id, label, score`` (None where the run holds no rows)."""
        path = self.directory / "predictions.csv"
        return pd.read_csv(path, dtype={"id": str}) if path.is_file() else None

    def report(self) -> str:
        """Return the run's report (markdown), as ``report.md`` holds it."""
        from credit_fl.report import render_report

        return render_report(self.results)

    def score(self, frames: Frames | None = None, *,
              engine: Engine | str | None = None) -> pd.DataFrame:
        """Score applicants: ``id, probability, points, grade`` (and who knew each one).

        ``frames``: one DataFrame per party, validated as for training, the lender's without
        labels if it likes; ``None`` scores every applicant of the settings' data config. A
        vertical model scores through the same Flower apps as training, each party with its
        own bundle; ``engine`` as for :func:`train`.
        """
        from credit_fl.batch_scoring import score_bundles

        settings = _engine(self.settings, engine)
        if frames is not None:
            settings = dataclasses.replace(settings, data=frames_data(settings.data))
        with tempfile.TemporaryDirectory(prefix="credit-fl-scoring-") as stage:
            scores, _ = score_bundles(self.directory, settings, Path(stage), frames)
        return scores

    def save(self, run_dir: str | Path) -> Path:
        """Copy the run's files to ``run_dir`` (a new or empty directory), whole or not at all.

        Raises
        ------
        ConfigError
            ``run_dir`` holds files already.
        """
        target = Path(run_dir)
        if target.resolve() == self.directory.resolve():
            return target
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError(f"{target}: exists and is not empty; name a new directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(self.directory, stage, dirs_exist_ok=True)
            if target.exists():
                target.rmdir()
            stage.rename(target)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return target


def load(run_dir: str | Path) -> TrainedModel:
    """Read a run saved by :meth:`TrainedModel.save` or written by ``credit-fl run``.

    Raises
    ------
    ConfigError
        No finished run there (no readable ``results.json``).
    """
    directory = Path(run_dir)
    settings = settings_of(directory)  # names a missing or unreadable results.json
    results = json.loads((directory / "results.json").read_text())
    return TrainedModel(results, directory, settings)
