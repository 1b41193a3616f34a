"""Issue 32: a split model's reason codes, computed where the columns live.

The lender's and each party's ends (:mod:`fl_client.explanation`) exchange their three sealed
messages on a real sealed channel (:mod:`federation.sealed`); their attributions are checked
against an independent implementation on the same model assembled in one process: captum's
``IntegratedGradients`` over each party's columns, and an exact Shapley enumeration over the
three parties written here. Completeness, faithfulness (top-4 columns set to the reference move
the score more than 4 random columns) and what leaves a party are measured too.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

from federation.explanation import COLUMNS, GRADIENTS, PATH, REFERENCE, ExplainSettings
from federation.sealed import SealedChannel, exchange_key
from fl_client.explanation import (
    LenderExplainer,
    PartyExplainer,
    global_table,
    points_per_logit,
)
from models.networks import PartyEncoder
from models.settings import ModelSettings
from models.split_training import LenderModel

pytestmark = pytest.mark.unit

WIDTHS = {"lender": 5, "bureau": 4, "social": 3}
PASSIVE = ("bureau", "social")
ROWS = 1_000
CHECKED = 200  # applicants checked against captum (it runs the model steps x rows times)
STEPS = 128
SCALE = points_per_logit(50.0, None)
OFFSET = 600.0


def _names(party: str) -> list[str]:
    return [f"{party}_{j}" for j in range(WIDTHS[party])]


@pytest.fixture(scope="module")
def trained(one_torch_thread: None) -> dict[str, object]:
    """A split model trained in one process on rows whose label depends on every party."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = {p: rng.normal(size=(ROWS, w)).astype(np.float32) for p, w in WIDTHS.items()}
    logit = (1.5 * x["lender"][:, 0] - x["lender"][:, 1] + 2.0 * x["bureau"][:, 0]
             + x["bureau"][:, 1] * x["bureau"][:, 2] - 1.5 * x["social"][:, 0])
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    known = {p: rng.random(ROWS) < 0.8 for p in PASSIVE}  # some applicants unknown to a party
    settings = ModelSettings(hidden=(16,), encoder_hidden=(16,), embedding_dim=4, dropout=0.0)
    lender = LenderModel(WIDTHS["lender"], PASSIVE, settings)
    encoders = {p: PartyEncoder(WIDTHS[p], (16,), 4, 0.0) for p in PASSIVE}
    params = [*lender.parameters(), *(q for e in encoders.values() for q in e.parameters())]
    optimizer = torch.optim.Adam(params, lr=0.01, weight_decay=1e-3)

    def z_of(e: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [torch.as_tensor(x["lender"])]
        for p in PASSIVE:
            parts += [e[p], torch.as_tensor(known[p], dtype=torch.float32)[:, None]]
        return torch.cat(parts, dim=1)

    for _ in range(100):
        optimizer.zero_grad()
        e = {p: encoders[p](torch.as_tensor(x[p])) for p in PASSIVE}
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lender(z_of(e)),
                                                                    torch.as_tensor(y))
        loss.backward()
        optimizer.step()
    lender.eval()
    for enc in encoders.values():
        enc.eval()
    return {"x": x, "known": known, "lender": lender, "encoders": encoders, "z_of": z_of}


def _channels() -> dict[str, tuple[SealedChannel, SealedChannel]]:
    """Each party's (party end, lender end) of a sealed channel."""
    out = {}
    for p in PASSIVE:
        key = exchange_key(os.urandom(32))
        out[p] = (SealedChannel(key, "run", own=p, peer="lender"),
                  SealedChannel(key, "run", own="lender", peer=p))
    return out


