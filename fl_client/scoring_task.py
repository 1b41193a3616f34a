"""What each vertical party does to score new applicants with its bundle. Never imports flwr.

Each party loads its own bundle (checked against its manifest's hashes) and its own current
table. The lender blinds its applicants' IDs once for every party; each party answers from its
cached blinded set (:class:`~federation.alignment.SetupCache`), so its work grows with the
applicants, not with its table; the lender learns which applicants each party knows and sends
each its share of them, sealed; each party embeds those rows with its saved encoder (a fresh
noisy release where the model was trained with embedding noise) and seals them for the lender
(the key of the exchanges derives from the request's channel key), and the lender scores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from credit_data.errors import AlignmentError, BudgetRefusal, DataError
from credit_data.saved_preprocessing import SavedPreprocessing
from credit_data.settings import LABEL_HOLDER
from credit_data.tables import PartyTable
from federation.alignment import (
    LenderAlignment,
    PartyAlignment,
    SetupCache,
    channel_auth,
    open_key,
    seal_key,
    transcript,
)
from federation.blacklist import request_size
from federation.query_ledger import Purpose, QuerySpend
from federation.releases import Outside, opted_in, outside_epsilon, refusal
from federation.sealed import keep_key
from federation.settings import ListMode, Mode
from fl_client.list_lookup import decisions, hit_columns, lender_hits
from fl_client.queries import charge
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState
from models.bundle import Bundle, load_bundle
from models.factory import party_encoder
from models.scorecard import scores_table
from models.settings import ModelKind, ModelSettings, ScorecardSettings
from models.split_training import LenderModel, calibrate, embed
from models.training import predict_proba
from privacy.accounting import embedding_sensitivity, epsilon_of, party_delta
from privacy.randomness import NoiseSource

SCORES_FILE = "scores.csv"
DONE = "scoring steps"
"""Node state key: the steps of this scoring request a node has answered (each once)."""


def once(state: NodeState, party: str, step: str) -> None:
    """Refuse a step this node already answered in this scoring request.

    A request is one scoring run: a coordinator that sends a step again (to draw a second noisy
    release of the same rows, or to probe the lender's model) is refused.
    """
    done = state.keys.get(DONE, b"").decode().split(",")
    if step in done:
        raise BudgetRefusal(f"{party}: '{step}' was already answered in this scoring request; "
                            "a repeated step is refused (a new request is a new run)")
    state.keys[DONE] = ",".join([d for d in done if d] + [step]).encode()


@dataclass(frozen=True)
class ScoringInput:
    """One party's bundle directory and its current table (the lender's: the applicants)."""

    bundle_dir: Path | None  # None at a blacklist holder: it holds a list, no bundle
    table: PartyTable
    applicants: Callable[[dict[str, Any]], PartyTable] | None = None
    """A scoring service's lender: reads one request's applicants (the request as it came)."""


def model_settings(manifest: dict[str, Any]) -> ModelSettings:
    """Return the architecture a bundle was trained with."""
    m = manifest["config"]["model"]
    return ModelSettings(kind=ModelKind(m["kind"]), hidden=tuple(m["hidden"]),
                         dropout=float(m["dropout"]), encoder_hidden=tuple(m["encoder_hidden"]),
                         embedding_dim=int(m["embedding_dim"]), bins=int(m.get("bins", 10)),
                         monotone=dict(m.get("monotone") or {}))


def scorecard_of(manifest: dict[str, Any]) -> ScorecardSettings:
    """Return the lender's score scaling, as trained."""
    c = manifest["scorecard"]
    return ScorecardSettings(base_points=float(c["base_points"]),
                             base_odds=float(c["base_odds"]), pdo=float(c["pdo"]),
                             grades=tuple(c["grades"]),
                             grade_floors=tuple(float(f) for f in c["grade_floors"]))


def encode_table(bundle: Bundle, table: PartyTable, rows: np.ndarray | None = None
                 ) -> tuple[np.ndarray, dict[str, int]]:
    """Encode the party's rows (all, or ``rows``) with its saved preprocessing."""
    saved = SavedPreprocessing.from_json_dict(bundle.preprocessing[bundle.party])
    saved.check_columns(table.frame, table.numeric, table.categorical, table.source)
    frame = table.frame if rows is None else table.frame.iloc[rows]
    encoded = saved.transform(frame, table.source)
    return encoded.x, encoded.unknown_categories


