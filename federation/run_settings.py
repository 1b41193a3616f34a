"""The root settings object of a run, and how it is rebuilt from plain data.

Every side needs it (the runner, the deployed ServerApp and ClientApp, a partner's node), so it
lives here, below all of them; Hydra's schema for it is built in :mod:`experiments.config`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from credit_data.errors import ConfigError
from credit_data.settings import DataSettings, PartitionSettings
from federation.explanation import ExplainSettings
from federation.settings import BlacklistSettings, FederationSettings
from models.settings import ModelSettings, ScorecardSettings, TrainSettings
from privacy.settings import AuditSettings, PrivacySettings


class ScoringRows(StrEnum):
    """Which of the lender's rows ``credit-fl score`` scores."""

    all = "all"  # every applicant of the lender's table (new applicants)
    test = "test"  # the test split of the run's own data: reproduces predictions.csv


class MissingParty(StrEnum):
    """What scoring does when a party that trained the model is absent."""

    error = "error"
    unknown = "unknown"  # score its applicants as unknown to it (its "absent" vector)


@dataclass(frozen=True)
class ScoringSettings:
    """``credit-fl score <run dir>``: which rows, what to do without a party, where to write.

    ``out`` defaults to ``<run dir>/scoring/<date>_<time>``. ``applicants`` (deployment only)
    names a CSV file in the lender node's own ``--applicants-dir`` to score, instead of the
    rows of its training file.
    """

    rows: ScoringRows = ScoringRows.all
    missing_party: MissingParty = MissingParty.error
    out: str | None = None
    applicants: str | None = None


_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # a scheme of two letters or more


class TrackingBackend(StrEnum):
    """Where a run's record is also logged, besides its own directory (``tracking=...``)."""

    none = "none"
    mlflow = "mlflow"  # the optional extra: pip install 'credit-fl[mlflow]'


@dataclass(frozen=True)
class TrackingSettings:
    """``tracking=mlflow``: log each run to MLflow (docs/running-experiments.md).

    ``uri`` is an MLflow tracking URI (``http://host:5000``, ``sqlite:///path/mlflow.db``,
    ...); null: ``MLFLOW_TRACKING_URI`` if set, else a local store with no server,
    ``outputs/mlflow/mlflow.db`` and its artifacts beside it. ``experiment`` is the MLflow
    experiment; null: ``credit-fl`` for a single run, the sweep's directory for each member of a
    sweep. ``predictions``: also log ``predictions.csv`` (the test rows' IDs, labels and scores).
    """

    backend: TrackingBackend = TrackingBackend.none
    uri: str | None = None
    experiment: str | None = None
    predictions: bool = True


def check_tracking(settings: TrackingSettings, key: str = "tracking") -> None:
    """Raise a ConfigError naming the key of a value MLflow could not use.

    >>> check_tracking(TrackingSettings(TrackingBackend.mlflow, uri="outputs/runs"))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    credit_data.errors.ConfigError: tracking.uri=outputs/runs is not a tracking URI (...
    """
    uri, experiment = settings.uri, settings.experiment
    if uri is not None and not (_URI_SCHEME.match(uri) or uri == "databricks"):
        raise ConfigError(f"{key}.uri={uri} is not a tracking URI (http://host:5000, "
                          "sqlite:///path/mlflow.db, databricks, ...); null keeps runs in "
                          "outputs/mlflow")
    if uri is not None and urlsplit(uri).password is not None:  # it would be in results.json
        raise ConfigError(f"{key}.uri holds a password, which the run's config (results.json) "
                          "would keep: give it in MLFLOW_TRACKING_PASSWORD or "
                          "MLFLOW_TRACKING_TOKEN instead")
    if experiment is not None and not experiment.strip():
        raise ConfigError(f"{key}.experiment is empty; null names it after the run or sweep")
    if settings.backend is TrackingBackend.none and (uri is not None or experiment is not None):
        logging.getLogger("credit_fl").warning(
            "%s.uri or %s.experiment is set but %s.backend is none: nothing is logged "
            "(tracking=mlflow turns tracking on)", key, key, key)


class Engine(StrEnum):
    """What runs the simulated nodes of a federated run (docs/benchmarks.md measures both)."""

    in_process = "in_process"  # every node in this process, each message delivered at once
    simulation = "simulation"  # Flower's simulation engine on Ray: nodes side by side


@dataclass(frozen=True)
class RunSettings:
    """Everything a run depends on; built once, from the Hydra config.

    ``references``: also train the centralized, lender-only and non-private references on the
    same rows and seed (cached per sweep), for the privacy-utility comparison.
    """

    seed: int = 0
    verbose: bool = True
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    federation: FederationSettings = field(default_factory=FederationSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    partition: PartitionSettings = field(default_factory=PartitionSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    scorecard: ScorecardSettings = field(default_factory=ScorecardSettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    explain: ExplainSettings = field(default_factory=ExplainSettings)  # reason codes
    blacklists: BlacklistSettings = field(default_factory=BlacklistSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    references: bool = False
    resume: str | None = None
    engine: Engine = Engine.simulation


def build_settings(tp: Any, value: Any, key: str) -> Any:
    """Build a settings dataclass (or any field of one) from plain data, recursively."""
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        kwargs = {f.name: build_settings(hints[f.name], value[f.name],
                                         f"{key}.{f.name}".lstrip("."))
                  for f in dataclasses.fields(tp) if f.name in value}
        return typing.cast(Any, tp)(**kwargs)
    if value is None:
        return None
    if origin is tuple:
        return tuple(build_settings(args[0], v, key) for v in value)
    if origin is dict:
        return {k: build_settings(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if origin in (Union, types.UnionType):
        return build_settings(next(a for a in args if a is not type(None)), value, key)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return value if isinstance(value, tp) else tp(value)
    return value


def settings_from_container(container: dict[str, Any]) -> RunSettings:
    """Rebuild :class:`RunSettings` from a resolved config as plain data (e.g. from JSON)."""
    return typing.cast(RunSettings, build_settings(RunSettings, container, ""))
