"""The ClientApp a partner's node runs in a real deployment (``flwr run`` on a SuperLink).

The run's settings (model, training, privacy; the same for every node) come from the run config
the coordinator submits; everything about the node itself comes from the node's own config
(``flower-supernode --node-config``), which the coordinator cannot change:

``party``
    This node's party: ``lender``, ``bureau`` or ``social`` (vertical), ``lender-<k>``
    (horizontal).
``data-path``
    The party's own CSV or Parquet file or DuckDB database, read on this machine only.
    Optional: ``data-query`` (at a DuckDB database, required: the SQL that selects the party's
    rows; :mod:`credit_data.sources`), ``id-column`` (default: the run's ``data.id_column``)
    and ``categorical`` (comma-separated non-numeric columns).
``state-dir``
    Where the node keeps its privacy accountant, its audit log and its own outputs, one
    sub-directory per run.
``max-epsilon``
    Required: the node's own privacy limit over its whole life, whatever its data file (a
    changed file keeps the spend): every run's spend is kept in the node's lifetime ledger
    (:mod:`federation.lifetime_budget`) and a reply that would take the total past it is
    refused, as is a run that would release the node's rows outside any epsilon it accounts.
    The run config's own cap applies too (the lower wins). ``"none"`` is the partner's explicit
    choice of no cap (spend recorded, nothing refused); there is no default.
``signing-key`` and ``peer-keys``
    The node's own private key (the one registered with the SuperLink) and a directory of the
    other parties' public keys (``<party>.pub``, exchanged between the partners): with both,
    the node signs its alignment channel key and refuses a peer's that is not signed
    (:class:`federation.alignment.ChannelAuth`).
``consent``
    The party's consent records (:mod:`credit_data.consent`; ``--consent``): a customer whose
    latest record does not grant the run's purpose (``credit_training``, ``credit_scoring``,
    ``fraud_check`` for a holder's list) never enters it (:mod:`fl_client.consent_gate`).
    Its hello reply tells the server its rows used; ``release-consent-counts`` (``true``) adds
    the rows held, withdrawn and without a record (:mod:`federation.consent_counts`).
``applicants-dir``
    The lender's directory of new applicants' files (scoring): a scoring run names one file in
    it (``scoring.applicants``); without it the lender scores the rows of its own data file.
``reproducible-noise``
    ``true`` derives the node's noise from the public seed (research only: no guarantee). The
    run config cannot ask for it: a node's randomness is secret unless the node says otherwise.
``lender-applications``, ``lender-training-rows``, ``max-queries``, ``max-queries-per-day``
    What the node answers the lender: the volumes the partner's agreement declares, from which
    its query caps default, or the caps outright (:meth:`NodeConfig.caps`); every path that
    answers the lender's IDs charges its one ledger per lender (:mod:`fl_client.queries`).
``release-exact-embeddings``, ``release-record-gradients``
    ``true`` lets the node send what no epsilon covers: a party's exact embeddings, a lender's
    per-record gradients (:mod:`federation.releases`); without it the node refuses such runs
    and scoring requests, capped or not, and records each opt-in it used in its ledger.
``release-monitoring``, ``periods-dir``
    ``true`` lets the node answer a monitoring request (``deploy monitor``) with its stability
    indices and bins' counts (:mod:`deployment.monitoring_node`); the directory of its later
    periods' files such a request may name.

The handlers are the same as in simulation (:mod:`fl_client.horizontal_app`,
:mod:`fl_client.vertical_app`); only the source of settings and rows differs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from credit_data.blacklists import read_list
from credit_data.consent import FRAUD_CHECK, SCORING, TRAINING
from credit_data.errors import ConfigError
from credit_data.files import load_party
from credit_data.horizontal import LenderRows
from credit_data.settings import LABEL_HOLDER, PartySource
from credit_data.split import TEST, assign_split, check_label_splits
from credit_data.tables import PartyTable
from credit_data.vertical import NodeRows
from deployment.continuation import MARKERS, Continuation
from deployment.run_config import (
    COLUMNS,
    LENDER_NAME,
    MODEL_RUN,
    RUN_NAME,
    RUN_SETTINGS,
    SCORING_TASKS,
    TASK,
    run_settings,
)
from federation.alignment import ChannelKeys
from federation.consent_counts import (
    CONSENT_KEY,
    OPT_IN_FLAG,
    OPT_IN_RELEASE,
    reply_counts,
)
from federation.grants import Grant, grant_refusal, run_purpose
from federation.lifetime_budget import (
    NOTE_CAP,
    NOTE_RESETS,
    NOTE_SPENT,
    LifetimeBudget,
    dataset_fingerprint,
    spend_figures,
)
from federation.lifetime_notes import CONTINUES
from federation.monitoring_release import MONITOR_MIN_COUNT
from federation.protocol import CONFIG, STATUS, ScoringMessage, VerticalMessage, reported_epsilon
from federation.query_ledger import NODE_KEYS, QueryCaps, check_count
from federation.releases import (
    OPT_IN_FLAGS,
    OPT_IN_KEYS,
    Release,
    opted_in,
    outside_epsilon,
    refusal,
)
from federation.run_settings import RunSettings, ScoringRows, TrackingSettings
from federation.settings import CARDINALITY_WITHDRAWN, BlacklistSettings, ListMode, Mode
from fl_client.audit_log_mod import AUDIT_NOTE
from fl_client.consent_gate import consent_decision, file_digest, log_consent
from fl_client.horizontal_app import make_client_app
from fl_client.list_lookup import holder_rows
from fl_client.node_noise import node_noise, private_node_rows
from fl_client.party_bundle import BUNDLE_DIR
from fl_client.scoring_app import make_scoring_client_app
from fl_client.scoring_task import ScoringInput
from fl_client.settings import ClientSettings, client_settings
from fl_client.vertical_app import make_vertical_client_app
from privacy.randomness import NoiseSource
from privacy.sealed_key import MASTER_KEY_FILE
from privacy.settings import PrivacySettings, check_privacy
from privacy.split_key import derive_split_key

UNCAPPED = "none"
"""``max-epsilon`` of a node whose partner chose no cap (it must say so: there is no default)."""


def _epsilon_cap(node_config: dict[str, Any]) -> float | None:
    """Return ``max-epsilon`` (None: the node's explicit ``none``); refuse anything else."""
    cap = node_config.get("max-epsilon")
    if cap == UNCAPPED:
        return None
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not cap > 0:
        raise ConfigError(f"node config: 'max-epsilon' must be a positive number or "
                          f"'{UNCAPPED}' (the node's explicit choice of no cap), got {cap!r}")
    return float(cap)


def _opted(node_config: dict[str, Any]) -> dict[str, bool]:
    """Return each opt-in key's value (false when absent); refuse one that is not a boolean."""
    opted = {key: node_config.get(key, False) for key in OPT_IN_KEYS}
    bad = [key for key, value in opted.items() if not isinstance(value, bool)]
    if bad:
        raise ConfigError(f"node config: '{bad[0]}' must be true or false, got "
                          f"{opted[bad[0]]!r}")
    return opted


def _list_mode(node_config: dict[str, Any]) -> ListMode:
    """Return a blacklist holder's ``list-mode``; refuse the withdrawn ``cardinality``."""
    mode = str(node_config.get("list-mode", "lookup"))
    if mode not in ListMode.__members__:
        raise ConfigError(f"node config: 'list-mode' must be one of "
                          f"{list(ListMode.__members__)}, got {mode!r}")
    if mode == ListMode.cardinality:
        raise ConfigError(f"node config: 'list-mode' cardinality (--list-mode): "
                          f"{CARDINALITY_WITHDRAWN}")
    return ListMode(mode)


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
    signing_key: str | None = None
    peer_keys: str | None = None
    applicants_dir: Path | None = None
    lender_applications: int | None = None  # the lender's declared applications a month
    lender_training_rows: int | None = None  # the lender's declared training table
    max_queries: int | None = None  # IDs of applications one lender may ask a month
    max_queries_per_day: int | None = None  # ... a day
    list_mode: ListMode = ListMode.lookup  # what a blacklist holder answers
    opt_in: frozenset[Release] = frozenset()  # releases outside any epsilon it lets leave
    consent: Path | None = None  # its customers' consent records (--consent)
    release_consent_counts: bool = False  # all its counts to the server (--release-consent-...)
    grant: Grant | None = None  # the purposes and lenders it serves, until when (--grant)
    query: str | None = None  # at a DuckDB database: the SQL selecting its rows (--query)
    periods_dir: Path | None = None  # its later periods' files, to monitor (--periods-dir)
    monitor_min_count: int = MONITOR_MIN_COUNT  # fewest rows a monitoring figure describes

    @classmethod
    def from_context(cls, node_config: dict[str, Any]) -> NodeConfig:
        """Read and check ``--node-config``; a missing or bad key is named."""
        def text(key: str) -> str:
            value = node_config.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"node config: '{key}' must be a non-empty string, got "
                                  f"{value!r}")
            return value

        cap = _epsilon_cap(node_config)
        counts = {key: check_count(node_config.get(key), key) for key in NODE_KEYS}
        opted = _opted(node_config)
        mode = _list_mode(node_config)
        categorical = str(node_config.get("categorical", "") or "")
        signing, peers = node_config.get("signing-key"), node_config.get("peer-keys")
        if (signing is None) != (peers is None):
            raise ConfigError("node config: 'signing-key' and 'peer-keys' go together (a node "
                              "that signs its channel key also checks its peers')")
        return cls(party=text("party"), data_path=Path(text("data-path")),
                   query=text("data-query") if "data-query" in node_config else None,
                   state_dir=Path(text("state-dir")),
                   max_epsilon=cap,
                   id_column=str(node_config["id-column"]) if node_config.get("id-column")
                   else None,
                   categorical=tuple(c.strip() for c in categorical.split(",") if c.strip()),
                   reproducible_noise=node_config.get("reproducible-noise") is True,
                   signing_key=None if signing is None else str(signing),
                   peer_keys=None if peers is None else str(peers),
                   applicants_dir=Path(str(node_config["applicants-dir"]))
                   if node_config.get("applicants-dir") else None,
                   periods_dir=Path(str(node_config["periods-dir"]))
                   if node_config.get("periods-dir") else None,
                   monitor_min_count=check_count(node_config.get("monitor-min-count"),
                                                 "monitor-min-count") or MONITOR_MIN_COUNT,
                   lender_applications=counts["lender-applications"],
                   lender_training_rows=counts["lender-training-rows"],
                   max_queries=counts["max-queries"],
                   max_queries_per_day=counts["max-queries-per-day"],
                   list_mode=mode,
                   opt_in=frozenset(release for key, release in OPT_IN_KEYS.items()
                                    if opted[key]),
                   consent=Path(str(node_config["consent"])) if node_config.get("consent")
                   else None,
                   release_consent_counts=opted[OPT_IN_FLAG.removeprefix("--")] is True,
                   grant=Grant.parse(str(node_config["grant"]),
                                     str(node_config.get("grant-purposes", "")),
                                     str(node_config.get("grant-lenders", "")),
                                     str(node_config.get("grant-expires", "")))
                   if node_config.get("grant") else None)

    def caps(self, run: BlacklistSettings) -> QueryCaps:
        """Return what this node answers one lender: its own caps, lowered by the run's.

        Its flags set them (:meth:`~federation.query_ledger.QueryCaps.of_node`: by default a
        small multiple of the lender's declared volume; nothing declared, nothing answered);
        the run config (the coordinator's, the lender's wish) may lower a cap, never raise it.

        >>> node = NodeConfig("bureau", Path("b.csv"), Path("s"), lender_applications=5_000)
        >>> caps = node.caps(BlacklistSettings())
        >>> caps.per_month, caps.per_day, caps.month_flag
        (10000, 1000, '--lender-applications')
        >>> node.caps(BlacklistSettings(max_queries=500)).per_month
        500
        """
        return QueryCaps.of_node(applications=self.lender_applications,
                                 training_rows=self.lender_training_rows,
                                 per_month=self.max_queries,
                                 per_day=self.max_queries_per_day).lowered(run.max_queries)


