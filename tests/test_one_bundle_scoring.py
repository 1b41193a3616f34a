"""One-bundle scoring lives once (issue 31, item 3): a lender's node and the runner agree.

A horizontal model's bundle (the global model and the shared schema) scores the same
applicants to the same probabilities whether a lender scores its own table at its node
(:func:`fl_client.one_bundle_scoring.score_own_applicants`) or the runner scores the
population (:func:`credit_fl.one_bundle_scoring.score_with_bundle`): both call
:func:`fl_client.one_bundle_scoring.score_with_schema`. A scorecard bins each column as
training named it, so a node that built it without the names could not load its weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import credit_fl
from credit_data.federated_scaling import local_moments, merge_moments
from credit_data.horizontal import joined_columns
from credit_data.synthetic import generate
from credit_data.tables import PartyTable
from credit_fl.one_bundle_scoring import (
    MODEL_DIR,
    horizontal_preprocessing,
    score_with_bundle,
    write_model_bundle,
)
from federation.model import shared_model
from fl_client.one_bundle_scoring import score_own_applicants
from fl_client.settings import client_settings

pytestmark = pytest.mark.unit

LENDER = "lender-0"


@pytest.mark.parametrize("kind", ["scorecard", "mlp"])
def test_a_lender_node_and_the_runner_score_a_horizontal_bundle_alike(tmp_path, kind):
    # Prepare: a horizontal model over the lender's columns, categorical ones included
    settings = credit_fl.settings("federation=horizontal", f"model={kind}",
                                  "federation.parties=[lender]")
    population = generate(300, seed=3)
    frame, numeric, categorical = joined_columns(population, ("lender",))
    assert categorical  # one-hot columns: a scorecard's bins depend on their names
    schema = merge_moments([local_moments(frame, numeric, categorical)], numeric, categorical)
    torch.manual_seed(0)
    model = shared_model(settings.model, schema)
    write_model_bundle(tmp_path, settings, model, model_id="m", parties=("lender",),
                       preprocessing=horizontal_preprocessing(schema), metrics={},
                       privacy=None, party=LENDER)
    table = PartyTable(LENDER, frame, numeric, categorical, "lender-0.csv")
    # Execute
    node, counts = score_own_applicants(tmp_path / MODEL_DIR, table,
                                        client_settings(settings, LENDER, None))
    runner, _ = score_with_bundle(tmp_path / MODEL_DIR, population, settings)
    # Assert: the same applicants, the same probabilities, points and grades
    assert list(node["id"]) == list(runner["id"]) and len(node) == 300
    assert np.array_equal(node["probability"].to_numpy(), runner["probability"].to_numpy())
    assert node[["points", "grade"]].equals(runner[["points", "grade"]])
    assert counts["rows"] == 300 and sum(counts["grades"].values()) == 300
    # and the model's own forward pass on the schema's encoding gives them
    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(_encoded(tmp_path, frame), dtype=torch.float32)
        expected = torch.sigmoid(model(x).double().reshape(-1)).numpy()
    assert np.allclose(node["probability"].to_numpy(), expected, atol=1e-9)


def _encoded(run_dir, frame) -> np.ndarray:
    from credit_data.saved_preprocessing import SHARED_SCHEMA, SavedPreprocessing
    from models.bundle import load_bundle

    bundle = load_bundle(run_dir / MODEL_DIR)
    saved = SavedPreprocessing.from_json_dict(bundle.preprocessing[SHARED_SCHEMA])
    return saved.transform(frame, "test").x
