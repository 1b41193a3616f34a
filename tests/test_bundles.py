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
from credit_data.settings import Scaler
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
