"""Issue 32, item 1: the binned scorecard's bins, points, monotonicity and reason codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import ndtri

from credit_data.errors import ConfigError
from credit_data.preprocessing import PartyPreprocessor
from credit_data.settings import Scaler
from models.binned_scorecard import (
    BinLayout,
    ScorecardEncoder,
    ScorecardModel,
    applicant_points,
    model_tables,
    scorecard_reasons,
    value_edges,
)
from models.factory import build_model
from models.scorecard import points
from models.scorecard_reasons import column_points, ranked_reasons, reference_points
from models.settings import ModelKind, ModelSettings, ScorecardSettings, TrainSettings
from models.training import fit, predict_proba

pytestmark = pytest.mark.unit

CARD = ScorecardSettings()


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Two numeric columns (one with gaps, one U-shaped in risk) and a categorical one."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rng.uniform(-2, 2, size=n)
    c = rng.choice(["x", "y", "z"], size=n, p=[0.5, 0.4, 0.1])
    logit = -1.0 + 1.2 * a + 0.8 * (b ** 2 - 1.3) + np.where(c == "z", 1.0, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    frame = pd.DataFrame({"a": np.where(rng.random(n) < 0.1, np.nan, a), "b": b, "c": c})
    return frame, y


def _encoded(n: int = 3000, seed: int = 0):
    frame, y = _frame(n, seed)
    pre = PartyPreprocessor(("a", "b"), ("c",), Scaler.quantile, seed=0)
    x = pre.fit_transform(frame)
    return frame, x, y, pre


def _trained(monotone: dict[str, str] | None = None, epochs: int = 20):
    frame, x, y, pre = _encoded()
    settings = ModelSettings(kind=ModelKind.scorecard, bins=5, monotone=monotone or {})
    model = build_model(settings, {"lender": x.shape[1]}, {"lender": pre.feature_names})
    train = TrainSettings(epochs=epochs, lr=0.05, early_stopping=False)
    fit(model, x[:2000], y[:2000], x[2000:], y[2000:], train, seed=0)
    return model, frame, x, y, pre


@pytest.fixture(scope="module")
def trained():
    return _trained()


def test_bins_are_quantiles_of_the_training_rows_with_missing_in_a_bin_of_its_own():
    # Prepare
    frame, x, _, pre = _encoded()
    layout = BinLayout.of(pre.feature_names, bins=5)
    # Execute
    hot = layout.one_hot(torch.as_tensor(x)).numpy()
    # Assert: every row in exactly one bin per column; column b: 5 bins of 20% of the rows;
    # column a: its missing bin holds exactly its gaps
    names = layout.bin_names()
    a = [i for i, (col, _) in enumerate(names) if col == "a"]
    b = [i for i, (col, _) in enumerate(names) if col == "b"]
    assert [names[i][1] for i in a][-1] == "missing" and len(b) == 5
    assert np.all(hot[:, a].sum(1) == 1)
    gaps = frame["a"].isna().to_numpy()
    assert np.array_equal(hot[:, a[-1]] == 1, gaps)
    assert hot[:, b].mean(0) == pytest.approx([0.2] * 5, abs=0.005)
    c = [names[i][1] for i, (col, _) in enumerate(names) if col == "c"]
    assert sorted(c) == ["x", "y", "z"]
    assert hot.sum(1).tolist() == [3.0] * len(x)


def test_a_party_that_does_not_know_the_applicant_fills_no_bin():
    layout = BinLayout.of(("a", "c=x", "present"), bins=4)
    hot = layout.one_hot(torch.tensor([[0.3, 1.0, 1.0], [0.0, 0.0, 0.0]])).numpy()
    assert hot[0].sum() == 3 and hot[1].sum() == 0
    with pytest.raises(ConfigError, match="model.monotone.a"):
        BinLayout.of(("a",), monotone={"a": "up"})


def test_an_applicants_points_are_the_offset_plus_its_bins_points(trained):
    # Prepare: the table as the bundle keeps it, and each applicant's bins found apart
    model, frame, x, _, pre = trained
    tables = model_tables(model, CARD, {"lender": pre.to_json_dict()})
    table = {(r["column"], r["bin"]): r["points"] for r in tables["parties"]["lender"]}
    cuts = ndtri(np.arange(1, 5) / 5)
    # Execute: the score's own points, from the model's probability
    score = points(predict_proba(model, x), CARD)
    # Assert
    for i in range(0, len(x), 97):
        total = tables["intercept_points"]
        for j, column in enumerate(("a", "b")):
            bin_ = ("missing" if column == "a" and np.isnan(frame["a"].iloc[i])
                    else f"q{int(np.searchsorted(cuts, x[i, j], side='right')) + 1}/5")
            total += table[(column, bin_)]
        total += table[("c", frame["c"].iloc[i])]
        assert abs(total - score[i]) < 1.0, i


def test_bin_edges_in_the_columns_own_units_are_its_training_quantiles():
    frame, _, _, pre = _encoded()
    edges = value_edges(pre.to_json_dict(), ndtri(np.arange(1, 5) / 5))
    assert edges["b"] == pytest.approx(np.nanquantile(frame["b"], [0.2, 0.4, 0.6, 0.8]),
                                       abs=0.02)


def test_a_monotone_column_gets_monotone_points_and_an_unconstrained_one_need_not(trained):
    # Prepare: b's risk is U-shaped
    free = trained[0]
    tied, *_ = _trained({"b": "increasing"})

    def b_points(model):
        rows = model_tables(model, CARD, {})["parties"]["lender"]
        return np.array([r["points"] for r in rows if r["column"] == "b"])

    # Assert: risk increasing = points never rising with the value
    assert np.all(np.diff(b_points(tied)) <= 1e-6)
    assert np.any(np.diff(b_points(free)) > 5.0)


def test_points_below_maximum_rank_the_columns_that_cost_most(trained):
    # Prepare
    model, _, x, _, _ = trained
    score = points(predict_proba(model, x), CARD)
    # Execute
    reasons = scorecard_reasons(model, x, score, CARD, reasons=2, method="maximum",
                                cutoff=None, descriptions={"lender.b": "Balance"})
    # Assert against the table worked out by hand: each column's best bin less the own bin's
    encoder = model.encoders["lender"]
    per_bin = applicant_points(encoder, x, CARD)
    columns = [c for c, _ in encoder.layout.bin_names()]
    best = {c: per_bin[:, [k for k, cc in enumerate(columns) if cc == c]].max() for c in
            ("a", "b", "c")}
    for i in range(0, len(x), 131):
        own = {c: per_bin[i, [k for k, cc in enumerate(columns) if cc == c]].sum()
               for c in ("a", "b", "c")}
        lost = sorted(((best[c] - own[c], c) for c in own), reverse=True)
        assert reasons.loc[i, "reason_1_points"] == pytest.approx(lost[0][0], abs=0.01)
        assert reasons.loc[i, "reason_1"] == f"lender.{lost[0][1]}"
        if lost[0][1] == "b":
            assert reasons.loc[i, "reason_1_text"] == "Balance"


def test_against_the_applicants_just_above_the_cutoff():
    # Prepare: two columns; four applicants, two of them just above a cut-off of 600
    table = np.array([10.0, 0.0, 4.0, -6.0])
    columns = ["a", "a", "b", "b"]
    per_bin = np.array([[10, 0, 4, 0], [0, 0, 0, -6], [10, 0, 0, -6], [0, 0, 4, 0]], float)
    per_column, names = column_points(per_bin, columns)
    score = np.array([650.0, 550.0, 605.0, 610.0])
    # Execute
    ref = reference_points(table, columns, "average", per_column, (score >= 600) & (score < 620))
    out = ranked_reasons([(ref[None, :] - per_column, [("l.a", "a"), ("l.b", "b")])], 2)
    # Assert: the reference is the mean of applicants 3 and 4: a 5, b -1
    assert ref.tolist() == [5.0, -1.0] and names == ["a", "b"]
    assert out.loc[1, "reason_1"] == "l.a" and out.loc[1, "reason_1_points"] == 5.0
    assert out.loc[1, "reason_2"] == "l.b" and out.loc[1, "reason_2_points"] == 5.0
    assert out.loc[0, "reason_1"] == "" or out.loc[0, "reason_1_points"] > 0
    assert out.loc[0, "reason_1"] == ""  # better than the reference in every column


def test_a_split_scorecard_is_the_sum_of_its_parties_partial_scores():
    layouts = {"lender": BinLayout.of(("a", "c=x"), bins=3),
               "bureau": BinLayout.of(("d", "present"), bins=3)}
    model = ScorecardModel(layouts)
    with torch.no_grad():
        for enc in model.encoders.values():
            enc.embed.weight.normal_()
        model.head.bias.fill_(0.3)
    x = torch.randn(6, 4)
    x[:, 3] = torch.tensor([1.0, 0, 1, 0, 1, 1])
    parts = [model.encoders["lender"](x[:, :2]), model.encoders["bureau"](x[:, 2:])]
    assert torch.allclose(model(x), (parts[0] + parts[1]).squeeze(-1) + 0.3)
    assert not model.head.weight.requires_grad
    assert isinstance(model.encoders["bureau"], ScorecardEncoder)


def test_a_centralized_scorecard_keeps_its_tables_and_scores_with_reasons(tmp_path):
    # Prepare: a small centralized run keeps its bundle
    from credit_data.loading import load_population
    from credit_fl.baselines import run_baseline
    from credit_fl.config import settings as compose_settings
    from credit_fl.one_bundle_scoring import score_with_bundle
    from models.bundle import load_bundle

    settings = compose_settings("federation=centralized", "model=scorecard", "verbose=false",
                                "data.n_customers=1000", "train.epochs=3",
                                "+explain.descriptions.utilization=Utilization")
    population = load_population(settings.data, settings.seed)
    run_baseline(settings, tmp_path, population)
    # Execute
    scores, _ = score_with_bundle(tmp_path / "model", population, settings)
    # Assert: every party's table, in points; four reasons, each a column of the model that
    # cost points (ranked), described from the table where it has a description
    tables = load_bundle(tmp_path / "model").manifest["scorecard_table"]
    assert set(tables["parties"]) == {"lender", "bureau", "social"}
    columns = {f"{p}.{r['column']}" for p, rows in tables["parties"].items() for r in rows}
    for r in range(1, 5):
        given = scores[f"reason_{r}"] != ""
        assert set(scores.loc[given, f"reason_{r}"]) <= columns
        assert (scores.loc[given, f"reason_{r}_points"] > 0).all()
    assert (scores["reason_1_points"] >= scores["reason_2_points"]).all()
    assert (scores["reason_1"] != "").mean() > 0.9
    util = scores["reason_1"] == "bureau.utilization"
    assert (scores.loc[util, "reason_1_text"] == "Utilization").all()


def test_points_below_maximum_count_a_flags_and_a_categorys_bin_of_zero():
    # Prepare: a numeric column, a category (x, y; a merged one sets neither) and a hit flag
    # (input3), each of x, y and the flag costlier than not having it: its best bin is the
    # implicit one, of 0 points
    from models.binned_scorecard import factor_offset

    model = ScorecardModel({"lender": BinLayout.of(("a", "c=x", "c=y"), bins=2, width=4)})
    with torch.no_grad():  # bins: a q1, a q2, c=x, c=y, input3 (log-odds of default)
        model.encoders["lender"].embed.weight.copy_(torch.tensor([[0.0, 0.0, 0.5, 0.2, 1.0]]))
    x = np.array([[0.5, 1.0, 0.0, 1.0], [0.5, 0.0, 0.0, 0.0]], dtype=np.float32)
    factor, _ = factor_offset(CARD)
    # Execute
    reasons = scorecard_reasons(model, x, points(predict_proba(model, x), CARD), CARD,
                                reasons=3, method="maximum", cutoff=None, descriptions={})
    # Assert: the flagged applicant lost the flag's and its category's points; the other none
    assert reasons.loc[0, ["reason_1", "reason_2", "reason_3"]].tolist() == [
        "lender.input3", "lender.c", ""]
    assert reasons.loc[0, "reason_1_points"] == pytest.approx(factor * 1.0, abs=0.01)
    assert reasons.loc[0, "reason_2_points"] == pytest.approx(factor * 0.5, abs=0.01)
    assert reasons.loc[1, "reason_1"] == ""


def test_with_its_penalty_the_scorecard_converges_to_sklearns_logistic_regression():
    # model.l2 is scikit-learn's 1/C on the summed log-loss: the bins' weight decay is l2/rows
    # and the intercept is not penalized, so full-batch training reaches the same optimum
    from sklearn.linear_model import LogisticRegression

    # Prepare
    _, x, y, pre = _encoded()
    settings = ModelSettings(kind=ModelKind.scorecard, bins=5, l2=10.0)
    model = build_model(settings, {"lender": x.shape[1]}, {"lender": pre.feature_names})
    hot = model.encoders["lender"].layout.one_hot(torch.as_tensor(x)).numpy()
    # Execute
    train = TrainSettings(epochs=150, batch_size=2000, min_steps_per_epoch=1, lr=0.1,
                          early_stopping=False)
    fit(model, x[:2000], y[:2000], x[2000:], y[2000:], train, seed=0)
    reference = LogisticRegression(C=1 / settings.l2, max_iter=5000, tol=1e-10).fit(
        hot[:2000], y[:2000])
    # Assert: the same bin weights and intercept (an unpenalized fit's differ by far more)
    weights = model.encoders["lender"].embed.weight.detach().numpy()[0]
    assert np.abs(weights - reference.coef_[0]).max() < 5e-3
    assert float(model.head.bias.detach()[0]) == pytest.approx(reference.intercept_[0], abs=5e-3)
    loose = LogisticRegression(C=1e4, max_iter=5000).fit(hot[:2000], y[:2000])
    assert np.abs(loose.coef_[0] - reference.coef_[0]).max() > 0.05


def test_the_horizontal_lenders_average_step_is_a_gradient_step_on_the_union():
    # a horizontal scorecard's round: each lender takes a full-batch gradient step with the
    # penalty spread over the union's rows; FedAvg (weighted by rows) of those steps is exactly
    # one step on the union's penalized loss (Adam's mini-batches, the networks' round, are
    # not: on label-skewed lenders the union's loss rose round after round)
    from models.local_training import gradient_steps

    # Prepare: 900 rows over three lenders of 90, 270 and 540 rows, default rates skewed
    _, x, y, pre = _encoded(900)
    order = np.argsort(-y, kind="stable")  # defaulters first: the small lender gets most
    cuts = np.split(order, [90, 360])
    settings = ModelSettings(kind=ModelKind.scorecard, bins=5, l2=10.0)

    def fresh():
        return build_model(settings, {"lender": x.shape[1]}, {"lender": pre.feature_names})

    start = {k: v + 0.1 for k, v in fresh().state_dict().items()}

    def union_loss(state):
        model = fresh()
        model.load_state_dict(state)
        with torch.no_grad():
            w = model.encoders["lender"].embed.weight
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(torch.as_tensor(x)), torch.as_tensor(y, dtype=torch.float32))
            return float(loss + settings.l2 / len(y) / 2 * (w ** 2).sum())

    def fedavg(local):
        states, rows = [], []
        for part in cuts:
            model = fresh()
            model.load_state_dict(start)
            local(model, x[part], y[part])
            states.append(model.state_dict())
            rows.append(len(part))
        return {k: sum(n * s[k] for n, s in zip(rows, states, strict=True)) / sum(rows)
                for k in start}

    # Execute: one round of each, and one step on the union in one process
    stepped = fedavg(lambda m, xs, ys: gradient_steps(m, xs, ys, steps=1, lr=1.0,
                                                      penalty_rows=len(y)))
    union = fresh()
    union.load_state_dict(start)
    gradient_steps(union, x, y, steps=1, lr=1.0, penalty_rows=len(y))
    # Assert: the same weights to float precision, and a lower loss on the union; with the
    # penalty spread over each lender's own rows (its count of lenders times too strong) not
    own = fedavg(lambda m, xs, ys: gradient_steps(m, xs, ys, steps=1, lr=1.0,
                                                  penalty_rows=len(ys)))
    for key, value in union.state_dict().items():
        assert torch.allclose(stepped[key], value, atol=1e-5), key
    assert union_loss(stepped) < union_loss(start)
    weight = "encoders.lender.embed.weight"
    assert not torch.allclose(own[weight], union.state_dict()[weight], atol=1e-4)
