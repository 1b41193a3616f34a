"""A node's secret noise source, kept sealed on its own disk, and the rows it preprocesses.

The key is drawn from the operating system's cryptographic source the first time the node
needs it. A node with a state directory keeps it in the run's directory sealed under its master
key (``noise.key.sealed``; :mod:`privacy.sealed_key`), which lives outside every run directory
(``ClientSettings.key_dir``: a deployed node's ``--state-dir``, a simulated party's
``federation.key_dir``), so a copy of the run directory alone opens nothing; the node removes
it when the run finishes (:func:`forget_key_mod`). A node without a state directory keeps it in
``context.state``, which Flower never sends. Every message of a run sees the same key: what a
mechanism draws once (label flips, a release's noisy embeddings, the noisy summary behind the
preprocessing) stays drawn once, in a resumed run too (it continues in a copy of the run's
directory and opens the same sealed key). The label flips themselves are never written: they
are drawn again from the key when needed. A key kept in ``context.state`` is keyed again by the
run's id (Flower may carry a node's state into a later run); a state directory is the run's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from credit_data.errors import ConfigError
from credit_data.settings import LABEL_HOLDER, DataSettings
from credit_data.summary import column_counts, indicator_shares, sketch_from_summaries
from credit_data.tables import PartyTable
from credit_data.vertical import NodeRows, node_rows, training_rows
from federation.run_settings import RunSettings
from fl_client.settings import ClientSettings, client_settings
from fl_client.vertical_task import flipped_labels
from privacy.accounting import party_delta
from privacy.randomness import NoiseSource
from privacy.sealed_key import KEY_BYTES, check_apart, forget, kept_key
from privacy.settings import PrivacyMechanism, PrivacySettings
from privacy.split_key import derive_split_key
from privacy.summary import noisy_summary, summary_plan

NOISE_STATE = "noise-source"
NOISE_KEY_FILE = "noise.key"
"""Where an older version kept the key in the clear; now ``noise.key.sealed`` beside it."""


def node_noise(context: Context, settings: ClientSettings) -> NoiseSource:
    """Return the node's noise source: its secret key from its state, drawn there on first use."""
    if settings.privacy.reproducible_noise:
        return NoiseSource.reproducible(settings.seed, settings.party)
    if settings.state_dir:
        if not settings.key_dir:
            raise ConfigError(f"{settings.party}: a node that keeps its run state on disk needs "
                              "a key directory outside its run directories for its master key "
                              "(federation.key_dir; a deployed node uses its --state-dir)")
        return kept_noise(Path(settings.state_dir) / settings.party / NOISE_KEY_FILE,
                          Path(settings.key_dir), settings.party)
    record = context.state.config_records.get(NOISE_STATE)
    if record is None:
        source = NoiseSource.fresh()
        context.state.config_records[NOISE_STATE] = ConfigRecord({"key": source.key})
    else:
        source = NoiseSource(bytes(record["key"]), True)  # type: ignore[arg-type]
    return source.for_run(context.run_id)


def kept_noise(path: Path, key_dir: Path, party: str = "node") -> NoiseSource:
    """Return the run's key kept sealed beside ``path``, drawn from the OS on first use.

    The run's own state directory holds it sealed under the master key in ``key_dir`` (which
    must lie outside that directory), so a resumed run (which continues in a copy of the
    directory) draws nothing twice: the same label flips, the same noisy summary. A key file of
    another length is refused; a key left in the clear by an older version is sealed.
    """
    check_apart(key_dir, path.parent.parent)
    key = kept_key(path, key_dir, party)
    assert len(key) == KEY_BYTES
    return NoiseSource(key, True)


def forget_key(settings: ClientSettings) -> bool:
    """Remove the node's key of the run in ``settings`` (it finished); True if there was one."""
    if not settings.state_dir:
        return False
    return forget(Path(settings.state_dir) / settings.party / NOISE_KEY_FILE)


