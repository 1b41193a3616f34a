"""What each simulated node is handed through the engine: its settings and its own rows.

A simulated run's ServerApp and ClientApps are the deployed ones; what differs is where a node's
rows come from. A deployed node reads its own files (``deployment.client_app``); a simulated
one calls the source the runner (``credit_fl.vertical``, ``credit_fl.horizontal``,
``credit_fl.batch_scoring``) built: :class:`VerticalSimulationSource`, :class:`SimulationSource` (a
horizontal lender) and :class:`ScoringSimulationSource`. They live here, below the runners, so
that a node never calls back into ``credit_fl`` or the command line through the engine.

Every Ray worker imports this module with the ClientApp it runs, so it imports only what a
node needs: not the runners, their plots or their metrics (scikit-learn alone is about 1.5 s
of CPU in each worker, before its first message).
"""

from __future__ import annotations

import hashlib
import logging
import time
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
import torch
from flwr.app import Context

from credit_data.blacklists import holder_lists
from credit_data.consent import FRAUD_CHECK, SCORING, TRAINING
from credit_data.errors import ConfigError, DataError
from credit_data.files import load_party
from credit_data.horizontal import LenderRows, horizontal_rows
from credit_data.loading import load_population
from credit_data.memory import release_freed_memory
from credit_data.partition import lender_names
from credit_data.settings import LABEL_HOLDER, PARTIES, DataSettings, PartySource, Source
from credit_data.split import TEST, assign_split
from credit_data.tables import PartyTable, Population
from credit_data.vertical import NodeRows
from federation.run_settings import RunSettings, ScoringRows
from federation.settings import Mode
from fl_client.consent_gate import file_digest, gate_ids, gate_table
from fl_client.list_lookup import holder_rows
from fl_client.node_noise import node_noise, node_split_key, private_node_rows, simulated_split_keys
from fl_client.scoring_task import ScoringInput
from fl_client.settings import ClientSettings
from privacy.randomness import NoiseSource

T = TypeVar("T")

_CACHE: dict[str, Any] = {}


def quiet_worker() -> None:
    """Keep Flower's notices in a simulation worker off the console; its errors still show.

    Every run ended with "Manually terminating ClientAppActor" from each worker.
    """
    logging.getLogger("flwr").setLevel(logging.ERROR)


def once_per_worker(key: str, build: Callable[[], T]) -> T:
    """Build a node's data once per simulation worker process and keep it for later messages.

    Simulation sources never carry the rows, only a recipe (settings and seed) or a reference
    into Ray's object store: Flower's engine pickles the ClientApp with every message, so rows
    held by the source would travel with each one. Entries of an earlier run (another key
    prefix) are dropped.
    """
    if key not in _CACHE:
        run = key.split("|", 1)[0]
        for old in [k for k in _CACHE if k.split("|", 1)[0] != run]:
            del _CACHE[old]
        _CACHE[key] = build()
    return cast(T, _CACHE[key])


def training_parties(settings: RunSettings, population: Population) -> tuple[str, ...]:
    """Return the parties whose columns the model sees, in a fixed order."""
    named = settings.federation.parties
    for party in named:
        if party not in PARTIES:
            raise ConfigError(f"federation.parties: unknown party '{party}'; "
                              f"expected some of {PARTIES}")
    if LABEL_HOLDER not in named:
        raise ConfigError(f"federation.parties must include '{LABEL_HOLDER}', which holds labels")
    if settings.federation.mode is Mode.local:
        return (LABEL_HOLDER,)
    return tuple(p for p in PARTIES if p in named and p in population.tables)


def lender_rows(settings: RunSettings, population: Population | None = None
                ) -> tuple[Population, tuple[str, ...], dict[str, LenderRows]]:
    """Return the population, the parties whose columns lenders hold, and each lender's rows.

    ``population``: rows already loaded (DataFrames given to :func:`credit_fl.train`).
    """
    if population is None:
        population = load_population(settings.data, settings.seed)
    parties = training_parties(settings, population)
    names = lender_names(settings.partition.n_lenders)  # each lender splits with its own key
    rows = horizontal_rows(population, parties, settings.data, settings.partition, settings.seed,
                           simulated_split_keys(settings, names))
    return population, parties, rows


