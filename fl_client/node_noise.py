"""A node's secret noise source, kept on its own disk, and the rows it preprocesses.

The key is drawn from the operating system's cryptographic source the first time the node
needs it and kept in the run's state directory on the node's disk (``noise.key``, mode 0600;
a node without one keeps it in ``context.state``, which Flower never sends), so
every message of a run sees the same key: what a mechanism draws once (label flips, a
release's noisy embeddings, the noisy summary behind the preprocessing) stays drawn once, in a
resumed run too. A key kept in ``context.state`` is keyed again by the run's id (Flower may
carry a node's state into a later run); a state directory is the run's own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context

from credit_data.errors import PrivacyLedgerError
from credit_data.settings import LABEL_HOLDER, DataSettings
from credit_data.summary import column_counts, sketch_from_summaries
from credit_data.tables import PartyTable
from credit_data.vertical import NodeRows, node_rows, training_rows
from fl_client.settings import ClientSettings
from fl_client.vertical_task import flipped_labels
from privacy.accounting import party_delta
from privacy.randomness import NoiseSource
from privacy.settings import PrivacyMechanism, PrivacySettings
from privacy.summary import noisy_summary, summary_plan

NOISE_STATE = "noise-source"
NOISE_KEY_FILE = "noise.key"
KEY_BYTES = 32


def node_noise(context: Context, settings: ClientSettings) -> NoiseSource:
    """Return the node's noise source: its secret key from its state, drawn there on first use."""
    if settings.privacy.reproducible_noise:
        return NoiseSource.reproducible(settings.seed, settings.party)
    if settings.state_dir:
        return kept_noise(Path(settings.state_dir) / settings.party / NOISE_KEY_FILE)
    record = context.state.config_records.get(NOISE_STATE)
    if record is None:
        source = NoiseSource.fresh()
        context.state.config_records[NOISE_STATE] = ConfigRecord({"key": source.key})
    else:
        source = NoiseSource(bytes(record["key"]), True)  # type: ignore[arg-type]
    return source.for_run(context.run_id)


def kept_noise(path: Path) -> NoiseSource:
    """Return the run's key kept at ``path`` (mode 0600), drawn from the OS on first use.

    The run's own state directory holds it, so a resumed run (which continues in a copy of
    that directory) draws nothing twice: the same label flips, the same noisy summary. The key
    is written whole to a file of its own and then linked into place, so no reader ever sees a
    partial key; a key file of another length is refused.
    """
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=".noise-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(NoiseSource.fresh().key)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(name, path)  # atomic; fails if another worker was first
            except FileExistsError:
                pass
        finally:
            os.unlink(name)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise PrivacyLedgerError(f"{path}: a noise key of {len(key)} bytes, not {KEY_BYTES}; "
                                 "the node refuses to draw noise from it")
    return NoiseSource(key, True)


def forget_keys(state_dir: Path) -> None:
    """Remove the nodes' noise keys of a simulated run that ended (kept only to resume it).

    In simulation every node's state directory lies inside the run directory, which others may
    read later; a key left there would let them rebuild the run's label flips and noise.
    """
    for path in state_dir.glob(f"*/{NOISE_KEY_FILE}"):
        path.unlink(missing_ok=True)


def summary_target(privacy: PrivacySettings, party: str) -> float | None:
    """Return the budget a party's preprocessing summary takes its share of, or None (exact fit).

    Under DP-SGD every party's columns are protected; under embedding noise a passive party's.
    """
    if privacy.mechanism is PrivacyMechanism.dpsgd:
        return privacy.target_epsilon
    if privacy.embedding_epsilon is not None and party != LABEL_HOLDER:
        return privacy.embedding_epsilon
    return None


def private_node_rows(table: PartyTable, data: DataSettings, seed: int,
                      privacy: PrivacySettings, noise: NoiseSource) -> NodeRows:
    """Preprocess a party's table at its node.

    From its noisy summary where DP protects its columns, else fitted on its exact training rows.
    """
    target = summary_target(privacy, table.party)
    if target is None:
        return node_rows(table, data, seed)
    train = training_rows(table, data, seed)
    frame = table.frame.loc[train]
    labels = None
    if table.labels is not None and privacy.mechanism is PrivacyMechanism.dpsgd:
        labels = table.labels[data.label].to_numpy(dtype=np.float32)[train]
        if privacy.label_epsilon is not None:  # count the flipped labels: no label privacy
            labels = flipped_labels(labels, privacy.label_epsilon, noise)  # spent twice
    delta = party_delta(privacy.delta, int(train.sum()))
    plan = summary_plan(target, privacy.summary_share, delta)
    counts = column_counts(frame, table.numeric, table.categorical, labels)
    summary = noisy_summary(counts, plan, noise)
    sketch = sketch_from_summaries([summary], table.numeric, table.categorical)
    return node_rows(table, data, seed, sketch=sketch, summary_history=plan.history,
                     summary_selection_delta=plan.selection_delta)
