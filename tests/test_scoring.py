"""Issue 20: scoring with the bundles a run kept, in every mode, and refusing bad input.

* Scoring a run's own test rows reproduces its predictions.csv within 1e-6: vertical (label DP
  and DP-SGD, through the Flower apps), centralized, local and horizontal.
* Each party's bundle holds its own columns only; a passive party's no label; none a row.
* A second vertical run on unchanged data takes every party's blinded set from its cache and
  trains the same model.
* Bad input (point 7): one test per class, each naming the culprit and writing nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from credit_data.errors import CreditFLError
from credit_data.synthetic import generate
from experiments.score import score_run
from federation.audit_log import verify
from tests.conftest import run_experiment


def _agree(run_dir: Path, scoring_dir: Path) -> float:
    """Largest difference between predictions.csv and the scores of the same applicants."""
    predictions = pd.read_csv(run_dir / "predictions.csv", dtype={"id": str})
    scores = pd.read_csv(scoring_dir / "scores.csv", dtype={"id": str})
    assert sorted(scores["id"]) == sorted(predictions["id"])
    both = predictions.merge(scores, on="id")
    return float((both["score"] - both["probability"]).abs().max())


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture(scope="module")
def vertical_run(vertical_pairs, tmp_path_factory):
    """A vertical run with label DP and DP-SGD (the default privacy), and its test rows scored."""
    run_dir, results = vertical_pairs["private"][0]
    out, scoring = score_run(run_dir, ["scoring.rows=test",
                                       f"scoring.out={tmp_path_factory.mktemp('s') / 'scored'}"])
    return run_dir, results, out, scoring


def test_vertical_scoring_with_label_dp_and_dpsgd_reproduces_predictions(vertical_run):
    run_dir, results, out, scoring = vertical_run
    assert results["privacy"]["mechanism"] == "label_dp+dpsgd"
    assert _agree(run_dir, out) <= 1e-6
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns)[:6] == ["id", "probability", "points", "grade", "known_bureau",
                                        "known_social"]
    assert list(scores.columns)[6:] == [f"reason_{r}{s}" for r in range(1, 5)  # issue 32
                                        for s in ("", "_text", "_points")]
    for party in ("bureau", "social"):  # the counts the server saw are the lender's table's
        assert scoring["alignment"][party]["known"] == int(scores[f"known_{party}"].sum())
        assert scoring["alignment"][party]["applicants"] == len(scores)
    assert scoring["model_id"] == results["model"]["model_id"]
    assert scoring["message_rounds"] == 7  # five, and the explanation's two (issue 32)
    # the parties' blinded sets came from their caches (built in training): scoring's work
    # grows with the applicants only
    assert all(scoring["alignment"][p]["setup_cached"] for p in ("bureau", "social"))
    assert (out / "report.md").read_text().startswith("# Scoring with")


def test_every_scoring_message_is_in_every_node_log_with_its_purpose(vertical_run):
    _, _, out, _ = vertical_run
    expected = {"lender": ["query.score_hello", "query.score_intersect", "query.score",
                           "query.explain_reasons"],
                "bureau": ["query.score_hello", "query.score_answer", "query.score_embed",
                           "query.explain_columns"]}
    for party, kinds in expected.items():
        path = out / "parties" / party / "audit.jsonl"
        verify(path)
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [line["event"] for line in lines] == kinds
        assert [line["purpose"] for line in lines] == ["scoring"] * 3 + ["explanation"]


def test_each_bundle_holds_only_what_its_party_owns(vertical_run):
    run_dir, _, _, _ = vertical_run
    population = generate(3000, seed=0)
    columns = {p: set(t.features) for p, t in population.tables.items()}
    labels = {"default_12m", "fraud"}
    for party, table in population.tables.items():
        directory = run_dir / "parties" / party / "model"
        manifest = json.loads((directory / "model.json").read_text())
        text = (directory / "preprocessing.json").read_text()
        pre = json.loads(text)
        assert list(pre) == [party]
        own = set(pre[party]["numeric"]) | set(pre[party]["categorical"])
        assert own == columns[party]
        others = set().union(*(columns[p] for p in columns if p != party))
        assert not (set(manifest["columns"]["numeric"]) | set(manifest["columns"]["categorical"])
                    ) & others
        if party != "lender":
            assert not any(label in text or label in json.dumps(manifest) for label in labels)
            assert manifest["role"] == "passive" and "calibration" not in manifest
        ids = set(table.frame.index[:200])  # no ID anywhere in the bundle
        blob = text + json.dumps(manifest)
        assert not any(f'"{i}"' in blob for i in ids)
        weights = load_file(directory / "weights.safetensors")
        n_rows = table.n_rows
        assert all(n_rows not in tuple(t.shape) for t in weights.values())  # no per-row array


def test_scoring_without_a_party_is_refused(
        vertical_run, tmp_path):
    run_dir, _, _, _ = vertical_run
    out = tmp_path / "absent"
    with pytest.raises(CreditFLError, match=r"\['social'\] trained this model but (are|is) absent"):
        score_run(run_dir, ["scoring.rows=test", f"scoring.out={out}",
                            "federation.parties=[lender,bureau]"])
    _nothing_written(out)  # scoring.missing_party=unknown: on the in-process grid below


def test_a_bundle_of_another_run_or_an_edited_one_is_refused(vertical_run, tmp_path):
    run_dir, _, _, _ = vertical_run
    other = tmp_path / "other-run"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("scored"))
    manifest_path = other / "parties" / "bureau" / "model" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model_id"] = "0" * 32  # the bureau's bundle of another training run
    manifest_path.write_text(json.dumps(manifest))
    out = tmp_path / "mixed"
    with pytest.raises(CreditFLError, match=r"bureau/model: a bundle of model 0{32}, not of "
                                            r"model [0-9a-f]{32}.*fingerprint mismatch"):
        score_run(other, ["scoring.rows=test", f"scoring.out={out}"])
    _nothing_written(out)
    manifest_path.write_text(json.dumps(manifest | {"model_id": json.loads(
        (other / "parties" / "lender" / "model" / "model.json").read_text())["model_id"]}))
    weights = other / "parties" / "social" / "model" / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(CreditFLError, match=r"social/model/weights\.safetensors: SHA-256 "
                                            r"differs from the manifest"):
        score_run(other, ["scoring.rows=test", f"scoring.out={out}"])
    _nothing_written(out)


def test_an_unchanged_second_vertical_run_reuses_the_blinded_sets_and_trains_the_same_model(
        vertical_pairs):
    (first_dir, first), (second_dir, second) = vertical_pairs["plain"]  # one PSI cache
    [(cache, listed)] = vertical_pairs["plain-cache"]
    assert Path(first["config"]["federation"]["psi_cache"]) == cache
    for party in ("bureau", "social"):
        assert first["federation"]["alignment"][party]["setup_cached"] is False
        assert second["federation"]["alignment"][party]["setup_cached"] is True
        assert len(listed[party]) == 1  # the second run wrote no set of its own
    a = pd.read_csv(first_dir / "predictions.csv")
    b = pd.read_csv(second_dir / "predictions.csv")
    pd.testing.assert_frame_equal(a, b)
    for party in ("lender", "bureau", "social"):
        wa = load_file(first_dir / "parties" / party / "model" / "weights.safetensors")
        wb = load_file(second_dir / "parties" / party / "model" / "weights.safetensors")
        assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("mode", ["centralized", "local", "horizontal"])
def test_one_bundle_modes_reproduce_their_predictions(mode, tmp_path):
    overrides = [f"federation={mode}", "data.n_customers=3000", "train.epochs=3",
                 "federation.rounds=2"]
    results = run_experiment(overrides, tmp_path / "run")
    bundles = results["model"]["bundles"]
    assert bundles["model"] == "model"
    if mode == "horizontal":  # each lender keeps the same global model and schema
        lenders = sorted(b for b in bundles if b != "model")
        assert lenders == [f"lender-{k}" for k in range(5)]
        server = load_file(tmp_path / "run" / "model" / "weights.safetensors")
        for name in lenders:
            directory = tmp_path / "run" / bundles[name]
            assert json.loads((directory / "model.json").read_text())["model_id"] == results[
                "model"]["model_id"]
            mine = load_file(directory / "weights.safetensors")
            assert all(np.array_equal(server[k], mine[k]) for k in server)
    else:
        assert bundles == {"model": "model"}
    out, scoring = score_run(tmp_path / "run", ["scoring.rows=test",
                                                f"scoring.out={tmp_path / 'scored'}"])
    assert _agree(tmp_path / "run", out) <= 1e-6
    assert scoring["model_id"] == results["model"]["model_id"]


# bad input on CSV files (a centralized model: one bundle, no federation to start) -----------

CATEGORICAL = {"lender": "[purpose,channel,region]", "bureau": "[]", "social": "[]"}


def _write_csv(directory: Path, n: int = 2_000) -> dict[str, Path]:
    population = generate(n, seed=0)
    paths = {}
    for party, table in population.tables.items():
        frame = table.frame.copy()
        if table.labels is not None:
            frame["default"] = table.labels["default_12m"].to_numpy()
        frame.index.name = "id"
        paths[party] = directory / f"{party}.csv"
        frame.to_csv(paths[party])
    return paths


def _csv_overrides(paths: dict[str, Path]) -> list[str]:
    out = ["data=csv"]
    for party, path in paths.items():
        out += [f"data.parties.{party}.path={path}",
                f"data.parties.{party}.categorical={CATEGORICAL[party]}"]
    return out


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("csv")
    paths = _write_csv(directory)
    run_dir = directory / "run"
    run_experiment(["federation=centralized", "train.epochs=2", *_csv_overrides(paths)],
                   run_dir)
    return run_dir, paths


def _new_applicants(csv_run, tmp_path, edit) -> list[str]:
    """Score a copy of the lender's file changed by ``edit`` (its label dropped)."""
    _, paths = csv_run
    frame = pd.read_csv(paths["lender"], dtype={"id": str}).drop(columns=["default"]).head(300)
    frame = edit(frame)
    new = tmp_path / "new.csv"
    frame.to_csv(new, index=False)
    return [f"data.parties.lender.path={new}"]