def holder_settings(run: BlacklistSettings, node: NodeConfig) -> BlacklistSettings:
    """Return a holder node's own lookup settings: its mode, whatever the run asks.

    >>> node = NodeConfig("consortium", Path("l.csv"), Path("s"))
    >>> holder_settings(BlacklistSettings(), node).mode
    <ListMode.lookup: 'lookup'>
    """
    return dataclasses.replace(run, mode=node.list_mode)


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
PSI_CACHE = "psi-cache"
"""Under the node's state directory: its blinded ID sets and PSI keys (SetupCache)."""
RESERVED_NAMES = frozenset({"budget", "node-config.toml", "runtime-api.secret", PSI_CACHE,
                            MASTER_KEY_FILE})
"""What the node keeps in its state directory besides its runs."""


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
    if run_name in RESERVED_NAMES:
        raise ConfigError(f"run-name {run_name!r} from the coordinator names the node's own "
                          "files; refused")
    root = state_dir.resolve()
    path = (root / run_name).resolve()
    if path.parent != root:
        raise ConfigError(f"run-name {run_name!r} leaves the node's state directory; refused")
    return path


def _budget(node: NodeConfig) -> LifetimeBudget:
    return LifetimeBudget.of(node.state_dir, node.max_epsilon, data_path=node.data_path)