def _federated(trained: dict[str, object], method: str) -> dict[str, object]:
    """Run the three sealed messages; keep what crossed and what came out."""
    x, known = trained["x"], trained["known"]
    assert isinstance(x, dict) and isinstance(known, dict)
    encoders = trained["encoders"]
    assert isinstance(encoders, dict)
    settings = ExplainSettings(steps=STEPS, method=method)
    exact = method == "exact"
    channels, sent = _channels(), {}
    parties = {p: PartyExplainer(encoders[p], x[p], _names(p), settings, exact=exact)
               for p in PASSIVE}
    positions = {p: np.flatnonzero(known[p]) for p in PASSIVE}
    # scoring's own message: each party's embeddings of the applicants it knows
    with torch.no_grad():
        embeddings = {p: encoders[p](torch.as_tensor(x[p][positions[p]])).numpy()
                      for p in PASSIVE}
    # 1. party -> lender: reference and path embeddings, sealed
    paths = {}
    for p in PASSIVE:
        mine, theirs = channels[p]
        out = parties[p].path(positions[p])
        blobs = {"reference": mine.seal(REFERENCE, (0,), out["reference"]),
                 "path": mine.seal(PATH, (0,), out["path"])}
        sent[(p, "path")] = out
        paths[p] = {"reference": theirs.open(REFERENCE, (0,), blobs["reference"]),
                    "path": theirs.open(PATH, (0,), blobs["path"])}
    lender = trained["lender"]
    assert isinstance(lender, LenderModel)
    explainer = LenderExplainer(lender, x["lender"], _names("lender"), settings, scale=SCALE,
                                offset=OFFSET, exact=exact)
    assert explainer.exact == exact and all(q.exact == exact for q in parties.values())
    kept, grads = explainer.explain(known, embeddings, paths)
    # 2. lender -> party: gradients along the path, one batched message each
    columns = {}
    for p in PASSIVE:
        mine, theirs = channels[p]
        blob = theirs.seal(GRADIENTS, (0,), grads[p])
        sent[(p, "gradients")] = grads[p]
        values, names = parties[p].columns(positions[p], mine.open(GRADIENTS, (0,), blob))
        # 3. party -> lender: its columns' points, sealed
        sent[(p, "columns")] = values
        columns[p] = (theirs.open(COLUMNS, (0,), mine.seal(COLUMNS, (0,), values)), names)
    reasons = explainer.reasons(kept, known, columns)
    return {"kept": kept, "columns": columns, "reasons": reasons, "sent": sent,
            "parties": parties, "explainer": explainer}


@pytest.fixture(scope="module")
def federated(trained: dict[str, object]) -> dict[str, object]:
    """The default: the path integrated exactly (one-hidden-layer encoders and head)."""
    return _federated(trained, "exact")


@pytest.fixture(scope="module")
def quadrature(trained: dict[str, object]) -> dict[str, object]:
    """The path integrated by Gauss-Legendre quadrature, captum's method."""
    return _federated(trained, "gauss_legendre")


def _head_at(trained: dict[str, object], e: dict[str, torch.Tensor]) -> torch.Tensor:
    """The lender model's logit with ``e`` as each party's effective embedding."""
    lender = trained["lender"]
    assert isinstance(lender, LenderModel)
    return lender.head(torch.cat([e["lender"], e["bureau"], e["social"]], dim=1))


def _reference_embeddings(trained: dict[str, object]) -> dict[str, torch.Tensor]:
    x, encoders, lender = trained["x"], trained["encoders"], trained["lender"]
    assert isinstance(x, dict) and isinstance(encoders, dict) and isinstance(lender, LenderModel)
    with torch.no_grad():
        ref = {"lender": lender.encoder(torch.as_tensor(x["lender"]).mean(0, keepdim=True))}
        ref |= {p: encoders[p](torch.as_tensor(x[p]).mean(0, keepdim=True)) for p in PASSIVE}
    return ref


def _actual_embeddings(trained: dict[str, object]) -> dict[str, torch.Tensor]:
    x, encoders, lender, known = (trained["x"], trained["encoders"], trained["lender"],
                                  trained["known"])
    assert isinstance(x, dict) and isinstance(encoders, dict) and isinstance(known, dict)
    assert isinstance(lender, LenderModel)
    with torch.no_grad():
        out = {"lender": lender.encoder(torch.as_tensor(x["lender"]))}
        for p in PASSIVE:
            absent = lender.absent[p].weight[:, 0].unsqueeze(0).expand(ROWS, -1)
            mask = torch.as_tensor(known[p])[:, None]
            out[p] = torch.where(mask, encoders[p](torch.as_tensor(x[p])), absent)
    return out