def _lender_rows(population: Population, settings: RunSettings) -> Population:
    """Return the applicants to score: all of the lender's rows, or the run's test split.

    The test split is the simulated lender's own (its split key's); in horizontal mode the union
    of each lender's, each with its own key.
    """
    lender = population.tables[LABEL_HOLDER]
    if settings.scoring.rows is ScoringRows.all:
        return population
    tables = dict(population.tables)
    if settings.federation.mode is Mode.horizontal:
        _, _, held = lender_rows(settings)
        test = lender.frame.index.isin(np.concatenate([r.ids[r.split == TEST]
                                                       for r in held.values()]))
    else:
        key = simulated_split_keys(settings, (LABEL_HOLDER,))[LABEL_HOLDER]
        test = assign_split(lender.frame.index, key, settings.data.split) == TEST
    tables[LABEL_HOLDER] = lender.rows(test)
    return Population(population.name, tables, population.truth)


def load_applicants(settings: RunSettings, party: str | None = None,
                    frames: Mapping[str, pd.DataFrame] | None = None) -> Population:
    """Every party's current table (or ``party``'s alone), the lender's cut to the applicants.

    From CSV files a node reads only its own file; synthetic data is generated whole;
    ``frames`` (one DataFrame per party) are validated as the files would be.
    """
    data = settings.data
    if frames is not None:
        population = load_population(data, settings.seed, labels=False, frames=frames)
    elif party is not None and data.source is Source.files and party in data.parties:
        table = load_party(party, data.parties[party], data, labels=False)
        population = Population(data.name, {party: table})
        if party != LABEL_HOLDER:
            return population
    else:
        population = load_population(data, settings.seed, labels=False)
    lender = population.tables[LABEL_HOLDER]
    if lender.n_rows == 0:
        raise DataError(f"{lender.source}: no applicants to score")
    duplicated = lender.frame.index[lender.frame.index.duplicated()]
    if len(duplicated):
        raise DataError(f"{lender.source}: {len(duplicated)} duplicate applicant IDs, e.g. "
                        f"{list(duplicated[:3])}")
    return _lender_rows(population, settings)


def list_table(settings: RunSettings, holder: str) -> PartyTable:
    """Return a holder's list as a table of IDs without columns (its node's scoring input)."""
    data = settings.data
    population = (None if holder in data.blacklists
                  else load_population(data, settings.seed))
    the_list = holder_lists(settings.blacklists.holders, data.blacklists, data.id_column,
                            population, settings.seed)[holder]
    return PartyTable(holder, pd.DataFrame(index=pd.Index(the_list.ids, name=data.id_column)),
                      (), (), the_list.source)


class ScoringSimulationSource:
    """Hands each simulated node its settings, its bundle and its own table only.

    ``shared``: the applicants as the engine shared them (``engine.share``); else each node
    loads its own from the data config. ``purpose``: what its consent records must grant
    (``credit_scoring``; ``monitoring`` when monitoring scores).
    """

    def __init__(self, settings: dict[str, ClientSettings], run: RunSettings,
                 bundles: dict[str, Path], shared: Any = None, purpose: str = SCORING) -> None:
        self.settings, self.run, self.bundles, self.shared = settings, run, bundles, shared
        self.purpose = purpose
        self.names = list(settings)
        self.key = f"scoring {run.data!r} {run.seed} {run.scoring!r} {time.time_ns()}"

    def _applicants(self, party: str) -> Population:
        if self.shared is not None:
            return typing.cast(Population, self.shared.get())
        return load_applicants(self.run, party)

    def __call__(self, context: Context) -> tuple[ClientSettings, ScoringInput]:
        quiet_worker()
        party = self.names[int(context.node_config["partition-id"])]
        data, settings = self.run.data, self.settings[party]
        if party in self.run.blacklists.holders:  # a holder's node holds its list only
            table = once_per_worker(f"{self.key}|{party}", lambda: gate_table(
                list_table(self.run, party), data.consent.get(party), FRAUD_CHECK,
                data.id_column, settings, LABEL_HOLDER))
            return settings, ScoringInput(None, table)
        table = once_per_worker(f"{self.key}|{party}|table", lambda: gate_table(
            self._applicants(party).tables[party], data.consent.get(party), self.purpose,
            data.id_column, settings, LABEL_HOLDER))
        return settings, ScoringInput(self.bundles[party], table)


