"""Review L4: under DP a vertical scorecard's saved ``average`` reference is its noisy summary's.

A tiny three-party scorecard trains on the in-process grid under the preset (each party's
columns under DP-SGD, so preprocessed from its noisy summary). Each party's bundle saves the
``average`` reference its scoring explains against: from the noisy summary (inside its
epsilon), not the exact shares of its training split, which would leave the node outside it.
"""

from __future__ import annotations

import numpy as np
import pytest

from credit_data.loading import load_population
from credit_data.split import TRAIN, assign_split
from credit_fl.config import settings as compose_settings
from fl_client.node_noise import simulated_split_keys
from fl_client.party_bundle import AVERAGE_FROM_SUMMARY
from fl_client.scoring_task import encode_table, model_settings
from models.binned_scorecard import ScorecardEncoder, bin_shares
from models.bundle import load_bundle
from models.factory import party_encoder
from tests.in_process_runs import vertical_in_process

pytestmark = pytest.mark.engine

PARTIES = ("lender", "bureau", "social")


def test_under_dp_each_partys_saved_average_is_its_noisy_summarys(tmp_path) -> None:
    # Prepare: 600 synthetic customers, the DP preset, one epoch
    settings = compose_settings("federation=vertical", "model=scorecard", "verbose=false",
                                "privacy=label_dp_dpsgd", "data.n_customers=600",
                                "train.epochs=1", "train.min_epochs=1",
                                "train.early_stopping=false")
    # Execute
    vertical_in_process(settings, tmp_path)
    # Assert: each party's saved shares say whence, and are not its training split's exact ones
    population = load_population(settings.data, settings.seed)
    keys = simulated_split_keys(settings, population.tables)
    for party in PARTIES:
        bundle = load_bundle(tmp_path / "parties" / party / "model", party=party)
        saved = bundle.manifest["scorecard_table"]["average"]
        assert saved["from"] == AVERAGE_FROM_SUMMARY, party
        table = population.tables[party]
        train = np.flatnonzero(assign_split(table.frame.index, keys[party],
                                            settings.data.split) == TRAIN)
        x, _ = encode_table(bundle, table, train)
        encoder = party_encoder(model_settings(bundle.manifest), x.shape[1],
                                tuple(bundle.manifest["columns"]["features"]))
        assert isinstance(encoder, ScorecardEncoder)
        exact = bin_shares(encoder.layout, x)
        shares = np.asarray(saved["shares"])
        assert shares.shape == exact.shape, party
        assert np.abs(shares - exact).max() > 1e-3, party  # noisy, not the exact split's
        assert np.isfinite(shares).all() and (shares >= 0).all() and (shares <= 1).all()