def _refused(csv_run, tmp_path, edit, message, extra=()) -> None:
    run_dir, _ = csv_run
    out = tmp_path / "scored"
    with pytest.raises(CreditFLError, match=message):
        score_run(run_dir, [*_new_applicants(csv_run, tmp_path, edit), *extra,
                            f"scoring.out={out}"])
    _nothing_written(out)


def test_new_applicants_without_labels_are_scored(csv_run, tmp_path):
    run_dir, _ = csv_run
    out, scoring = score_run(run_dir, [*_new_applicants(csv_run, tmp_path, lambda f: f),
                                       f"scoring.out={tmp_path / 'scored'}"])
    scores = pd.read_csv(out / "scores.csv")
    assert scoring["applicants"] == len(scores) == 300
    assert scores["probability"].between(0, 1).all() and scores["grade"].notna().all()


def test_a_column_missing_against_the_bundle_is_named(csv_run, tmp_path):
    _refused(csv_run, tmp_path, lambda f: f.drop(columns=["income"]),
             r"new\.csv: column\(s\) \['income'\] the model was trained on are missing")


def test_a_column_of_the_wrong_type_is_named(csv_run, tmp_path):
    def as_text(f):
        f["income"] = "high"
        return f
    _refused(csv_run, tmp_path, as_text, r"new\.csv: column 'income' holds non-numeric values")
    _refused(csv_run, tmp_path, lambda f: f,
             r"new\.csv: column 'income' was numeric in training but is categorical here",
             ["data.parties.lender.categorical=[purpose,channel,region,income]"])


