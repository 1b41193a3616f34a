"""What the command line's ``monitor``, ``rerate`` and ``deploy monitor`` ask of the apps.

A later period's look at a finished run: the run's model (:func:`check_run_dir`), each party's
drift indices through the monitoring apps (:func:`party_indices`, in-process engine), the
lender's model section (:func:`model_section`, the figures a deployed lender's node computes,
judged by :func:`judge`) and the period's tables as files would hold them (:func:`frames_of`).
The command line (``experiments.monitor``, ``experiments.rerate``) adds the options, the
reports and the plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from credit_data.errors import ConfigError
from credit_data.settings import LABEL_HOLDER
from credit_data.tables import Population
from fl_client.model_monitoring import judge as judge
from fl_client.scoring_task import scorecard_of as scorecard_of


@dataclass(frozen=True)
class MonitorSettings:
    """Thresholds, the minimum rows per released bin, the epsilon of a party under DP.

    ``epsilon``: what a party whose rows trained under DP spends on one period's release
    (noised counts, charged to its ledger); other parties release exact counts.
    """

    watch: float = 0.1
    act: float = 0.25
    min_count: int = 50
    epsilon: float = 1.0
    out: str | None = None


def check_run_dir(run_dir: Path) -> dict[str, Any]:
    """Return a vertical run's ``results.json``; refuse a directory that is not such a run."""
    results = run_dir / "results.json"
    if not results.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no results.json); give the "
                          "directory of a finished training run")
    try:
        model = json.loads(results.read_text())["model"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{results}: not a run's results ({exc})") from exc
    if "bundles" not in model:
        raise ConfigError(f"{run_dir}: this run kept no model bundles; train it again")
    return dict(model)


def under_dp(privacy: Any, party: str) -> bool:
    """Return whether ``party``'s rows trained under a DP budget (its counts are then noised)."""
    from privacy.settings import PrivacyMechanism

    return (privacy.mechanism is not PrivacyMechanism.off or party in privacy.party_max_epsilon
            or (party == LABEL_HOLDER and privacy.label_epsilon is not None)
            or privacy.embedding_epsilon is not None)


def party_indices(run_dir: Path, model: dict[str, Any], population: Any,
                   parties: list[str], options: MonitorSettings,
                   privacy: Any) -> tuple[dict[str, Any], dict[str, float | None]]:
    """Ask every party for its indices through the monitoring apps (in-process engine)."""
    from flwr.app import Context

    from credit_fl.in_process import InProcessEngine
    from fl_client.monitoring_app import make_monitoring_client_app
    from fl_client.monitoring_task import MonitoringInput
    from fl_server.monitoring_rounds import MonitoringOutcome, make_monitoring_server_app

    def source(context: Context) -> tuple[str, MonitoringInput]:
        party = parties[int(context.node_config["partition-id"])]
        bundle = run_dir / model["bundles"][party]
        # a simulated party's ledger: its state directory in the run (beside its bundle)
        return party, MonitoringInput(bundle, population.tables[party], options.epsilon
                                      if under_dp(privacy, party) else None, bundle.parent)

    outcome = MonitoringOutcome()
    InProcessEngine(verbose=False).run(make_monitoring_server_app(options.min_count, outcome),
                                       make_monitoring_client_app(source), len(parties))
    if outcome.error is not None:
        raise outcome.error
    return outcome.parties, outcome.epsilon


def model_section(reference: pd.DataFrame, scores: pd.DataFrame,
                  labels: pd.Series | None, manifest: dict[str, Any],
                  settings: MonitorSettings, inputs_act: bool) -> dict[str, Any]:
    """Return the lender's view: score and grade-mix PSI, outcomes or the label-free estimate.

    The figures are :func:`fl_client.model_monitoring.model_figures` (a deployed lender's node
    computes the same), judged against ``settings``' thresholds.
    """
    from fl_client.model_monitoring import judge, model_figures

    figures = model_figures(reference["score"].to_numpy(dtype=np.float64),
                            reference["label"].to_numpy(dtype=np.float64),
                            scores["probability"].to_numpy(dtype=np.float64),
                            None if labels is None else labels.to_numpy(dtype=np.float64),
                            manifest, grades=scores["grade"].astype(str).to_numpy(),
                            min_count=settings.min_count)
    return judge(figures, watch=settings.watch, act=settings.act, inputs_act=inputs_act)


def frames_of(population: Population, id_column: str) -> dict[str, pd.DataFrame]:
    """Return each party's table as the DataFrame its file would hold (no labels)."""
    out = {}
    for party, table in population.tables.items():
        frame = table.frame.astype(dict.fromkeys(table.categorical, "category"))
        frame.index = frame.index.rename(id_column)
        out[party] = frame.reset_index()
    return out


def check_period_columns(run_dir: Path, bundles: dict[str, str], population: Population) -> None:
    """Refuse a period whose party table lacks a column of its bundle or has one more."""
    from fl_client.monitoring_task import check_columns
    from models.bundle import load_bundle

    for party, table in population.tables.items():
        if party in bundles:
            check_columns(load_bundle(run_dir / bundles[party], party=party), table)
