"""The client's one settings object, frozen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federation.alignment import ChannelKeys
from federation.explanation import ExplainSettings
from federation.query_ledger import QueryCaps
from federation.releases import Release
from federation.run_settings import RunSettings
from federation.settings import BlacklistSettings, Fault, FederationSettings
from models.settings import ModelSettings, ScorecardSettings, TrainSettings
from privacy.settings import PrivacySettings


@dataclass(frozen=True)
class ClientSettings:
    """Everything one party's node needs besides its rows.

    ``state_dir`` is where the party keeps its own privacy accountant between processes (and
    across a resume); ``fault`` makes a simulated client misbehave, for tests;
    ``channel_keys`` (a deployed node's) authenticate its alignment channel.

    ``queries``: what the node answers one lender, charged to its query ledger (kept in
    ``query_ledger``, a deployed node's state directory; else beside its state) by every path
    that answers the lender's IDs. ``opt_in``: the releases outside any epsilon a deployed
    node's own config lets leave (:mod:`federation.releases`); None: not a node (a simulation).
    """

    party: str
    seed: int
    model: ModelSettings
    train: TrainSettings
    federation: FederationSettings
    privacy: PrivacySettings
    state_dir: str | None = None
    fault: Fault | None = None
    label_leakage_attack: bool = False
    inversion_attack: bool = False
    channel_keys: ChannelKeys | None = None
    scorecard: ScorecardSettings = ScorecardSettings()  # the lender's score scaling
    psi_cache: str | None = None  # where the node keeps its blinded ID sets (SetupCache)
    key_dir: str | None = None  # the node's master key, outside every run directory
    blacklists: BlacklistSettings = BlacklistSettings()  # the holders; a holder's own mode
    queries: QueryCaps = QueryCaps.of_run(BlacklistSettings().max_queries)
    query_ledger: str | None = None  # a deployed node's query ledger (its state directory)
    opt_in: frozenset[Release] | None = None
    explain: ExplainSettings = ExplainSettings()  # reason codes at scoring (this node's table)


def client_settings(run: RunSettings, party: str, state_dir: str | None, *,
                    privacy: PrivacySettings | None = None, fault: Fault | None = None,
                    label_leakage_attack: bool = False,
                    inversion_attack: bool = False,
                    channel_keys: ChannelKeys | None = None,
                    psi_cache: str | None = None,
                    key_dir: str | None = None) -> ClientSettings:
    """Build one party's node settings from the run's; the same in simulation and deployment.

    ``privacy`` overrides the run's (a deployed node applies its own limits); ``fault``,
    ``label_leakage_attack`` and ``inversion_attack`` exist in simulation only: a deployed node
    never misbehaves on purpose, never runs the research attack on the gradients it receives
    and never keeps a copy of the embeddings it sent for the inversion audit.
    """
    return ClientSettings(party=party, seed=run.seed, model=run.model, train=run.train,
                          federation=run.federation,
                          privacy=privacy if privacy is not None else run.privacy.for_party(party),
                          state_dir=state_dir, fault=fault,
                          label_leakage_attack=label_leakage_attack,
                          inversion_attack=inversion_attack,
                          channel_keys=channel_keys, scorecard=run.scorecard,
                          psi_cache=run.federation.psi_cache if psi_cache is None
                          else psi_cache, blacklists=run.blacklists,
                          queries=QueryCaps.of_run(run.blacklists.max_queries),
                          explain=run.explain,
                          key_dir=key_dir if key_dir is not None else (
                              str(Path(run.federation.key_dir) / party)
                              if run.federation.key_dir else None))
