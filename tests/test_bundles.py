"""Issue 20, points 1 and 7: a bundle runs no code when loaded and refuses edited files.

Unit tests on :mod:`models.bundle` and :mod:`credit_data.saved_preprocessing`; the bundles of
real runs are checked in ``tests/test_scoring.py``.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from credit_data.preprocessing import PartyPreprocessor
from credit_data.saved_preprocessing import SavedPreprocessing
from credit_data.settings import DataSettings, Scaler
from credit_data.synthetic import generate
from models.bundle import (
    MANIFEST,
    WEIGHTS,
    BundleError,
    load_bundle,
    sha256_of,
    write_bundle,
)

pytestmark = pytest.mark.unit

MARKER = Path("/tmp/credit-fl-pickle-payload-ran")


class Payload:
    """Unpickling this object runs code: it creates MARKER."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


def _bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "model", manifest={"model_id": "m", "party": "bureau",
                                                      "role": "passive"},
                        weights={"encoder.w": torch.arange(6.0).reshape(2, 3)},
                        preprocessing={"bureau": {"kind": "fitted"}})


def _rehash(directory: Path, name: str) -> None:
    """Make the manifest agree with an edited file, as an attacker who can write it would."""
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["files"][name] = sha256_of((directory / name).read_bytes())
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_a_bundle_reads_back_what_was_written(tmp_path):
    bundle = load_bundle(_bundle(tmp_path), party="bureau", model_id="m")
    assert torch.equal(bundle.weights["encoder.w"], torch.arange(6.0).reshape(2, 3))
    assert bundle.preprocessing == {"bureau": {"kind": "fitted"}}
    manifest = bundle.manifest
    assert manifest["format"] == 1 and manifest["libraries"]["torch"] == torch.__version__
    assert set(manifest["files"]) == {"weights.safetensors", "preprocessing.json"}


def test_a_pickle_planted_as_the_weights_is_refused_without_running(tmp_path):
    MARKER.unlink(missing_ok=True)
    directory = _bundle(tmp_path)
    buffer = io.BytesIO()
    torch.save({"encoder.w": Payload()}, buffer)  # a torch checkpoint is a pickle
    (directory / WEIGHTS).write_bytes(buffer.getvalue())
    _rehash(directory, WEIGHTS)  # even with a matching hash
    with pytest.raises(BundleError, match=r"weights\.safetensors: not a safetensors file"):
        load_bundle(directory)
    assert not MARKER.exists()  # the payload never ran
    # the payload is real: unpickling it does run it
    pickle.loads(pickle.dumps(Payload()))
    assert MARKER.exists()
    MARKER.unlink()


def test_an_extra_file_in_a_bundle_is_refused(tmp_path):
    directory = _bundle(tmp_path)
    (directory / "extra.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(BundleError, match=r"\['extra\.pkl'\] are not part of the bundle"):
        load_bundle(directory)


def test_an_edited_file_fails_its_hash(tmp_path):
    directory = _bundle(tmp_path)
    blob = bytearray((directory / WEIGHTS).read_bytes())
    blob[-1] ^= 1
    (directory / WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(BundleError, match=r"weights\.safetensors: SHA-256 differs"):
        load_bundle(directory)


def test_a_bundle_of_another_party_or_model_is_refused(tmp_path):
    directory = _bundle(tmp_path)
    with pytest.raises(BundleError, match=r"a bundle of 'bureau', not of 'social'"):
        load_bundle(directory, party="social")
    with pytest.raises(BundleError, match=r"a bundle of model m, not of model other"):
        load_bundle(directory, model_id="other")


def test_a_manifest_with_duplicate_keys_is_refused(tmp_path):
    directory = _bundle(tmp_path)
    text = (directory / MANIFEST).read_text()
    (directory / MANIFEST).write_text(text.replace('"party": "bureau"',
                                                   '"party": "bureau", "party": "lender"'))
    with pytest.raises(BundleError, match="duplicate keys"):
        load_bundle(directory)


def test_writing_replaces_a_bundle_whole(tmp_path):
    directory = _bundle(tmp_path)
    write_bundle(directory, manifest={"model_id": "m2", "party": "bureau", "role": "passive"},
                 weights={"w": torch.zeros(1)}, preprocessing={})
    assert load_bundle(directory).model_id == "m2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging left


@pytest.mark.parametrize("scaler", list(Scaler))
def test_saved_preprocessing_reproduces_the_fitted_one_exactly(scaler):
    table = generate(3_000, seed=1).tables["bureau"]
    pre = PartyPreprocessor(table.numeric, table.categorical, scaler, seed=1)
    pre.fit(table.frame.iloc[:2_000])
    saved = SavedPreprocessing.from_json_dict(json.loads(json.dumps(pre.to_json_dict())))
    assert saved.feature_names == pre.feature_names
    np.testing.assert_array_equal(saved.transform(table.frame, "b.csv").x,
                                  pre.transform(table.frame))


def test_unseen_categories_are_encoded_as_unknown_and_counted():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "c": ["x", "y", "x"]})
    pre = PartyPreprocessor(("a",), ("c",), Scaler.standard, seed=0).fit(frame)
    saved = SavedPreprocessing.from_json_dict(pre.to_json_dict())
    new = pd.DataFrame({"a": [1.0, 2.0], "c": ["z", "x"]})
    encoded = saved.transform(new, "new.csv")
    assert encoded.unknown_categories == {"c": 1}
    assert encoded.x[0, -2:].tolist() == [0.0, 0.0]  # no category column set: unknown