def forget_keys(state_dir: Path) -> None:
    """Remove the nodes' noise keys of a simulated run that ended (kept only to resume it).

    In simulation every node's state directory lies inside the run directory, which others may
    read later: a sealed key opens nothing without the party's master key, and is removed too.
    """
    for party in state_dir.iterdir() if state_dir.is_dir() else ():
        if party.is_dir() and (any(party.glob(f"{NOISE_KEY_FILE}*"))):
            forget(party / NOISE_KEY_FILE)


def forget_key_mod(settings_of: Callable[[Context], ClientSettings],
                   finishes: Callable[[Message], bool]) -> Mod:
    """Return a mod that removes the node's key once it answered its run's last message.

    Outermost, so that every other mod has read the key first. A reply with an error or a
    refusal keeps the key (sealed): the run may be resumed and needs the same draws.
    """

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        if not finishes(msg) or reply.has_error():
            return reply
        if any("refused" in record for record in reply.content.config_records.values()):
            return reply
        forget_key(settings_of(context))
        return reply

    return mod


def summary_target(privacy: PrivacySettings, party: str) -> float | None:
    """Return the budget a party's preprocessing summary takes its share of, or None (exact fit).

    Under DP-SGD every party's columns are protected; under embedding noise a passive party's.
    """
    if privacy.mechanism is PrivacyMechanism.dpsgd:
        return privacy.target_epsilon
    if privacy.embedding_epsilon is not None and party != LABEL_HOLDER:
        return privacy.embedding_epsilon
    return None


def node_split_key(settings: ClientSettings) -> bytes:
    """Return the node's split key (:mod:`privacy.split_key`): the node's alone, not the run's.

    From the node's master key (``settings.key_dir``, outside every run directory), or from the
    seed under reproducible noise (the node's own setting in a deployment).
    """
    return derive_split_key(Path(settings.key_dir) if settings.key_dir else None,
                            settings.party, seed=settings.seed,
                            reproducible=settings.privacy.reproducible_noise)


def simulated_split_keys(run: RunSettings, parties: Iterable[str]) -> dict[str, bytes]:
    """Return the simulated parties' split keys, as each party's node derives its own.

    The simulation reads them to build what only it builds (a horizontal federation's lenders
    from one table, the references and centralized runs on the same splits).
    """
    return {party: node_split_key(client_settings(run, party, None)) for party in parties}


def private_node_rows(table: PartyTable, data: DataSettings, seed: int,
                      privacy: PrivacySettings, noise: NoiseSource,
                      split_key: bytes) -> NodeRows:
    """Preprocess a party's table at its node, its split keyed by ``split_key``.

    From its noisy summary where DP protects its columns, else fitted on its exact training rows.
    """
    target = summary_target(privacy, table.party)
    if target is None:
        return node_rows(table, data, seed, split_key)
    train = training_rows(table, data, split_key)
    frame = table.frame.loc[train]
    labels = None
    if table.labels is not None and privacy.mechanism is PrivacyMechanism.dpsgd:
        labels = table.labels[data.label].to_numpy(dtype=np.float32)[train]
        if privacy.label_epsilon is not None:  # count the flipped labels: no label privacy
            labels = flipped_labels(labels, privacy.label_epsilon, noise)  # spent twice
    delta = party_delta(delta=privacy.delta, n_rows=int(train.sum()))
    plan = summary_plan(target_epsilon=target, share=privacy.summary_share, delta=delta)
    counts = column_counts(frame, table.numeric, table.categorical, labels)
    summary = noisy_summary(counts, plan=plan, noise=noise)
    sketch = sketch_from_summaries([summary], table.numeric, table.categorical)
    rows = node_rows(table, data, seed, split_key, sketch=sketch, summary_history=plan.history,
                     summary_selection_delta=plan.selection_delta)
    return dataclasses.replace(rows, summary_shares=indicator_shares(summary, sketch))