def test_party_shares_equal_an_exact_shapley_enumeration(trained, federated) -> None:
    # Prepare: the value of every coalition, on the model assembled in one process
    actual, ref = _actual_embeddings(trained), _reference_embeddings(trained)
    players = ["lender", "bureau", "social"]

    def value(coalition: tuple[str, ...]) -> torch.Tensor:
        with torch.no_grad():
            return _head_at(trained, {p: actual[p] if p in coalition else ref[p].expand(ROWS, -1)
                                      for p in players})

    # Execute: Shapley's formula over orderings (3! permutations), not over subsets
    expected = torch.zeros(ROWS, 3, dtype=torch.float64)
    for order in itertools.permutations(players):
        for k, p in enumerate(order):
            expected[:, players.index(p)] += (value(order[:k + 1]) - value(order[:k])).double()
    expected = expected / math.factorial(3) * SCALE
    # Assert
    shares = federated["kept"].shares
    assert np.abs(shares - expected.numpy()).max() / abs(SCALE) < 1e-4  # in log-odds
    score = value(tuple(players)).double().numpy() * SCALE
    base = value(()).double().numpy() * SCALE
    assert np.abs(shares.sum(1) - (score - base)).max() / abs(SCALE) < 1e-4  # they add up


def _captum(trained: dict[str, object], steps: int, checked: int = CHECKED
            ) -> dict[str, np.ndarray]:
    """Each party's integrated gradients by captum, on the model assembled in one process.

    Of the first ``checked`` applicants (of those a party knows).
    """
    # Prepare
    actual, ref = _actual_embeddings(trained), _reference_embeddings(trained)
    x, known, encoders = trained["x"], trained["known"], trained["encoders"]
    players = ["lender", "bureau", "social"]
    lender = trained["lender"]
    out = {}
    for p in players:
        encoder = lender.encoder if p == "lender" else encoders[p]
        rows = (np.arange(ROWS) if p == "lender" else np.flatnonzero(known[p]))[:checked]
        others = {q: actual[q][rows] for q in players if q != p}

        def g(xp: torch.Tensor, p: str = p, encoder=encoder, others=others,
              n: int = len(rows)) -> torch.Tensor:
            # party p's Shapley-weighted head, as a function of its own columns
            reps = xp.shape[0] // n
            total = torch.zeros(xp.shape[0])
            rest = [q for q in players if q != p]
            for size in range(3):
                for coalition in itertools.combinations(rest, size):
                    w = math.factorial(size) * math.factorial(2 - size) / math.factorial(3)
                    e = {q: others[q].repeat(reps, 1) if q in coalition
                         else ref[q].expand(xp.shape[0], -1) for q in rest}
                    e[p] = encoder(xp)
                    total = total + w * _head_at(trained, e)
            return total

        out[p] = IntegratedGradients(g).attribute(
            torch.as_tensor(x[p][rows]), baselines=torch.as_tensor(x[p]).mean(0, keepdim=True),
            n_steps=steps, method="gausslegendre",
            internal_batch_size=len(rows) * 64).detach().numpy() * SCALE
    return out


def _ours(run: dict[str, object]) -> dict[str, np.ndarray]:
    return {"lender": run["kept"].own[:CHECKED]} | {p: run["columns"][p][0][:CHECKED]
                                                    for p in PASSIVE}


@pytest.fixture(scope="module")
def captum_coarse(trained: dict[str, object]) -> dict[str, np.ndarray]:
    """Captum's integrated gradients with the parties' quadrature."""
    return _captum(trained, STEPS)