# scoring under embedding noise: a fresh release, accounted per applicant, capped ---------------

def _noisy_party(tmp_path: Path, max_epsilon: float | None, noise_std: float = 0.5,
                 repeat: int = 1):
    from credit_data.vertical import node_rows
    from federation.alignment import LenderAlignment
    from federation.settings import FederationSettings, Mode
    from fl_client.party_bundle import write_passive_bundle
    from fl_client.scoring_task import ScoringInput, ScoringParty
    from fl_client.settings import ClientSettings
    from fl_client.vertical_task import NodeState
    from models.networks import PartyEncoder
    from models.settings import ModelSettings, TrainSettings
    from privacy.settings import PrivacySettings

    population = generate(2_000, seed=0)
    table = population.tables["bureau"]
    rows = node_rows(table, DataSettings(n_customers=2_000), seed=0)
    model = ModelSettings(encoder_hidden=(8,), embedding_dim=4)
    privacy = PrivacySettings(embedding_epsilon=3.0, max_epsilon=max_epsilon)
    settings = ClientSettings(party="bureau", seed=0, model=model, train=TrainSettings(),
                              federation=FederationSettings(mode=Mode.vertical),
                              privacy=privacy, state_dir=str(tmp_path))
    encoder = PartyEncoder(rows.width, (8,), 4, 0.0)
    write_passive_bundle(settings, rows, "m", encoder.state_dict(), encoder_version=1,
                         noise_std=noise_std, privacy={"embedding_releases": 3})
    party = ScoringParty(settings, ScoringInput(tmp_path / "bureau" / "model", table))
    applicants = list(table.frame.index[:300]) * repeat  # a lender may repeat an ID

    def request(embeds: int = 1) -> tuple:
        lender = LenderAlignment(applicants)
        state = NodeState()
        req, key = lender.request()
        setup, response, party_key, _ = party.answer(state, req, key, len(applicants))
        sealed, _ = lender.intersect("bureau", setup, response, party_key)
        out = party.embed(state, sealed)
        for _ in range(embeds - 1):  # the same sealed list again, as a replaying server would
            out = party.embed(state, sealed)
        return out
    return request


def test_scoring_under_embedding_noise_is_a_fresh_release_accounted_per_applicant(tmp_path):
    from privacy.accounting import epsilon_of, party_delta

    request = _noisy_party(tmp_path, max_epsilon=None)
    (first, info), (second, _) = request(), request()
    assert first.shape == (300, 4)
    # fresh noise each request (from the OS), of the bundle's standard deviation
    assert np.std(first - second) == pytest.approx(0.5 * np.sqrt(2), rel=0.1)
    assert info["released_rows"] == 300
    delta = party_delta(delta=None, n_rows=generate(2_000, seed=0).tables["bureau"].n_rows)
    multiplier = 0.5 / 1.0  # noise std over the sensitivity: the clip (1.0), add/remove
    assert info["embedding_noise_multiplier"] == pytest.approx(multiplier)
    assert info["epsilon_per_new_applicant"] == pytest.approx(
        epsilon_of([(multiplier, 1.0, 1)], delta=delta))
    assert info["epsilon_per_training_customer"] == pytest.approx(
        epsilon_of([(multiplier, 1.0, 4)], delta=delta))  # three in training, one more now


def test_a_party_refuses_a_scoring_release_past_its_max_epsilon(tmp_path):
    from credit_data.errors import BudgetRefusal

    request = _noisy_party(tmp_path, max_epsilon=1.0)
    with pytest.raises(BudgetRefusal, match=r"bureau: scoring would release .* past this "
                                             r"node's max_epsilon 1\.0"):
        request()


def test_a_scoring_request_releases_each_applicant_once(tmp_path):
    from credit_data.errors import AlignmentError, BudgetRefusal

    request = _noisy_party(tmp_path / "replay", max_epsilon=None)
    with pytest.raises(BudgetRefusal, match=r"'embed' was already answered in this scoring "
                                            r"request"):
        request(embeds=2)
    request = _noisy_party(tmp_path / "twice", max_epsilon=None, repeat=2)
    with pytest.raises(AlignmentError, match=r"names 600 applicants \(300 distinct\)"):
        request()


def test_a_capped_party_sends_no_embedding_of_a_model_without_noise(tmp_path):
    from credit_data.errors import BudgetRefusal

    request = _noisy_party(tmp_path, max_epsilon=3.0, noise_std=0.0)
    with pytest.raises(BudgetRefusal, match=r"carry no noise .* outside any epsilon"):
        request()
    assert _noisy_party(tmp_path / "uncapped", max_epsilon=None, noise_std=0.0)()[0].shape == (
        300, 4)
