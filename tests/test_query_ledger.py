"""Issue 30, finding 1: the lender learns about a customer only what an application entitles it to.

Through the scoring service a lender blinded IDs that were not its applicants; the bureau
answered 10,000 of them (1% of a monthly cap of a million) and the lender found every one of
the bureau's customers among them and opened their exact embeddings, from a sealed table of
every customer the party had sent it. Batch scoring and the training alignment charged nothing.

Now every path that answers the lender's IDs charges one ledger per lender at the node, capped
per day and per month (a small multiple of the lender's declared volume), a request past a cap
is refused whole, and a party sends embeddings only for the customers of a charged request: the
adversary here is that lender, following the protocol with the bytes it receives and the keys
it holds, with a small cap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from credit_data.errors import BudgetRefusal
from credit_data.settings import DataSettings
from credit_data.synthetic import generate
from credit_data.tables import PartyTable
from credit_data.vertical import NodeRows, node_rows
from federation.alignment import LenderAlignment, open_key, public_bytes, shared_key, transcript
from federation.query_ledger import QueryCaps, QueryLimit
from federation.releases import Release
from federation.service_table import Blinded, TagSet, seal, table_context, unseal
from federation.settings import FederationSettings, Mode
from fl_client.party_bundle import write_passive_bundle
from fl_client.scoring_service import ServedParty
from fl_client.scoring_task import ScoringInput, ScoringParty
from fl_client.settings import ClientSettings
from fl_client.vertical_task import NodeState, PassiveNode
from models.networks import PartyEncoder
from models.settings import ModelSettings, TrainSettings
from privacy.randomness import NoiseSource
from privacy.settings import PrivacySettings

pytestmark = pytest.mark.unit

N = 2_000
EXACT = frozenset({Release.exact_embeddings})


def _bureau(tmp_path: Path, caps: QueryCaps, *, opt_in: frozenset[Release] = EXACT,
            noise_std: float = 0.0) -> tuple[ClientSettings, Path, PartyTable, NodeRows]:
    """A deployed bureau node's settings (its caps, its opt-ins), its bundle, table and rows."""
    table = generate(N, seed=0).tables["bureau"]
    rows = node_rows(table, DataSettings(n_customers=N), seed=0)
    settings = ClientSettings(
        party="bureau", seed=0, model=ModelSettings(encoder_hidden=(8,), embedding_dim=4),
        train=TrainSettings(), federation=FederationSettings(mode=Mode.vertical),
        privacy=PrivacySettings(), state_dir=str(tmp_path / "run"),
        psi_cache=str(tmp_path / "state" / "psi-cache"), queries=caps,
        query_ledger=str(tmp_path / "state"), opt_in=opt_in)
    encoder = PartyEncoder(rows.width, (8,), 4, 0.0)
    write_passive_bundle(settings, rows, "m", encoder.state_dict(), encoder_version=1,
                         noise_std=noise_std, privacy={"embedding_releases": 1})
    return settings, tmp_path / "run" / "bureau" / "model", table, rows


class Lender:
    """The adversary: a lender that runs the service's protocol with IDs of its own choosing."""

    def __init__(self, party: ServedParty) -> None:
        self.party, self.party_state, self.seq = party, NodeState(), 0
        own = X25519PrivateKey.generate()
        sealed, key, _ = party.sealed_table(self.party_state, public_bytes(own))
        self.key = shared_key(own, open_key(None, key, "bureau", transcript(sealed)),
                              "served bureau")
        _, self.tags = unseal(self.key, sealed, "bureau table")
        self.opened: list[bytes] = [self.tags]  # every plain byte the lender got
        self.context = table_context(party.bundle.model_id, "bureau")

    def ask(self, ids: list[str]) -> tuple[list[str], np.ndarray]:
        """Blind ``ids``, have them evaluated, match, and take the known ones' embeddings."""
        self.seq += 1
        blinded = Blinded.of(ids)
        answer, _ = self.party.evaluate(self.party_state, seal(self.key, blinded.points,
                                                         "bureau request", self.seq))
        _, points = unseal(self.key, answer, "bureau answer")
        found, tags = TagSet.from_bytes(self.tags).find(ids, blinded.unblind(points),
                                                        self.context)
        sent, _ = self.party.embed_known(self.party_state,
                                         seal(self.key, tags, "bureau known", self.seq))
        _, values = unseal(self.key, sent, "bureau embeddings")
        self.opened += [points, values]
        return [i for i, f in zip(ids, found, strict=True) if f], np.frombuffer(
            values, dtype="<f4").reshape(-1, 4)