def test_a_category_never_seen_in_training_is_scored_as_unknown_and_counted(csv_run, tmp_path):
    run_dir, _ = csv_run

    def new_region(f):
        f.loc[:9, "region"] = "atlantis"
        return f
    out, scoring = score_run(run_dir, [*_new_applicants(csv_run, tmp_path, new_region),
                                       f"scoring.out={tmp_path / 'scored'}"])
    assert scoring["unknown_categories"] == {"lender": {"region": 10}}
    assert len(pd.read_csv(out / "scores.csv")) == 300
    assert "atlantis" not in (out / "report.md").read_text()
    assert "region" in (out / "report.md").read_text()


def test_empty_input_and_duplicate_ids_are_refused(csv_run, tmp_path):
    _refused(csv_run, tmp_path, lambda f: f.head(0), r"new\.csv: file has a header but no rows")
    _refused(csv_run, tmp_path, lambda f: pd.concat([f, f.head(2)]),
             r"new\.csv: column 'id' has 2 duplicate IDs")


def test_a_setting_the_model_was_trained_with_cannot_change(csv_run, tmp_path):
    run_dir, _ = csv_run
    out = tmp_path / "scored"
    with pytest.raises(CreditFLError, match=r"'model\.hidden' cannot change at scoring"):
        score_run(run_dir, ["model.hidden=[4]", f"scoring.out={out}"])
    _nothing_written(out)