def test_column_attributions_equal_captum_integrated_gradients(captum_coarse, quadrature
                                                                ) -> None:
    # Execute: captum with the same quadrature the parties used
    expected, got = captum_coarse, _ours(quadrature)
    # Assert
    for p, values in expected.items():
        assert got[p].shape == values.shape
        assert np.abs(got[p] - values).max() / abs(SCALE) < 1e-4, p  # in log-odds


def test_exact_path_is_the_limit_of_captum_quadrature(trained, federated, captum_coarse
                                                       ) -> None:
    # Prepare: captum's error against the exact integral, at 128 then 512 points
    exact = _ours(federated)
    half = CHECKED // 2
    coarse, fine = captum_coarse, _captum(trained, 4 * STEPS, half)
    for p in exact:
        error_coarse = np.abs(coarse[p][:half] - exact[p][:half]).mean()
        error_fine = np.abs(fine[p] - exact[p][:half]).mean()
        # Assert: four times the points, at least three times closer (a kink costs 1/steps;
        # measured 4.4x), and within 1e-3 log-odds on average
        assert error_fine < error_coarse / 3, (p, error_coarse, error_fine)
        assert error_fine / abs(SCALE) < 1e-3, p


def _gaps(run: dict[str, object], known: dict[str, np.ndarray]) -> dict[str, float]:
    kept, columns = run["kept"], run["columns"]
    gaps = {"lender": np.abs(kept.own.sum(1) - kept.shares[:, 0]).max() / abs(SCALE)}
    for i, p in enumerate(PASSIVE, start=1):
        rows = known[p]
        gaps[p] = np.abs(columns[p][0].sum(1) - kept.shares[rows, i]).max() / abs(SCALE)
    return gaps


def test_attributions_add_up_to_each_share(trained, federated, quadrature) -> None:
    gaps = _gaps(federated, trained["known"])
    # completeness within 1e-4 in log-odds, for every applicant and party
    assert max(gaps.values()) < 1e-4, gaps
    # which quadrature alone does not reach on this model (a kink per hidden unit crossed)
    assert max(_gaps(quadrature, trained["known"]).values()) > 1e-3


def _score(trained: dict[str, object], x: dict[str, np.ndarray]) -> np.ndarray:
    encoders, z_of, lender = trained["encoders"], trained["z_of"], trained["lender"]
    with torch.no_grad():
        e = {p: encoders[p](torch.as_tensor(x[p])) for p in PASSIVE}
        return lender(z_of(e)).numpy()


def test_top_four_columns_are_faithful(trained, federated) -> None:
    # Prepare: every applicant's columns ranked by |attribution| across the three parties
    x, known = trained["x"], trained["known"]
    columns = [("lender", j) for j in range(WIDTHS["lender"])]
    columns += [(p, j) for p in PASSIVE for j in range(WIDTHS[p])]
    values = np.zeros((ROWS, len(columns)))
    values[:, :WIDTHS["lender"]] = federated["kept"].own
    start = WIDTHS["lender"]
    for p in PASSIVE:
        block = np.zeros((ROWS, WIDTHS[p]))
        block[known[p]] = federated["columns"][p][0]
        values[:, start:start + WIDTHS[p]] = block
        start += WIDTHS[p]
    reference = {p: x[p].mean(0) for p in WIDTHS}
    score = _score(trained, x)
    rng = np.random.default_rng(1)

    def moved(picks: np.ndarray) -> np.ndarray:
        changed = {p: x[p].copy() for p in WIDTHS}
        for r in range(ROWS):
            for c in picks[r]:
                p, j = columns[c]
                changed[p][r, j] = reference[p][j]
        return np.abs(_score(trained, changed) - score)

    # Execute
    top = np.argsort(-np.abs(values), axis=1)[:, :4]
    random = np.stack([rng.choice(len(columns), 4, replace=False) for _ in range(ROWS)])
    top_moved, random_moved = moved(top).mean(), moved(random).mean()
    # Assert: the attributed columns move the logit by half as much again as random ones
    assert top_moved > 1.5 * random_moved, (top_moved, random_moved)