def test_a_served_sweep_finds_no_customer_beyond_its_charged_cap(tmp_path):
    # Prepare: a bureau node whose caps are 300 IDs a day, 1,000 a month; the lender sweeps
    # IDs in the public format, of which the bureau knows about half
    caps = QueryCaps.of_node(applications=500, training_rows=None, per_day=300)
    settings, bundle, table, _ = _bureau(tmp_path, caps)
    party = ServedParty(settings, ScoringInput(bundle, table))
    customers = [str(i) for i in table.frame.index]
    sweep = [c for pair in zip(customers[:400], [f"X{k:07d}" for k in range(400)],
                               strict=True) for c in pair]
    lender = Lender(party)
    # Execute: a first request of 250 IDs, then 250 more the same day
    found, values = lender.ask(sweep[:250])
    with pytest.raises(QueryLimit, match=r"bureau refuses: lender asked 250 IDs of "
                                         r"applications on \d{4}-\d\d-\d\d and now asks 250 "
                                         r"more \(service\), past this node's cap of 300 IDs "
                                         r"a day \(--max-queries-per-day\); nothing was "
                                         r"answered"):
        lender.ask(sweep[250:500])
    # Assert: it found exactly the customers among its charged IDs, and nothing beyond them
    assert found == [c for c in sweep[:250] if c in set(customers)] and len(found) == 125
    cached, _ = party._table()
    np.testing.assert_array_equal(values, cached.values[[customers.index(c) for c in found]])
    # no other customer's embedding is anywhere in what the lender received: not in the tag
    # set (16 bytes a customer, tags only), not in an answer
    assert len(lender.tags) == 16 * len(customers)
    got = b"".join(lender.opened)
    rows = {cached.values[k].astype("<f4").tobytes() for k in range(len(customers))}
    released = {v.astype("<f4").tobytes() for v in values}  # customers with equal rows aside
    assert not [v for v in rows - released if v in got]
    # the refused request was not charged, and nothing of it was answered
    book = json.loads((tmp_path / "state" / "queries.json").read_text())
    assert [c for k, c in book["lender"].items() if len(k) == 7] == [{"service": 250}]
    assert lender.party_state.keys["served seq"] == b"1"  # the party answered request 1 only


def test_every_path_that_answers_the_lenders_ids_charges_one_ledger(tmp_path):
    # Prepare: a bureau node: 500 IDs of applications a day, 800 a month; 1,200 for training
    caps = QueryCaps.of_node(applications=400, training_rows=600, per_day=500)
    settings, bundle, table, rows = _bureau(tmp_path, caps)
    applicants = [str(i) for i in table.frame.index[:1_000]]
    ledger = tmp_path / "state" / "queries.json"

    def month() -> dict[str, int]:
        book = json.loads(ledger.read_text())["lender"]
        return next(v for k, v in book.items() if len(k) == 7)

    def align(n: int) -> None:  # the training alignment: the lender's historic applicants
        node, state = PassiveNode(settings, rows, NoiseSource.fresh()), NodeState()
        node.setup(state, n)
        node.answer(state, *LenderAlignment(applicants[:n]).request())

    def score(n: int) -> None:  # a batch scoring run
        request, key = LenderAlignment(applicants[:n]).request()
        ScoringParty(settings, ScoringInput(bundle, table)).answer(NodeState(), request, key, n)

    # Execute and Assert: each path grows the one ledger, and past a cap is refused uncharged
    align(1_000)
    assert month() == {"training": 1_000}
    with pytest.raises(QueryLimit, match=r"asked 1000 IDs for training in .* past this "
                                         r"node's cap of 1200 IDs a month "
                                         r"\(--lender-training-rows\)"):
        align(300)
    score(300)
    assert month() == {"training": 1_000, "scoring": 300}
    with pytest.raises(QueryLimit, match=r"asked 300 IDs of applications on .* now asks 300 "
                                         r"more \(scoring\), past this node's cap of 500 IDs a "
                                         r"day \(--max-queries-per-day\)"):
        score(300)
    party = ServedParty(settings, ScoringInput(bundle, table))
    lender = Lender(party)
    lender.ask(applicants[:150])
    assert month() == {"training": 1_000, "scoring": 300, "service": 150}
    with pytest.raises(QueryLimit, match=r"asked 450 IDs of applications on .* \(service\)"):
        lender.ask(applicants[150:250])
    assert month() == {"training": 1_000, "scoring": 300, "service": 150}


