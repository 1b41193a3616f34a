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
"""

from __future__ import annotations

import json
from typing import Any

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod

from credit_data.consent import MONITORING
from credit_data.errors import ConfigError
from credit_data.files import load_party
from credit_data.settings import PartySource
from credit_data.tables import PartyTable
from deployment.client_app import (
    LIFETIME_RUN,
    RUN_NAME_PATTERN,
    NodeConfig,
    _budget,
    _gated,
    _lender,
    _refusal,
    _refused,
    _settings,
    run_state_dir,
)
from deployment.run_config import MODEL_RUN, MONITOR_REQUEST, RUN_NAME, RUN_SETTINGS, run_settings
from federation.lifetime_budget import run_spend
from federation.monitoring_release import MONITORING_FLAG, MonitoringRelease, monitoring_release
from federation.releases import Release
from federation.run_settings import RunSettings
from fl_client.monitoring_app import make_monitoring_client_app
from fl_client.monitoring_task import MonitoringInput
from fl_client.party_bundle import BUNDLE_DIR

__all__ = ["decision", "monitoring_app", "period_table"]


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


def period_table(run: RunSettings, node: NodeConfig, period: str | None) -> PartyTable:
    """Read the period's rows: the node's ``--data``, or ``period`` in its ``--periods-dir``."""
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
    return load_party(node.party, source, run.data, labels=False)


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
                                       request=str(context.run_config[RUN_NAME]))


def monitoring_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Refuse before the handler as the node decides; record the exact counts' opt-in after."""
    node = NodeConfig.from_context(dict(context.node_config))
    run_settings(str(context.run_config[RUN_SETTINGS]))  # a bad run config is named first
    how = decision(context, node)
    if how.refused is not None:
        return _refusal(msg, node.party, how.refused)
    reply = call_next(msg, context)
    if not reply.has_error() and not _refused(reply) and how.epsilon is None:
        _budget(node).record_opt_in(str(context.run_config[RUN_NAME]),
                                    [Release.monitoring_counts.value], [MONITORING_FLAG])
    return reply


def monitoring_app(*mods: Mod) -> ClientApp:
    """Return the deployed monitoring ClientApp (``mods``, a grant's, run first)."""
    return make_monitoring_client_app(monitoring_source, (*mods, monitoring_mod),
                                      settings_of=lambda context: _settings(context)[2])