def _in_process_scoring(run_dir: Path, state: Path, bundles: dict[str, Path],
                        missing: str = "error"):
    """The scoring ServerApp and ClientApp on the in-process grid (no Ray): the server's checks."""
    from credit_fl.batch_scoring import ScoringSimulationSource
    from experiments.config import to_settings
    from fl_client.scoring_app import make_scoring_client_app
    from fl_client.settings import client_settings
    from fl_server.app_factory import make_scoring_server_app
    from fl_server.scoring_rounds import ScoringOutcome, ScoringServerSettings
    from tests.conftest import VERTICAL_SMALL, compose_config
    from tests.fake_grid import InProcessGrid, run_server_app

    settings = to_settings(compose_config([*VERTICAL_SMALL, "verbose=false"]))
    clients = {p: client_settings(settings, p, str(state)) for p in bundles}
    app = make_scoring_client_app(ScoringSimulationSource(clients, settings, bundles))
    outcome = ScoringOutcome()
    run_server_app(make_scoring_server_app(ScoringServerSettings(len(bundles), missing),
                                           outcome, state), InProcessGrid(app, len(bundles)))
    return outcome


def test_the_server_refuses_bundles_of_two_models_and_a_missing_party(vertical_pairs, tmp_path):
    # the nodes' own checks, as a deployment makes them (the simulation's driver checks first)
    run_dir, _ = vertical_pairs["private"][0]
    bundles = {p: run_dir / "parties" / p / "model" for p in ("lender", "bureau", "social")}
    other = tmp_path / "bureau-model"
    shutil.copytree(bundles["bureau"], other)
    manifest = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps(manifest | {"model_id": "f" * 32}))
    outcome = _in_process_scoring(run_dir, tmp_path / "a", bundles | {"bureau": other})
    assert re.search(r"bureau's bundle is of model f{32}, the lender's of model [0-9a-f]{32}.*"
                     r"fingerprint mismatch", str(outcome.error))
    two = {p: bundles[p] for p in ("lender", "bureau")}
    outcome = _in_process_scoring(run_dir, tmp_path / "b", two)
    assert "['social'] trained this model but are absent" in str(outcome.error)
    outcome = _in_process_scoring(run_dir, tmp_path / "c", two, missing="unknown")
    assert outcome.error is None and outcome.absent == ["social"]
    assert outcome.lender["known"] == {"bureau": outcome.alignment["bureau"]["known"],
                                       "social": 0}
