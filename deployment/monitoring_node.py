"""A deployed node's answer to ``deploy monitor``: its stability indices, on its own terms.

The handler is simulation's (:mod:`fl_client.monitoring_app`); what differs is where the rows
and the decision come from. The node reads the period's rows from its own disk (its ``--data``,
or a file the request names in its ``--periods-dir``), keeps the customers whose consent
grants ``monitoring`` (its ``--consent``), loads the bundle it wrote in the model's run, and
decides alone (:func:`federation.monitoring_release.monitoring_release`):

* no ``--release-monitoring``: refused, named;
* under a DP budget (capped, or its ledger holds the model run's spend): counts noised from the
  OS with the request's epsilon, charged to its lifetime ledger under the monitoring run's name,
  refused past its ``--max-epsilon``;
* otherwise: exact counts, the opt-in recorded in its ledger.

Every message, refusals included, is in the node's audit log with the purpose ``monitoring``.

The model's section (:func:`model_source`): after the indices the server scores the period
through the parties exactly as a batch scoring does (each node reads the same period file; the
lender keeps the scores, ``<state dir>/<monitoring run>/lender/scores.csv``), then asks the
lender's node for its figures (:func:`fl_client.model_monitoring.model_figures`): its scores
and, where its period file has them, its outcomes, against the model run's test split it kept
(``scores.npz``: scores and rows; the labels from its own training file, checked to be the
table it trained on). The scoring messages are released under each node's own rules for
scoring (and its ``--release-monitoring``); the figures only under the lender's
``--release-monitoring`` and outside a DP budget
(:func:`federation.monitoring_release.model_release`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from credit_data.consent import MONITORING, SCORING, TRAINING
from credit_data.errors import ConfigError, DataError
from credit_data.files import load_party
from credit_data.settings import LABEL_HOLDER, PartySource
from credit_data.split import TEST, TRAIN, VAL, assign_split
from credit_data.tables import PartyTable
from deployment.client_app import (
    LIFETIME_RUN,
    RUN_NAME_PATTERN,
    NodeConfig,
    _budget,
    _consent,
    _gated,
    _lender,
    _refusal,
    _refused,
    _settings,
    _split_key,
    lifetime_budget_mod,
    run_state_dir,
)
from deployment.run_config import MODEL_RUN, MONITOR_REQUEST, RUN_NAME, RUN_SETTINGS, run_settings
from federation.lifetime_budget import run_spend
from federation.monitoring_release import (
    MONITORING_FLAG,
    MonitoringRelease,
    model_release,
    monitoring_release,
)
from federation.releases import Release
from federation.run_settings import RunSettings
from fl_client.audit_log_mod import AUDIT_NOTE
from fl_client.model_monitoring import model_figures
from fl_client.monitoring_app import MONITOR, MONITOR_MODEL, make_monitoring_client_app
from fl_client.monitoring_task import MonitoringInput
from fl_client.party_bundle import BUNDLE_DIR
from fl_client.scoring_app import make_scoring_client_app
from fl_client.scoring_task import SCORES_FILE, ScoringInput
from fl_client.settings import ClientSettings
from models.bundle import read_manifest

__all__ = ["decision", "model_source", "monitoring_app", "period_scoring_source",
           "period_table"]

LABEL_MISSING = "(data.label) is missing"
"""How :func:`credit_data.files.load_party` names a lender's file without outcomes."""


def _request(context: Context) -> dict[str, Any]:
    try:
        request = json.loads(str(context.run_config[MONITOR_REQUEST]))
        return {"epsilon": float(request["epsilon"]), "period": request.get("period")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"run config '{MONITOR_REQUEST}' is not a monitoring request: "
                          f"{exc}") from exc


def _trained_under_dp(node: NodeConfig, model_run: str) -> bool:
    """Whether the node's ledger holds a spend of the model's run (its rows trained under DP)."""
    first = run_state_dir(node.state_dir, model_run) / LIFETIME_RUN  # a resumed run's first
    name = first.read_text().strip() if first.is_file() else model_run
    return run_spend(_budget(node).runs().get(name, {})) > 0


def decision(context: Context, node: NodeConfig) -> MonitoringRelease:
    """Return how this node answers the request (refused, exact or noised); see the module doc."""
    name = str(context.run_config[RUN_NAME])
    return monitoring_release(
        node.party, opted=node.opt_in, capped=node.max_epsilon is not None,
        trained_under_dp=_trained_under_dp(node, str(context.run_config[MODEL_RUN])),
        epsilon=_request(context)["epsilon"], left=_budget(node).left(name))