class VerticalSimulationSource:
    """Hands each simulated node its settings and its own table only.

    It carries the data recipe, or what the engine shared (``engine.share``), not the rows:
    each worker loads the population once and keeps only what the node it serves holds (see
    :func:`once_per_worker`). With ``tables`` (each party's own source:
    its file, or the Parquet file the runner wrote of its generated table) a node reads its own
    table alone, chunk by chunk, as a deployed node does: no worker holds every party's rows.
    """

    def __init__(self, settings: dict[str, ClientSettings], data: DataSettings,
                 seed: int, shared: Any = None,
                 tables: dict[str, PartySource] | None = None) -> None:
        self.settings, self.data, self.seed, self.shared = settings, data, seed, shared
        self.tables = tables
        self.names = list(settings)
        self.key = f"vertical {data!r} {seed} {shared.key if shared is not None else ''}"

    def _population(self) -> Population:
        if self.shared is not None:
            return typing.cast(Population, self.shared.get())
        return load_population(self.data, self.seed)

    def _table(self, party: str) -> PartyTable:
        if self.tables is not None and party in self.tables:
            return load_party(party, self.tables[party], self.data)
        return once_per_worker(f"{self.key}|population", self._population).tables[party]

    def _rows(self, party: str, noise: NoiseSource) -> NodeRows:
        holders = self.settings[party].blacklists.holders
        if party in holders:  # a holder's node holds its list only
            population = once_per_worker(f"{self.key}|population", self._population)
            lists = holder_lists(holders, self.data.blacklists, self.data.id_column,
                                 population, self.seed)
            return holder_rows(party, gate_ids(party, list(lists[party].ids),
                                               self.data.consent.get(party), FRAUD_CHECK,
                                               self.data.id_column, self.settings[party],
                                               LABEL_HOLDER))
        table = gate_table(self._table(party), self.data.consent.get(party), TRAINING,
                           self.data.id_column, self.settings[party], LABEL_HOLDER)
        return private_node_rows(table, self.data, self.seed,
                                 self.settings[party].privacy, noise,
                                 node_split_key(self.settings[party]))

    def __call__(self, context: Context) -> tuple[ClientSettings, NodeRows]:
        torch.set_num_threads(1)  # the engine runs nodes side by side, one core each
        quiet_worker()
        party = self.names[int(context.node_config["partition-id"])]
        settings = self.settings[party]
        noise = node_noise(context, settings)  # the node's own secrets: rows depend on them
        split = hashlib.sha256(node_split_key(settings)).hexdigest()[:16]
        consent = file_digest(self.data.consent[party]) if party in self.data.consent else ""
        key = f"{self.key}|{party}|{noise.digest('rows cache').hex()[:16]}|{split}|{consent}"
        rows = once_per_worker(key, lambda: self._built(party, noise))
        return settings, rows

    def _built(self, party: str, noise: NoiseSource) -> NodeRows:
        rows = self._rows(party, noise)
        release_freed_memory(len(rows.ids))  # the table's, before another node's rows here
        return rows


class SimulationSource:
    """Hands each simulated lender its settings and rows (a deployment reads its own files).

    It carries what the engine shared (``engine.share``), not the rows: on Flower's
    simulation engine a reference into Ray's object store, since the engine pickles the
    ClientApp with every message. Each worker fetches the rows once (see
    :func:`fl_client.simulation_sources.once_per_worker`) instead of building them again.
    """

    def __init__(self, settings: dict[str, ClientSettings], rows: Any) -> None:
        self.settings = settings
        self.rows = rows
        self.names = sorted(settings, key=lambda p: int(p.rsplit("-", 1)[1]))
        self.key = f"horizontal {rows.key}"

    def __call__(self, context: Context) -> tuple[ClientSettings, LenderRows]:
        torch.set_num_threads(1)  # the engine runs clients side by side, one core each
        quiet_worker()
        party = self.names[int(context.node_config["partition-id"])]
        rows: dict[str, LenderRows] = once_per_worker(f"{self.key}|rows", self.rows.get)
        return self.settings[party], rows[party]