def test_a_node_sends_exact_embeddings_only_with_its_own_opt_in(tmp_path):
    # Prepare: the same bureau without --release-exact-embeddings, capped or not
    caps = QueryCaps.of_node(applications=1_000, training_rows=None)
    settings, bundle, table, _ = _bureau(tmp_path / "exact", caps, opt_in=frozenset())
    request, key = LenderAlignment([str(i) for i in table.frame.index[:50]]).request()
    # Execute and Assert: the service and batch scoring refuse before anything is charged
    with pytest.raises(BudgetRefusal, match="carry no noise .* only with its own "
                                            "--release-exact-embeddings"):
        ServedParty(settings, ScoringInput(bundle, table)).sealed_table(
            NodeState(), public_bytes(X25519PrivateKey.generate()))
    with pytest.raises(BudgetRefusal, match="--release-exact-embeddings"):
        ScoringParty(settings, ScoringInput(bundle, table)).answer(NodeState(), request, key, 50)
    assert not (tmp_path / "exact" / "state" / "queries.json").exists()
    # a model with embedding noise needs no opt-in: its release is inside an epsilon
    noisy, bundle, table, _ = _bureau(tmp_path / "noisy", caps, opt_in=frozenset(),
                                      noise_std=0.5)
    _, _, info = ServedParty(noisy, ScoringInput(bundle, table)).sealed_table(
        NodeState(), public_bytes(X25519PrivateKey.generate()))
    assert info["epsilon_per_new_applicant"] > 0 and "outside_epsilon" not in info
    # a node that declared no lender volume answers none of the lender's IDs
    silent, bundle, table, _ = _bureau(tmp_path / "silent", QueryCaps.of_node(
        applications=None, training_rows=None))
    with pytest.raises(QueryLimit, match=r"cap of 0 IDs a day \(--lender-applications\)"):
        ScoringParty(silent, ScoringInput(bundle, table)).answer(NodeState(), request, key, 50)


def test_a_nodes_own_flags_set_its_caps_and_its_opt_ins(tmp_path):
    # the flags a partner sets on its node reach the node's settings; bad values are named
    from credit_data.errors import ConfigError
    from deployment.client_app import NodeConfig
    from deployment.node import _check, _parser, node_config
    from federation.settings import BlacklistSettings

    data = tmp_path / "b.csv"
    data.write_text("id,x\n1,2\n")
    base = ["--party", "bureau", "--data", str(data), "--superlink", "127.0.0.1:1",
            "--state-dir", str(tmp_path / "s"), "--insecure", "--max-epsilon", "3"]
    config = node_config(_parser().parse_args(base + [
        "--lender-applications", "5000", "--lender-training-rows", "40000",
        "--release-exact-embeddings"]))
    node = NodeConfig.from_context(config)
    assert node.opt_in == EXACT
    caps = node.caps(BlacklistSettings())
    # the default multiple: twice the declared volume a month, a tenth of that a day; twice
    # the declared training table a month for training alignments
    assert (caps.per_month, caps.per_day, caps.training_per_month) == (10_000, 1_000, 80_000)
    # --max-queries keeps its meaning (IDs of applications a month) and sets the cap outright
    old = NodeConfig.from_context(node_config(_parser().parse_args(base + [
        "--max-queries", "200000"])))
    assert old.caps(BlacklistSettings()).per_month == 200_000 and old.opt_in == frozenset()
    # a run's blacklists.max_queries lowers a node's caps, never raises them
    assert node.caps(BlacklistSettings(max_queries=700)).per_day == 700
    assert node.caps(BlacklistSettings(max_queries=10 ** 9)).per_month == 10_000
    with pytest.raises(SystemExit, match="--max-queries-per-day must be at least 1"):
        _check(_parser().parse_args(base + ["--max-queries-per-day", "0"]))
    with pytest.raises(ConfigError, match="'lender-applications' must be a positive integer"):
        NodeConfig.from_context({**config, "lender-applications": "many"})
    with pytest.raises(ConfigError, match="'release-exact-embeddings' must be true or false"):
        NodeConfig.from_context({**config, "release-exact-embeddings": "yes"})