def period_table(run: RunSettings, node: NodeConfig, period: str | None, *,
                 labels: bool = False) -> PartyTable:
    """Read the period's rows: the node's ``--data``, or ``period`` in its ``--periods-dir``.

    ``labels``: the lender's outcomes too, where its file has the label column.
    """
    if period is None:
        source = PartySource(path=str(node.data_path), categorical=node.categorical,
                             id_column=node.id_column, named_by="the node's --data",
                             query=node.query)
    else:
        if not RUN_NAME_PATTERN.fullmatch(period) or ".." in period:
            raise ConfigError(f"monitor.period={period!r}: one plain file name in the node's "
                              "--periods-dir (letters, digits, '.', '_', '-'), no path; refused")
        if node.periods_dir is None:
            raise ConfigError(f"{node.party}: monitor.period={period}: this node has no "
                              "--periods-dir to read a period's file from")
        source = PartySource(path=str(node.periods_dir / period), categorical=node.categorical,
                             id_column=node.id_column,
                             named_by="monitor.period, in the node's --periods-dir")
    if labels and node.party == LABEL_HOLDER:
        try:
            return load_party(node.party, source, run.data, labels=True)
        except DataError as exc:
            if LABEL_MISSING not in str(exc):
                raise
    return load_party(node.party, source, run.data, labels=False)


def _version(run: RunSettings, node: NodeConfig, period: str | None) -> tuple[int, int]:
    path = node.data_path if period is None or node.periods_dir is None else (
        node.periods_dir / period)
    try:
        stat = Path(path).stat()
    except OSError:  # period_table names the missing file
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _period_rows(run_text: str, node: NodeConfig, period: str | None,
                 version: tuple[int, int]) -> PartyTable:
    """Read the period's rows once per version of the file (each scoring message asks)."""
    return period_table(run_settings(run_text), node, period)


def period_scoring_source(context: Context) -> tuple[ClientSettings, ScoringInput]:
    """Return the node's settings, its bundle of the model run and its period's rows to score.

    The period's file, consented to ``monitoring`` and to ``credit_scoring``: scoring sends
    each known row's embedding to the lender, a row-level release the aggregate purpose alone
    does not cover.
    """
    torch.set_num_threads(1)
    run, node, client = _settings(context)
    if node.party in run.blacklists.holders:
        raise ConfigError(f"{node.party}: a blacklist holder's node holds a list, no period "
                          "to score")
    period = _request(context)["period"]
    run_text = str(context.run_config[RUN_SETTINGS])
    table = _gated(client, node, run, _period_rows(run_text, node, period,
                                                   _version(run, node, period)),
                   MONITORING, _lender(context))
    table = _gated(client, node, run, table, SCORING, _lender(context))
    bundle = (run_state_dir(node.state_dir, str(context.run_config[MODEL_RUN])) / node.party
              / BUNDLE_DIR)
    return client, ScoringInput(bundle, table)


