"""The ClientApp a partner's node runs in a real deployment (``flwr run`` on a SuperLink).

The run's settings (model, training, privacy; the same for every node) come from the run config
the coordinator submits; everything about the node itself comes from the node's own config
(``flower-supernode --node-config``), which the coordinator cannot change:

``party``
    This node's party: ``lender``, ``bureau`` or ``social`` (vertical), ``lender-<k>``
    (horizontal).
``data-path``
    The party's own CSV file, read on this machine only. Optional: ``id-column`` (default: the
    run's ``data.id_column``) and ``categorical`` (comma-separated non-numeric columns).
``state-dir``
    Where the node keeps its privacy accountant, its audit log and its own outputs, one
    sub-directory per run.
``max-epsilon``
    The node's own privacy limit: it refuses any request that would spend past it, whatever the
    run config says (the lower of the two applies).
``reproducible-noise``
    ``true`` derives the node's noise from the public seed (research only: no guarantee). The
    run config cannot ask for it: a node's randomness is secret unless the node says otherwise.

The handlers are the same as in simulation (:mod:`fl_client.client_app`,
:mod:`fl_client.vertical_app`); only the source of settings and rows differs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from credit_data.errors import ConfigError
from credit_data.files import load_party
from credit_data.horizontal import LenderRows
from credit_data.settings import LABEL_HOLDER, PartySource
from credit_data.split import assign_split
from credit_data.vertical import NodeRows
from deployment.run_config import COLUMNS, RUN_NAME, RUN_SETTINGS, run_settings
from federation.run_settings import RunSettings
from federation.settings import Mode
from fl_client.client_app import make_client_app
from fl_client.node_noise import node_noise, private_node_rows
from fl_client.settings import ClientSettings, client_settings
from fl_client.vertical_app import make_vertical_client_app
from privacy.randomness import NoiseSource
from privacy.settings import PrivacySettings, check_privacy


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """What a partner sets for its own node, checked."""

    party: str
    data_path: Path
    state_dir: Path
    max_epsilon: float | None = None
    id_column: str | None = None
    categorical: tuple[str, ...] = ()
    reproducible_noise: bool = False

    @classmethod
    def from_context(cls, node_config: dict[str, Any]) -> NodeConfig:
        """Read and check ``--node-config``; a missing or bad key is named."""
        def text(key: str) -> str:
            value = node_config.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"node config: '{key}' must be a non-empty string, got "
                                  f"{value!r}")
            return value

        cap = node_config.get("max-epsilon")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float)
                                or not cap > 0):
            raise ConfigError(f"node config: 'max-epsilon' must be a positive number, got "
                              f"{cap!r}")
        categorical = str(node_config.get("categorical", "") or "")
        return cls(party=text("party"), data_path=Path(text("data-path")),
                   state_dir=Path(text("state-dir")),
                   max_epsilon=None if cap is None else float(cap),
                   id_column=str(node_config["id-column"]) if node_config.get("id-column")
                   else None,
                   categorical=tuple(c.strip() for c in categorical.split(",") if c.strip()),
                   reproducible_noise=node_config.get("reproducible-noise") is True)


def node_privacy(privacy: PrivacySettings, own_cap: float | None,
                 reproducible_noise: bool = False) -> PrivacySettings:
    """Apply what the node decides itself, whatever the run config says.

    Its limit: the lower of the run's cap and the node's. Its randomness: secret unless the
    node's own config asks for reproducible noise (a coordinator must not be able to switch a
    node's noise to values derived from the public seed). The run's privacy settings are
    checked here too, as the runner checks them.

    >>> node_privacy(PrivacySettings(max_epsilon=4.0), 2.0).max_epsilon
    2.0
    >>> node_privacy(PrivacySettings(max_epsilon=1.0), 2.0).max_epsilon
    1.0
    >>> node_privacy(PrivacySettings(reproducible_noise=True), None).reproducible_noise
    False
    """
    check_privacy(privacy)
    cap = privacy.max_epsilon
    if own_cap is not None:
        cap = own_cap if privacy.max_epsilon is None else min(privacy.max_epsilon, own_cap)
    return dataclasses.replace(privacy, max_epsilon=cap, reproducible_noise=reproducible_noise)


RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def run_state_dir(state_dir: Path, run_name: str) -> Path:
    """Return the run's own directory under the node's state directory, refusing an escape.

    The run name comes from the coordinator: it must be one plain path component (letters,
    digits, ``.``, ``_``, ``-``; no ``/``, no ``..``), and the directory must stay inside
    ``state_dir``.

    >>> run_state_dir(Path("/var/node"), "2026-12-05_10-00-00_vertical")
    PosixPath('/var/node/2026-12-05_10-00-00_vertical')
    >>> run_state_dir(Path("/var/node"), "../../../escaped")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: run-name '../../../escaped' from the coordinator is not ...
    """
    if not RUN_NAME_PATTERN.fullmatch(run_name) or run_name in (".", ".."):
        raise ConfigError(f"run-name {run_name!r} from the coordinator is not a plain name "
                          "(letters, digits, '.', '_', '-'); refused")
    root = state_dir.resolve()
    path = (root / run_name).resolve()
    if path.parent != root:
        raise ConfigError(f"run-name {run_name!r} leaves the node's state directory; refused")
    return path


def _settings(context: Context) -> tuple[RunSettings, NodeConfig, ClientSettings]:
    run = run_settings(str(context.run_config[RUN_SETTINGS]))
    node = NodeConfig.from_context(dict(context.node_config))
    run_dir = run_state_dir(node.state_dir, str(context.run_config[RUN_NAME]))
    # a real node never runs the label-leakage attack (a research tool of the simulation) and
    # never misbehaves on purpose, whatever the run config asks
    client = client_settings(run, node.party, str(run_dir), privacy=node_privacy(
        run.privacy.for_party(node.party), node.max_epsilon, node.reproducible_noise))
    return run, node, client


@functools.cache
def _vertical_rows(run_text: str, node: NodeConfig, noise: NoiseSource) -> NodeRows:
    run = run_settings(run_text)
    source = PartySource(path=str(node.data_path), categorical=node.categorical,
                         id_column=node.id_column)
    table = load_party(node.party, source, run.data)
    return private_node_rows(table, run.data, run.seed, run.privacy, noise)


@functools.cache
def _lender_rows(run_text: str, columns_text: str, node: NodeConfig) -> LenderRows:
    run = run_settings(run_text)
    columns = json.loads(columns_text)
    numeric, categorical = tuple(columns["numeric"]), tuple(columns["categorical"])
    source = PartySource(path=str(node.data_path), features=numeric + categorical,
                         categorical=categorical, id_column=node.id_column)
    table = load_party(LABEL_HOLDER, source, run.data)
    assert table.labels is not None
    y = table.labels[run.data.label].to_numpy(dtype=np.float32)
    return LenderRows(node.party, table.frame, numeric, categorical, y,
                      assign_split(table.frame.index, run.seed, run.data.split))


def vertical_source(context: Context) -> tuple[ClientSettings, NodeRows]:
    """Return the node's settings and its own table, preprocessed at the node."""
    torch.set_num_threads(1)
    _, node, client = _settings(context)
    return client, _vertical_rows(str(context.run_config[RUN_SETTINGS]), node,
                                  node_noise(context, client))


def horizontal_source(context: Context) -> tuple[ClientSettings, LenderRows]:
    """Return the lender's settings and own applicants, in the columns the lenders agreed on."""
    torch.set_num_threads(1)
    _, node, client = _settings(context)
    return client, _lender_rows(str(context.run_config[RUN_SETTINGS]),
                                str(context.run_config[COLUMNS]), node)


class _ByMode(ClientApp):
    """One ClientApp for both federations: the run's ``federation.mode`` picks the handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.horizontal = make_client_app(horizontal_source)
        self.vertical = make_vertical_client_app(vertical_source)

    def __call__(self, message: Message, context: Context) -> Message:
        run = run_settings(str(context.run_config[RUN_SETTINGS]))
        app = self.vertical if run.federation.mode is Mode.vertical else self.horizontal
        return cast(Message, app(message, context))


app = _ByMode()