class _ScoringNode:
    def __init__(self, settings: ClientSettings, data: ScoringInput) -> None:
        self.settings, self.data = settings, data
        if data.bundle_dir is None:
            raise DataError(f"{settings.party}: no model bundle at this node")
        self.bundle = load_bundle(data.bundle_dir, party=settings.party)
        if data.table.n_rows == 0:
            raise DataError(f"{data.table.source}: no rows to score")

    @functools.cached_property
    def ids(self) -> list[str]:
        """The node's IDs as text, in its table's order (read when a step needs them)."""
        return [str(i) for i in self.data.table.frame.index]

    def hello(self) -> dict[str, Any]:
        """Return what the server checks first: the bundle's model and its files' digests."""
        return {"model_id": self.bundle.model_id, "role": self.bundle.manifest["role"],
                "bundle_sha256": self.bundle.manifest["files"]}


class ScoringLender(_ScoringNode):
    """The lender: blinds its applicants, intersects, scores."""

    def __init__(self, settings: ClientSettings, data: ScoringInput) -> None:
        super().__init__(settings, data)
        if self.bundle.manifest["role"] != "lender":
            raise DataError(f"{data.bundle_dir}: not the lender's bundle")
        self.passive = tuple(self.bundle.manifest["passive"])
        self.holders = [str(h) for h in self.bundle.manifest.get("blacklists", [])]

    def request(self, state: NodeState) -> tuple[bytes, bytes]:
        """Blind the applicants' IDs once for every party (a fresh key per request)."""
        once(state, self.settings.party, "request")
        side = LenderAlignment(self.ids)
        state.keys["psi"], state.keys["channel"] = side.keys()
        request, public = side.request()
        state.keys["lookup digest"] = transcript(request)  # the holders' answers answer it
        return request, seal_key(channel_auth(self.settings.party, self.settings.channel_keys),
                                 public, transcript(request))

    def intersect(self, state: NodeState, answers: dict[str, tuple[bytes, bytes, bytes]],
                  lists: dict[str, tuple[bytes, bytes, bytes]] | None = None
                  ) -> dict[str, bytes]:
        """Learn which applicants each party knows; seal each party's share for it.

        ``lists``: each blacklist holder's (setup, response, signature) to the same blinded
        request; the hits are kept in the node's state, for :meth:`score`.
        """
        once(state, self.settings.party, "intersect")
        for holder, hit in lender_hits(self.settings, self.ids, ListMode.lookup, state.keys,
                                       lists or {}).items():
            state.listed[holder] = np.asarray(hit, dtype=bool)
        auth = channel_auth(self.settings.party, self.settings.channel_keys)

        def one(party: str) -> tuple[bytes, np.ndarray, bytes]:
            setup, response, key = answers[party]
            peer = open_key(auth, key, party, transcript(transcript(setup), response))
            side = LenderAlignment(self.ids, psi_key=state.keys["psi"],
                                   channel_key=state.keys["channel"])
            return (*side.intersect(party, setup, response, peer),
                    side.channel_key(party, peer))

        with ThreadPoolExecutor(max_workers=max(len(answers), 1)) as pool:
            done = dict(zip(answers, pool.map(one, answers), strict=True))
        state.masks = {party: found for party, (_, found, _) in done.items()}
        for party, (_, _, key) in done.items():  # the key its embeddings come sealed with
            keep_key(state.keys, party, key)
        return {party: sealed for party, (sealed, _, _) in done.items()}

    def score(self, state: NodeState, embeddings: dict[str, np.ndarray]
              ) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Score every applicant; a party absent from the federation counts as not knowing any.

        Returns the ``scores.csv`` table (kept at the lender) and its counts.
        """
        once(state, self.settings.party, "score")
        m = self.bundle.manifest
        x, unknown = encode_table(self.bundle, self.data.table)
        x = np.hstack([x, hit_columns(len(x), self.holders, state.listed)])
        model = LenderModel(x.shape[1], self.passive, model_settings(m),
                            tuple(m["columns"]["features"]))
        model.load_state_dict(self.bundle.weights)
        d = model.embedding_dim
        z = np.zeros((len(x), model.width + len(self.passive) * (d + 1)), dtype=np.float32)
        z[:, :model.width] = x
        known: dict[str, np.ndarray] = {}
        for party in self.passive:
            mask = state.masks.get(party, np.zeros(len(x), dtype=bool))
            values = embeddings.get(party, np.zeros((0, d), np.float32))
            if int(mask.sum()) != len(values):
                raise ValueError(f"{party} sent {len(values)} embeddings for {int(mask.sum())} "
                                 "applicants it knows")
            z[mask, model.embedding_columns(party)] = values
            z[:, model.presence_column(party)] = mask
            known[party] = mask
        calibration = tuple(m["calibration"]) if m.get("calibration") else None
        probability = calibrate(predict_proba(model, z), calibration)  # type: ignore[arg-type]
        card = scorecard_of(m)
        table = scores_table(self.ids, probability, card)
        for party in self.passive:
            table[f"known_{party}"] = known[party].astype(int)
        for holder in self.holders:
            table[f"on_list_{holder}"] = state.listed.get(
                holder, np.zeros(len(x), dtype=bool)).astype(int)
        if self.holders:
            table["decision"] = decisions({h: state.listed[h] for h in self.holders
                                           if h in state.listed}, len(x),
                                          self.settings.blacklists.on_hit)
        counts = {"rows": len(table), "unknown_categories": unknown,
                  "known": {p: int(k.sum()) for p, k in known.items()},
                  "grades": {str(g): int(n) for g, n in
                             table["grade"].value_counts().sort_index().items()}}
        if self.holders:
            counts["decisions"] = {str(d): int(n) for d, n in
                                   table["decision"].value_counts().sort_index().items()}
        return table, counts


class ScoringParty(_ScoringNode):
    """A passive party: answers from its cached set, embeds the applicants it shares."""

    def __init__(self, settings: ClientSettings, data: ScoringInput) -> None:
        super().__init__(settings, data)
        if self.bundle.manifest["role"] != "passive":
            raise DataError(f"{data.bundle_dir}: not a passive party's bundle")
        self.spend: QuerySpend | None = None

    def answer(self, state: NodeState, request: bytes, lender_key: bytes,
               lender_rows: int) -> tuple[bytes, bytes, bytes, bool]:
        """Return (setup, response, sealed key, whether the setup came from the cache).

        The party's PSI key is used here and not kept in the request's state: it lives in the
        party's cache alone. The answer tells the lender which applicants this node knows:
        every ID of the signed request is charged to the node's query ledger first
        (:attr:`spend`), and a request past a cap is refused unanswered.
        """
        once(state, self.settings.party, "answer")
        self.refuse_unaccounted()
        auth = channel_auth(self.settings.party, self.settings.channel_keys)
        lender_public = open_key(auth, lender_key, LABEL_HOLDER, transcript(request))
        self.spend = charge(self.settings, request_size(request), Purpose.scoring)
        cache = SetupCache(Path(self.settings.psi_cache) if self.settings.psi_cache else None,
                           self.settings.party)
        psi_key, setup, cached = cache.setup(self.ids, lender_rows)
        side = PartyAlignment(self.settings.party, self.ids, psi_key=psi_key)
        response, public = side.answer(request, lender_public)
        state.keys["channel"] = side.channel_key
        keep_key(state.keys, LABEL_HOLDER, side.channel_key)  # to seal the embeddings with
        state.keys["lender rows"] = str(self.spend.asked).encode()  # what it charged
        return setup, response, seal_key(auth, public, transcript(transcript(setup),
                                                                   response)), cached

    def embed(self, state: NodeState, sealed: bytes) -> tuple[np.ndarray, dict[str, Any]]:
        """Open the shared applicants and embed their rows (a fresh release under noise).

        Refused: a second time in one request, and a list that repeats an applicant or holds
        more than the lender asked about (each would be a second release of the same rows).
        """
        once(state, self.settings.party, "embed")
        side = PartyAlignment(self.settings.party, self.ids, key=state.keys["channel"])
        positions = side.receive(sealed)
        asked = int(state.keys.get("lender rows", b"0"))
        if len(np.unique(positions)) != len(positions) or len(positions) > asked:
            raise AlignmentError(f"{self.settings.party}: the sealed list names "
                                 f"{len(positions)} applicants ({len(np.unique(positions))} "
                                 f"distinct) for a request of {asked}; refused")
        values, unknown, spend = self.embed_rows(positions, "scoring release")
        state.positions = np.asarray(positions)  # the applicants it may explain next
        return values, ({"rows": len(positions), "unknown_categories": unknown} | spend
                        | self.outside_info())

    def outside_info(self) -> dict[str, list[str]]:
        """Return, for a reply, the opt-in releases outside any epsilon it carries (if any)."""
        released = opted_in(self.outside())
        return {"outside_epsilon": released} if released else {}

    def embed_rows(self, rows: np.ndarray | None, purpose: str
                   ) -> tuple[np.ndarray, dict[str, int], dict[str, Any]]:
        """Embed the party's rows (all, or ``rows``) with its saved encoder.

        Returns the embeddings, the unknown categories counted, and the release's spend (empty
        without embedding noise). Under noise the release is checked against the node's cap
        first, and the noise is drawn here from the operating system's source (``purpose``
        labels the draw).
        """
        m = self.bundle.manifest
        x, unknown = encode_table(self.bundle, self.data.table, rows)
        settings = model_settings(m)
        encoder = party_encoder(settings, x.shape[1], tuple(m["columns"]["features"]))
        encoder.load_state_dict({k.removeprefix("encoder."): v
                                 for k, v in self.bundle.weights.items()})
        noise_std = float(m["embedding"]["noise_std"])
        if noise_std <= 0:
            return embed(encoder, x), unknown, {}
        clip = float(m["embedding"]["clip"])
        spend = self._release_spend(noise_std, clip, len(x))
        rng = NoiseSource.fresh().numpy(purpose)  # the OS's source, drawn here
        return embed(encoder, x, clip=clip, noise_std=noise_std, rng=rng), unknown, spend

    def outside(self) -> tuple[Outside, ...]:
        """Return what scoring with this bundle releases outside any epsilon."""
        return outside_epsilon(self.settings.privacy, self.settings.party, Mode.vertical,
                               scoring=True, embedding_noise=float(
                                   self.bundle.manifest["embedding"]["noise_std"]) > 0)

    def refuse_unaccounted(self) -> None:
        """Refuse embeddings no epsilon covers unless this node opted in (a model without noise).

        The decision is :func:`federation.releases.refusal`'s, as for a training run: a node
        sends exact embeddings only with its own ``--release-exact-embeddings``; in simulation
        a party that caps its epsilon refuses them. DP-SGD bounds the encoder's weights, not the
        embedding of an applicant's own row.
        """
        why = refusal(self.outside(), capped=self.settings.privacy.max_epsilon is not None,
                      opted=self.settings.opt_in)
        if why is not None:
            raise BudgetRefusal(why)

    def _release_spend(self, noise_std: float, clip: float, rows: int) -> dict[str, Any]:
        """Epsilon of this release per scored applicant; refused past the node's cap.

        An applicant the party never released before spends one release; a customer whose
        row was released in training spends one more on top of training's.
        """
        m = self.bundle.manifest
        multiplier = noise_std / embedding_sensitivity(clip=clip)
        delta = party_delta(delta=m["config"]["privacy"].get("delta"),
                            n_rows=int(m["table"]["rows"]))
        trained = int(m["privacy"].get("embedding_releases", 0))
        fresh = epsilon_of([(multiplier, 1.0, 1)], delta=delta)
        again = epsilon_of([(multiplier, 1.0, trained + 1)], delta=delta)
        cap = self.settings.privacy.max_epsilon
        if cap is not None and again > cap + 1e-9:
            raise BudgetRefusal(f"{self.settings.party}: scoring would release the embeddings "
                                f"of training customers at epsilon {again:.3f}, past this "
                                f"node's max_epsilon {cap}")
        return {"embedding_noise_multiplier": multiplier, "released_rows": rows,
                "epsilon_per_new_applicant": fresh,
                "epsilon_per_training_customer": again, "delta": delta}


def embeddings_tensor(values: np.ndarray) -> torch.Tensor:
    """Embeddings as a float32 tensor (what travels)."""
    return torch.as_tensor(np.ascontiguousarray(values, dtype=np.float32))