def _reference(run: RunSettings, node: NodeConfig, model_dir: Path,
               manifest: dict[str, Any], lender: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the model run's test scores and outcomes, as the lender kept and holds them.

    The scores and rows are those the lender kept in the run (``scores.npz``); the outcomes
    come from its training file read as in training, refused unless it is the same table
    (its fingerprint and its split).
    """
    kept = model_dir / "scores.npz"
    if not kept.is_file():
        raise DataError(f"{kept}: the lender kept no test scores of the model's run; the "
                        "model section needs them")
    with np.load(kept, allow_pickle=False) as saved:
        scores, rows = saved["test_scores"], {
            code: saved[f"{name}_rows"] for code, name in ((TRAIN, "train"), (VAL, "val"),
                                                           (TEST, "test"))}
    source = PartySource(path=str(node.data_path), categorical=node.categorical,
                         id_column=node.id_column, query=node.query)
    table, _ = _consent(node, run, load_party(node.party, source, run.data), TRAINING, lender)
    split = assign_split(table.frame.index, _split_key(run, node), run.data.split)
    same = table.fingerprint() == manifest["table"]["fingerprint"] and all(
        np.array_equal(r, np.flatnonzero(split == code)) for code, r in rows.items())
    if not same or table.labels is None:
        raise DataError(f"{node.data_path}: the lender's training rows differ from those the "
                        "model's run trained on (its fingerprint or split); the training "
                        "reference of the model section cannot be rebuilt")
    labels = table.labels[run.data.label].to_numpy(dtype=np.float64)
    return np.asarray(scores, dtype=np.float64), labels[rows[TEST]]


def _min_count(context: Context, node: NodeConfig) -> int:
    """Return the request's ``monitor.min_count`` raised to the node's own floor."""
    asked = _request(context).get("min_count", 1)
    return max(int(asked) if isinstance(asked, int) else 1, node.monitor_min_count)


def model_source(context: Context) -> tuple[str, dict[str, Any]]:
    """Return the lender's figures of its scores of the period (its model section).

    Refused at any other node, without the node's own ``--release-monitoring`` and under a DP
    budget (:func:`federation.monitoring_release.model_release`), and before the period was
    scored in this run.
    """
    torch.set_num_threads(1)
    run, node, client = _settings(context)
    if node.party != LABEL_HOLDER:
        raise ConfigError(f"{node.party}: only the lender's node computes the model section")
    why = model_release(node.party, opted=node.opt_in, capped=node.max_epsilon is not None,
                        trained_under_dp=_trained_under_dp(node,
                                                           str(context.run_config[MODEL_RUN])))
    if why is not None:
        raise ConfigError(why)
    model_dir = run_state_dir(node.state_dir, str(context.run_config[MODEL_RUN])) / node.party
    manifest = read_manifest(model_dir / BUNDLE_DIR)
    scored = Path(client.state_dir or node.state_dir) / node.party / SCORES_FILE
    if not client.state_dir or not scored.is_file():
        raise DataError(f"{node.party}: the period was not scored in this monitoring run; "
                        "nothing to compute the model section from")
    scores = pd.read_csv(scored, dtype={"id": str, "grade": str}, keep_default_na=False)
    reference, reference_labels = _reference(run, node, model_dir, manifest, _lender(context))
    period = period_table(run, node, _request(context)["period"], labels=True)
    labels = None
    if period.labels is not None:
        outcomes = period.labels[run.data.label].reindex(scores["id"].to_numpy())
        if outcomes.isna().any():
            raise DataError(f"{period.source}: outcomes missing for scored applicants")
        labels = outcomes.to_numpy(dtype=np.float64)
    return node.party, model_figures(reference, reference_labels,
                                     scores["probability"].to_numpy(dtype=np.float64), labels,
                                     manifest, grades=scores["grade"].to_numpy(),
                                     min_count=_min_count(context, node))


def monitoring_source(context: Context) -> tuple[str, MonitoringInput]:
    """Return the node's party and its bundle, period rows (consented) and budget."""
    torch.set_num_threads(1)
    run, node, client = _settings(context)
    if node.party in run.blacklists.holders:
        raise ConfigError(f"{node.party}: a blacklist holder's node holds a list, no columns "
                          "to monitor")
    how = decision(context, node)
    if how.refused is not None:  # the mod refused already; never computed without it
        raise ConfigError(how.refused)
    table = _gated(client, node, run, period_table(run, node, _request(context)["period"]),
                   MONITORING, _lender(context))
    bundle = (run_state_dir(node.state_dir, str(context.run_config[MODEL_RUN])) / node.party
              / BUNDLE_DIR)
    return node.party, MonitoringInput(bundle, table, how.epsilon, node.state_dir,
                                       max_epsilon=node.max_epsilon,
                                       request=str(context.run_config[RUN_NAME]),
                                       min_count=node.monitor_min_count)


def monitoring_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Refuse before the handler as the node decides; record the exact counts' opt-in after.

    ``query.monitor`` (the indices) as :func:`decision` says; every other message of a
    monitoring run (the period's scoring, the model section) needs the node's own
    ``--release-monitoring``, and its handler decides the rest.
    """
    node = NodeConfig.from_context(dict(context.node_config))
    run_settings(str(context.run_config[RUN_SETTINGS]))  # a bad run config is named first
    if msg.metadata.message_type != MONITOR:
        if Release.monitoring_counts not in node.opt_in:
            reply = _refusal(msg, node.party, f"{node.party}: a monitoring request's "
                             f"{msg.metadata.message_type} is answered only with this node's "
                             f"own {MONITORING_FLAG}")
        else:
            reply = call_next(msg, context)
            if (msg.metadata.message_type == MONITOR_MODEL and not reply.has_error()
                    and not _refused(reply)):  # exact figures of its rows, under its opt-in
                _budget(node).record_opt_in(str(context.run_config[RUN_NAME]),
                                            [Release.monitoring_counts.value],
                                            [MONITORING_FLAG])
        # the node's audit line says monitoring (a scoring handler's own note names no purpose)
        note = context.state.config_records.get(AUDIT_NOTE) or ConfigRecord()
        if "purpose" not in note:
            note["purpose"] = MONITORING
        context.state.config_records[AUDIT_NOTE] = note
        return reply
    how = decision(context, node)
    if how.refused is not None:
        return _refusal(msg, node.party, how.refused)
    reply = call_next(msg, context)
    if not reply.has_error() and not _refused(reply) and how.epsilon is None:
        _budget(node).record_opt_in(str(context.run_config[RUN_NAME]),
                                    [Release.monitoring_counts.value], [MONITORING_FLAG])
    return reply


class _Monitoring(ClientApp):
    """The indices and the model section (monitoring's app); the period's scoring (scoring's)."""

    def __init__(self, *mods: Mod) -> None:
        super().__init__()
        self.monitoring = make_monitoring_client_app(
            monitoring_source, (*mods, monitoring_mod),
            settings_of=lambda context: _settings(context)[2], model_of=model_source)
        # the scoring handlers over the period's rows: the node's opt-in first, then its
        # lifetime budget and its opt-ins as for any scoring (each logged as monitoring)
        self.scoring = make_scoring_client_app(
            period_scoring_source, (*mods, monitoring_mod, lifetime_budget_mod))

    def __call__(self, message: Message, context: Context) -> Message:
        if message.metadata.message_type in (MONITOR, MONITOR_MODEL):
            return cast(Message, self.monitoring(message, context))
        return cast(Message, self.scoring(message, context))


def monitoring_app(*mods: Mod) -> ClientApp:
    """Return the deployed monitoring ClientApp (``mods``, a grant's, run first)."""
    return _Monitoring(*mods)