def test_reason_codes_rank_adverse_factors_across_parties(trained, federated) -> None:
    reasons, kept, known = federated["reasons"], federated["kept"], trained["known"]
    assert list(reasons.columns[:3]) == ["reason_1", "reason_1_text", "reason_1_points"]
    points = reasons[[f"reason_{r}_points" for r in range(1, 5)]].to_numpy()
    assert (points >= 0).all() and (np.diff(points, axis=1) <= 1e-9).all()  # ranked
    # an applicant the bureau does not know can be declined for it, never for its columns
    unknown = ~known["bureau"]
    codes = reasons.loc[unknown, [f"reason_{r}" for r in range(1, 5)]].to_numpy().ravel()
    assert not any(c.startswith("bureau.bureau_") for c in codes)
    assert any(c == "bureau.unknown" for c in codes)
    # the first reason is the applicant's most negative factor, recomputed here
    first = reasons["reason_1_points"].to_numpy()
    own_worst = np.clip(-kept.own.min(1), 0, None)
    assert (first >= own_worst - 0.005).all()  # reasons are rounded to 0.01 point
    parties = {c.split(".")[0] for c in reasons["reason_1"] if c}
    assert parties == {"lender", "bureau", "social"}  # reasons come from every party


def test_what_leaves_a_party_holds_no_feature_value(trained, federated) -> None:
    x = trained["x"]
    for p in PASSIVE:
        raw = x[p].astype(np.float32).ravel()
        for what in ("path", "columns"):
            value = federated["sent"][(p, what)]
            arrays = value.values() if isinstance(value, dict) else [value]
            for array in arrays:
                sent = np.asarray(array, dtype=np.float32).ravel()
                # no value of the party's table is among them
                assert not np.isin(sent, raw).any(), (p, what)
        shape = federated["sent"][(p, "columns")].shape
        assert shape == (int(trained["known"][p].sum()), WIDTHS[p])  # the known applicants


def test_global_table_is_computed_at_the_party(trained, federated) -> None:
    values, names = federated["columns"]["bureau"]
    table = global_table("bureau", values, names, ExplainSettings())
    assert [r["code"] for r in table][0] == "bureau.bureau_0"  # the strongest column
    assert table[0]["mean_abs_points"] == pytest.approx(float(np.abs(values[:, 0]).mean()))


def test_explain_defaults_are_in_one_place() -> None:
    # the conf group and the dataclass agree, and a bad value is refused by its key
    from pathlib import Path

    from omegaconf import OmegaConf

    from credit_fl.config import settings

    conf = OmegaConf.to_container(OmegaConf.load(
        Path(__file__).resolve().parents[1] / "conf" / "explain" / "default.yaml"))
    assert conf == {"enabled": True, "reasons": 4, "method": "exact", "steps": 128,
                    "descriptions": {}, "scorecard_reference": "maximum", "cutoff": None}
    assert ExplainSettings() == ExplainSettings(**conf)
    assert settings().explain == ExplainSettings()
    assert settings("explain.reasons=2").explain.reasons == 2
    with pytest.raises(ValueError, match="explain.method"):
        ExplainSettings(method="shap")


def test_a_party_splits_its_share_only_when_it_may() -> None:
    # an attribution leaves outside any epsilon: opted in at a node, refused by a capped one
    import dataclasses

    from credit_fl.config import settings
    from federation.releases import Release
    from fl_client.explanation import refused
    from fl_client.settings import client_settings

    plain = client_settings(settings(), "bureau", None)
    assert refused(plain) is None  # a simulated, uncapped party
    assert "max_epsilon" in str(refused(client_settings(settings("privacy.max_epsilon=5"),
                                                        "bureau", None)))
    node = dataclasses.replace(plain, opt_in=frozenset())  # a deployed node, not opted in
    assert "--release-explanations" in str(refused(node))
    assert refused(dataclasses.replace(node, opt_in=frozenset({Release.explanations}))) is None
    assert "explain.enabled" in str(refused(client_settings(
        settings("explain.enabled=false"), "bureau", None)))