LIFETIME_RUN = CONTINUES  # the regulator's report reads it too (lifetime_notes)
"""In a resumed run's directory: the name of the run it continues (its first run), under which
the node's lifetime ledger keeps the spend: a resumed run's figures include the earlier ones."""
RESUME_SKIPS = ("audit.jsonl", "audit.key")
"""Not carried into a resumed run: it keeps an audit log (and key) of its own."""


RUN_RECORD = "run.json"
"""In each run's directory: the Flower run it belongs to, a digest of its settings and the
fingerprint of the data file, checked by every later message and by a resume."""


def settings_digest(run: RunSettings) -> str:
    """SHA-256 of the run's settings but those a resume may change (resume, stop_after, verbose).

    ``tracking`` is left out too: where a run's record is logged changes nothing at a node.

    >>> from federation.run_settings import TrackingBackend
    >>> settings_digest(RunSettings()) == settings_digest(RunSettings(resume="x", verbose=False,
    ...     tracking=TrackingSettings(TrackingBackend.mlflow)))
    True
    """
    same = dataclasses.replace(run, resume=None, verbose=False, tracking=TrackingSettings(),
                               federation=dataclasses.replace(run.federation, stop_after=None))
    text = json.dumps(dataclasses.asdict(same), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def resume_state(node: NodeConfig, run: RunSettings, name: str,
                 flower_run: int | None = None) -> Path:
    """Return the run's directory, made and recorded at its first message.

    A run name belongs to one Flower run: a message of another run under the same name is
    refused. A resumed run's directory starts as a copy of the earlier run's: only the earlier
    run's name is taken from the coordinator's ``resume`` path, checked like any run name; its
    settings (but ``resume``, ``stop_after`` and ``verbose``) and data file must be the earlier
    run's, and an earlier run is continued once (no forks) by a run that spends at this node
    (:mod:`deployment.continuation`: a resume refused before it spent leaves the run resumable).
    """
    run_dir = run_state_dir(node.state_dir, name)
    mine = {"flower_run": flower_run, "settings": settings_digest(run),
            "data": dataset_fingerprint(node.data_path)}
    record = run_dir / RUN_RECORD
    if run_dir.exists():
        kept = json.loads(record.read_text()) if record.is_file() else {}
        if flower_run is not None and kept.get("flower_run") not in (None, flower_run):
            raise ConfigError(f"run-name {name!r} belongs to another run at this node (Flower "
                              f"run {kept['flower_run']}); a run name is used once")
        if run.resume is not None:
            continuation(node, run, name).check()
        return run_dir
    partial = run_dir.with_name(f".{run_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    if run.resume is None:
        partial.mkdir(parents=True)
    else:
        earlier = run_state_dir(node.state_dir, Path(run.resume).name)
        earlier_record = earlier / RUN_RECORD
        if not earlier_record.is_file():
            raise ConfigError(f"resume={run.resume}: this node kept no state of run "
                              f"'{earlier.name}'; it cannot continue it")
        then = json.loads(earlier_record.read_text())
        for what, key in (("settings differ", "settings"), ("data file differs", "data")):
            if then.get(key) != mine[key]:
                raise ConfigError(f"resume={run.resume}: the {what} from run "
                                  f"'{earlier.name}''s at this node; a resumed run keeps them")
        continuation(node, run, name).claim()
        shutil.copytree(earlier, partial,
                        ignore=shutil.ignore_patterns(*RESUME_SKIPS, *MARKERS, RUN_RECORD))
        first = earlier / LIFETIME_RUN
        (partial / LIFETIME_RUN).write_text(first.read_text() if first.is_file()
                                            else earlier.name)
    (partial / RUN_RECORD).write_text(json.dumps(mine))
    partial.rename(run_dir)
    return run_dir


def continuation(node: NodeConfig, run: RunSettings, name: str) -> Continuation:
    """Return the claim of resumed run ``name`` on the node's run it continues."""
    assert run.resume is not None
    return Continuation(run_state_dir(node.state_dir, Path(run.resume).name),
                        run_state_dir(node.state_dir, name), name, run.resume)


def lifetime_run(node: NodeConfig, run: RunSettings, name: str,
                 flower_run: int | None = None) -> str:
    """Return the run under which the lifetime ledger counts this run's spend (its first)."""
    kept = resume_state(node, run, name, flower_run) / LIFETIME_RUN
    return kept.read_text().strip() if kept.is_file() else name


def _settings(context: Context) -> tuple[RunSettings, NodeConfig, ClientSettings]:
    run = run_settings(str(context.run_config[RUN_SETTINGS]))
    node = NodeConfig.from_context(dict(context.node_config))
    name = str(context.run_config[RUN_NAME])
    run_dir = resume_state(node, run, name, context.run_id)
    spender = lifetime_run(node, run, name, context.run_id)
    # a real node never runs the label-leakage attack (a research tool of the simulation) and
    # never misbehaves on purpose, whatever the run config asks; its cap for this run is what
    # its lifetime budget has left
    keys = (ChannelKeys(node.signing_key, node.peer_keys, name)
            if node.signing_key is not None and node.peer_keys is not None else None)
    client = client_settings(run, node.party, str(run_dir), privacy=node_privacy(
        run.privacy.for_party(node.party), _budget(node).left(spender), node.reproducible_noise),
        channel_keys=keys, psi_cache=str(node.state_dir / PSI_CACHE),  # never the run's path
        key_dir=str(node.state_dir))  # its master key, outside every run directory
    # what it answers the lender, in one ledger kept for good; what it lets leave outside
    # any epsilon: the node's own flags
    client = dataclasses.replace(client, queries=node.caps(run.blacklists),
                                 query_ledger=str(node.state_dir), opt_in=node.opt_in)
    if node.party != LABEL_HOLDER:  # a holder's mode is its own
        client = dataclasses.replace(client, blacklists=holder_settings(run.blacklists, node))
    return run, node, client


def training_refusal(run: RunSettings, node: NodeConfig) -> tuple[str | None, list[str]]:
    """Say why the node refuses a training run (None: it takes part), and what it opts into.

    The decision is :func:`federation.releases.refusal`'s, the one the scoring check makes:
    a release outside any epsilon leaves only under the node's own opt-in flag, and a capped
    node refuses a run with no DP of its own or with central DP.

    >>> from federation.settings import FederationSettings
    >>> from privacy.settings import PrivacyMechanism
    >>> preset = RunSettings(privacy=PrivacySettings(mechanism=PrivacyMechanism.dpsgd,
    ...     label_epsilon=3.0), federation=FederationSettings(mode=Mode.vertical))
    >>> node = NodeConfig("bureau", Path("b.csv"), Path("s"), max_epsilon=3.0)
    >>> training_refusal(preset, node)[0].endswith("only with its own "
    ...                                             "--release-exact-embeddings")
    True
    >>> training_refusal(preset, dataclasses.replace(
    ...     node, opt_in=frozenset({Release.exact_embeddings})))
    (None, ['exact_embeddings'])
    """
    outside = outside_epsilon(run.privacy.for_party(node.party), node.party,
                              run.federation.mode, holders=run.blacklists.holders)
    why = refusal(outside, capped=node.max_epsilon is not None, opted=node.opt_in)
    return why, opted_in(outside)


def _refused(reply: Message) -> bool:
    """Whether a reply is a refusal (it carries nothing)."""
    return any("refused" in record for record in reply.content.config_records.values())


def released_outside(content: RecordDict) -> list[str]:
    """Return the opt-in releases a scoring reply says it carries (``info.outside_epsilon``)."""
    record = content.config_records.get(CONFIG)
    if record is None or "info" not in record:
        return []
    return [str(r) for r in json.loads(str(record["info"])).get("outside_epsilon", [])]


def _refusal(msg: Message, party: str, reason: str) -> Message:
    """Return a reply that carries nothing but the refusal (both federations read it)."""
    return Message(RecordDict({STATUS: ConfigRecord({"party": party, "refused": reason}),
                               CONFIG: ConfigRecord({"refused": reason})}), reply_to=msg)


def grant_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Refuse every message of a run outside the node's grant (:mod:`federation.grants`)."""
    node = NodeConfig.from_context(dict(context.node_config))
    if node.grant is not None:
        run = run_settings(str(context.run_config[RUN_SETTINGS]))
        purpose = run_purpose(str(context.run_config.get(TASK, "train")),
                              node.party in run.blacklists.holders)
        why = grant_refusal(node.grant, party=node.party, purpose=purpose,
                            lender=_lender(context), now=datetime.now(UTC))
        if why is not None:
            return _refusal(msg, node.party, why)
    return call_next(msg, context)


def lifetime_budget_mod(msg: Message, context: Context,
                        call_next: ClientAppCallable) -> Message:
    """Spend the node's lifetime budget: refuse before and after the handler, record after.

    Before: the node refuses a training run that would release its rows outside any epsilon
    without its own opt-in, and, capped, one it cannot account at all
    (:func:`training_refusal`), and any message once its budget is spent. After: the releases
    it let leave under its opt-in flags are recorded in the ledger (once per run), and the
    reply's epsilon figures added to it, or, if they would take the total past the cap, the
    reply is replaced by a refusal (its values never leave the node).
    """
    run = run_settings(str(context.run_config[RUN_SETTINGS]))
    node = NodeConfig.from_context(dict(context.node_config))
    name = lifetime_run(node, run, str(context.run_config[RUN_NAME]), context.run_id)
    budget, cap = _budget(node), node.max_epsilon
    # a monitoring run's period is scored as any batch scoring (deployment/monitoring_node.py)
    scoring = str(context.run_config.get(TASK, "train")) in (*SCORING_TASKS, "monitor")
    why, opted = (None, []) if scoring else training_refusal(run, node)  # scoring: the
    if why is not None:  # handlers decide, with the bundle (the same function)
        return _refusal(msg, node.party, why)
    if cap is not None:
        left = budget.left(name)
        if left is not None and left <= 1e-9:
            return _refusal(msg, node.party, (
                f"{node.party}: this node's lifetime privacy budget is spent "
                f"(epsilon {budget.spent(besides=name):.3f} of its max-epsilon {cap:g}; "
                f"ledger {budget.path}); only the node's operator can reset it"))
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    if cap is not None:
        for record in (reply.content.config_records.get(CONFIG),
                       reply.content.config_records.get(STATUS)):
            if record is not None and "refused" in record:
                record["refused"] = (f"{record['refused']!s} (this node's lifetime budget: "
                                     f"epsilon {budget.spent(besides=name):.3f} of its "
                                     f"max-epsilon {cap:g} spent by earlier runs)")
    opted = sorted(set(opted if reply.content.array_records else [])  # values left: record
                   | set(released_outside(reply.content)))  # what its flags let out, once
    if opted and not _refused(reply):
        budget.record_opt_in(name, opted, [OPT_IN_FLAGS[Release(r)] for r in opted])
    figures = spend_figures(reported_epsilon(reply.content))
    if figures:  # a resumed run's spend makes its claim on the run it continues binding
        recorded, total = (budget.check_and_record(name, figures) if run.resume is None else
                           continuation(node, run, str(context.run_config[RUN_NAME]))
                           .record_spend(budget, name, figures))
        if not recorded:
            return _refusal(msg, node.party, (
                f"{node.party}: this reply would take the node's lifetime epsilon "
                f"to {total:.3f}, past its max-epsilon {cap:g}; it was not sent"))
    return reply


def ledger_note_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Note the node's lifetime budget on its audit line, after every other mod and handler.

    The epsilon its ledger holds as spent since its last reset (every run's, this reply's
    included), its cap and how many resets its ledger holds
    (:data:`federation.lifetime_budget.NOTE_SPENT`, ``NOTE_CAP``, ``NOTE_RESETS``): the
    node's own note (:data:`fl_client.audit_log_mod.AUDIT_NOTE`), which never leaves it, from which
    ``credit-fl audit report`` sets each run's spend against the lifetime budget.
    """
    reply = call_next(msg, context)
    node = NodeConfig.from_context(dict(context.node_config))
    note = context.state.config_records.get(AUDIT_NOTE) or ConfigRecord()
    note[NOTE_SPENT], note[NOTE_RESETS] = _budget(node).standing()
    note[NOTE_CAP] = UNCAPPED if node.max_epsilon is None else float(node.max_epsilon)
    context.state.config_records[AUDIT_NOTE] = note
    return reply


@functools.cache
def _holder_list(run_text: str, node: NodeConfig) -> tuple[str, ...]:
    run = run_settings(run_text)
    return read_list(node.data_path, node.id_column or run.data.id_column, node.party).ids


def _consent(node: NodeConfig, run: RunSettings, table: PartyTable, purpose: str,
             lender: str) -> tuple[PartyTable, dict[str, Any] | None]:
    return consent_decision(table, None if node.consent is None else str(node.consent),
                            purpose, node.id_column or run.data.id_column, lender)


def _lender(context: Context) -> str:
    """Return the lender the run serves, by the name grants and consent records use."""
    return str(context.run_config.get(LENDER_NAME, LABEL_HOLDER))


@functools.cache
def _vertical_rows(run_text: str, node: NodeConfig, noise: NoiseSource, consent: str = "",
                   lender: str = LABEL_HOLDER) -> tuple[NodeRows, dict[str, Any] | None]:
    """Return the node's rows of a training run and its consent counts.

    ``consent`` is the consent file's digest: a changed file is read again at the next run;
    ``lender``: the lender the run serves (records naming another lender do not count).
    """
    run = run_settings(run_text)
    if node.party in run.blacklists.holders:  # a holder's node holds its list only
        ids = list(_holder_list(run_text, node))
        listed, counts = _consent(node, run, PartyTable(node.party, pd.DataFrame(
            index=pd.Index(ids, dtype=object)), (), (), str(node.data_path)), FRAUD_CHECK,
            lender)
        return holder_rows(node.party, [str(i) for i in listed.frame.index]), counts
    source = PartySource(path=str(node.data_path), categorical=node.categorical,
                         id_column=node.id_column, query=node.query)
    table, counts = _consent(node, run, load_party(node.party, source, run.data), TRAINING,
                             lender)
    return private_node_rows(table, run.data, run.seed, run.privacy, noise,
                             _split_key(run, node)), counts


def _split_key(run: RunSettings, node: NodeConfig) -> bytes:
    """Return the node's own split key: its master key's, whatever seed the run config sets.

    From the seed only under the node's own ``--reproducible-noise`` (:mod:`privacy.split_key`).
    """
    return derive_split_key(node.state_dir, node.party, seed=run.seed,
                            reproducible=node.reproducible_noise)


@functools.cache
def _lender_rows(run_text: str, columns_text: str, node: NodeConfig) -> LenderRows:
    run = run_settings(run_text)
    columns = json.loads(columns_text)
    numeric, categorical = tuple(columns["numeric"]), tuple(columns["categorical"])
    source = PartySource(path=str(node.data_path), features=numeric + categorical,
                         categorical=categorical, id_column=node.id_column, query=node.query)
    table = load_party(LABEL_HOLDER, source, run.data)
    assert table.labels is not None
    y = table.labels[run.data.label].to_numpy(dtype=np.float32)
    split = assign_split(table.frame.index, _split_key(run, node), run.data.split)
    check_label_splits(y, split, table.source, run.data.label)
    return LenderRows(node.party, table.frame, numeric, categorical, y, split)


def _training_rows(context: Context
                   ) -> tuple[ClientSettings, NodeConfig, NodeRows, dict[str, Any] | None]:
    torch.set_num_threads(1)
    _, node, client = _settings(context)
    rows, counts = _vertical_rows(str(context.run_config[RUN_SETTINGS]), node,
                                  node_noise(context, client),
                                  "" if node.consent is None else file_digest(node.consent),
                                  _lender(context))
    return client, node, rows, counts


def vertical_source(context: Context) -> tuple[ClientSettings, NodeRows]:
    """Return the node's settings and its own table, preprocessed at the node."""
    client, _, rows, counts = _training_rows(context)
    if counts is not None:
        log_consent(client, counts)
    return client, rows


def consent_counts_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Send the node's consent counts with its hello reply (:mod:`federation.consent_counts`).

    A vertical training run's (``credit_training``) or a batch scoring's (``credit_scoring``;
    a scoring service's requests are counted in the node's audit log only). What the run tells
    already (the rows it uses: its set size); the rows held, withdrawn and without a record
    only under the node's own ``--release-consent-counts``, recorded in its lifetime ledger
    once per run. A node without consent records, or a holder, sends none.
    """
    reply = call_next(msg, context)
    kind = msg.metadata.message_type
    if (kind not in (str(VerticalMessage.HELLO), str(ScoringMessage.HELLO))
            or reply.has_error() or _refused(reply)):
        return reply
    run = run_settings(str(context.run_config[RUN_SETTINGS]))
    node = NodeConfig.from_context(dict(context.node_config))
    if (node.consent is None or node.party in run.blacklists.holders
            or run.federation.mode is not Mode.vertical):
        return reply
    if kind == str(VerticalMessage.HELLO):
        counts = _training_rows(context)[3]
    elif str(context.run_config.get(TASK, "")) == "score":
        counts = _consent(node, run, _scoring_table(str(context.run_config[RUN_SETTINGS]),
                                                    node), SCORING, _lender(context))[1]
    else:
        return reply
    if counts is None:
        return reply
    if CONFIG not in reply.content.config_records:
        reply.content[CONFIG] = ConfigRecord()
    reply.content.config_records[CONFIG][CONSENT_KEY] = reply_counts(
        counts, release_all=node.release_consent_counts)
    if node.release_consent_counts:
        _budget(node).record_opt_in(
            lifetime_run(node, run, str(context.run_config[RUN_NAME]), context.run_id),
            [OPT_IN_RELEASE], [OPT_IN_FLAG])
    return reply


def horizontal_source(context: Context) -> tuple[ClientSettings, LenderRows]:
    """Return the lender's settings and own applicants, in the columns the lenders agreed on."""
    torch.set_num_threads(1)
    _, node, client = _settings(context)
    if node.consent is not None:  # a lender's own rows train its local model: no gate there yet
        raise ConfigError(f"{node.party}: --consent is applied by vertical federations' nodes; "
                          "a horizontal lender cuts its data file itself")
    return client, _lender_rows(str(context.run_config[RUN_SETTINGS]),
                                str(context.run_config[COLUMNS]), node)


def _scoring_table(run_text: str, node: NodeConfig, columns_text: str = "{}") -> PartyTable:
    """Return the node's own rows to score: its data file, or the lender's named applicants.

    A horizontal lender reads the columns the lenders agreed on (``columns_text``), as in
    training, and scores all its applicants or its test split.
    """
    run = run_settings(run_text)
    return _rows_to_score(run_text, node, columns_text, run.scoring.applicants, run.scoring.rows)


def _request_table(run_text: str, node: NodeConfig, request: dict[str, Any]) -> PartyTable:
    """Return the applicants of one scoring service request.

    ``{"applicants": <file>}``: a file in the node's ``--applicants-dir``; ``{"rows": "test"}``
    (or ``all``): its own data file's test split (or all of it).
    """
    named, rows = request.get("applicants"), request.get("rows", "all")
    if named is not None and not isinstance(named, str):
        raise ConfigError(f"scoring request {request.get('id')}: 'applicants' names a file, "
                          f"got {named!r}")
    try:
        which = ScoringRows(rows)
    except ValueError as exc:
        raise ConfigError(f"scoring request {request.get('id')}: 'rows' must be one of "
                          f"{[r.value for r in ScoringRows]}, got {rows!r}") from exc
    return _rows_to_score(run_text, node, "{}", named or None, which)


def applicants_file(directory: Path, named: str) -> Path:
    """Return the file ``scoring.applicants`` names: one plain file name in ``directory``.

    >>> applicants_file(Path("/data/applicants"), "../data.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    credit_data.errors.ConfigError: scoring.applicants='../data.csv': one plain file name in ...
    """
    if not RUN_NAME_PATTERN.fullmatch(named) or ".." in named:
        raise ConfigError(f"scoring.applicants={named!r}: one plain file name in the lender "
                          "node's --applicants-dir (letters, digits, '.', '_', '-'), no path; "
                          "refused")
    return directory / named


def _rows_to_score(run_text: str, node: NodeConfig, columns_text: str, named: str | None,
                   rows: ScoringRows) -> PartyTable:
    """Read the rows to score, once per version of the file (a warm worker keeps them)."""
    run = run_settings(run_text)
    path = node.data_path
    lender = node.party == LABEL_HOLDER or run.federation.mode is Mode.horizontal
    if lender and named:
        if node.applicants_dir is None:
            raise ConfigError(f"scoring.applicants={named}: this lender's node has no "
                              "--applicants-dir to read new applicants from")
        path = applicants_file(node.applicants_dir, named)
    try:
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
    except OSError:  # load_party names the missing file
        version = (0, 0)
    return _read_rows(run_text, node, columns_text, str(path), named is not None, rows,
                      version)


@functools.lru_cache(maxsize=8)
def _read_rows(run_text: str, node: NodeConfig, columns_text: str, path: str, named: bool,
               rows: ScoringRows, version: tuple[int, int]) -> PartyTable:
    """Read ``path`` (``version``: its mtime and size, so that a changed file is read again)."""
    run = run_settings(run_text)
    lender = node.party == LABEL_HOLDER or run.federation.mode is Mode.horizontal
    columns = json.loads(columns_text)
    agreed = tuple(columns.get("numeric", [])) + tuple(columns.get("categorical", []))
    source = PartySource(path=path, features=agreed or None,
                         categorical=tuple(columns["categorical"]) if agreed
                         else node.categorical, id_column=node.id_column,
                         named_by=("scoring.applicants, in the node's --applicants-dir" if named
                                   else "the node's --data"), query=None if named else node.query)
    table = load_party(node.party, source, run.data, labels=False)
    if not lender or named or rows is ScoringRows.all:
        return table
    return table.rows(assign_split(table.frame.index, _split_key(run, node),
                                   run.data.split) == TEST)


def scoring_source(context: Context) -> tuple[ClientSettings, ScoringInput]:
    """Return the node's settings, its bundle of the model run and its own rows to score.

    The bundle is the one the node wrote in the training run the coordinator names (a run
    name, checked as any); the node keeps its blinded ID sets under ``<state-dir>/psi-cache``.
    """
    torch.set_num_threads(1)
    run, node, client = _settings(context)
    if node.party in run.blacklists.holders:
        ids = _holder_list(str(context.run_config[RUN_SETTINGS]), node)
        return client, ScoringInput(None, _gated(client, node, run, PartyTable(
            node.party, pd.DataFrame(index=pd.Index(ids)), (), (), str(node.data_path)),
            FRAUD_CHECK, _lender(context)))
    model_run = run_state_dir(node.state_dir, str(context.run_config[MODEL_RUN]))
    columns = (str(context.run_config[COLUMNS]) if run.federation.mode is Mode.horizontal
               else "{}")
    run_text = str(context.run_config[RUN_SETTINGS])
    serving = (str(context.run_config.get(TASK, "")) == "serve" and node.party == LABEL_HOLDER)
    lender = _lender(context)
    table = _gated(client, node, run, _scoring_table(run_text, node, columns), SCORING, lender)
    return client, ScoringInput(
        model_run / node.party / BUNDLE_DIR, table,
        (lambda request: _gated(client, node, run, _request_table(run_text, node, request),
                                SCORING, lender)) if serving else None)


def _gated(client: ClientSettings, node: NodeConfig, run: RunSettings, table: PartyTable,
           purpose: str, lender: str) -> PartyTable:
    """Cut ``table`` to the customers consenting to ``purpose``; log the counts once."""
    kept, counts = _consent(node, run, table, purpose, lender)
    if counts is not None:
        log_consent(client, counts)
    return kept



class _ByMode(ClientApp):
    """One ClientApp for every task: training (vertical or horizontal) or scoring."""

    def __init__(self) -> None:
        super().__init__()
        self.horizontal = make_client_app(horizontal_source, (
            ledger_note_mod, grant_mod, lifetime_budget_mod))
        self.vertical = make_vertical_client_app(
            vertical_source, (ledger_note_mod, grant_mod, lifetime_budget_mod, consent_counts_mod))
        self.scoring = make_scoring_client_app(
            scoring_source, (ledger_note_mod, grant_mod, lifetime_budget_mod, consent_counts_mod))
        self.monitoring: ClientApp | None = None  # built at its first request

    def __call__(self, message: Message, context: Context) -> Message:
        if str(context.run_config.get(TASK, "")) == "monitor":  # its own budget and opt-in
            if self.monitoring is None:
                from deployment.monitoring_node import monitoring_app  # builds on this module

                self.monitoring = monitoring_app(ledger_note_mod, grant_mod)
            return cast(Message, self.monitoring(message, context))
        run = run_settings(str(context.run_config[RUN_SETTINGS]))
        if str(context.run_config.get(TASK, "train")) in SCORING_TASKS:
            if run.resume is not None:  # it would count this request under an earlier one's
                party = str(context.node_config.get("party", "node"))
                return _refusal(message, party, f"{party}: a scoring request is not resumed "
                                "(resume is set): each request is a run of its own; refused")
            return cast(Message, self.scoring(message, context))
        app = self.vertical if run.federation.mode is Mode.vertical else self.horizontal
        return cast(Message, app(message, context))


app = _ByMode()
