"""Messy IDs (issue 19, item 13): an alignment with no or few shared customers says why.

The vertical ServerApp and ClientApp run on the unit tier's in-process grid over the parties'
own CSV files, as ``data=csv`` reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_data.errors import FederationError
from credit_fl.vertical import VerticalSimulationSource, party_settings
from experiments.config import to_settings
from fl_client.vertical_app import make_vertical_client_app
from fl_server.app_factory import make_vertical_server_app
from fl_server.settings import vertical_server_settings
from fl_server.vertical_rounds import VerticalOutcome
from tests.conftest import compose_config
from tests.fake_grid import InProcessGrid, run_server_app

pytestmark = pytest.mark.unit


def _files(tmp_path: Path, lender_ids: list[str], bureau_ids: list[str]) -> list[str]:
    rng = np.random.default_rng(0)
    pd.DataFrame({"id": lender_ids, "income": rng.normal(size=len(lender_ids)),
                  "default": rng.integers(0, 2, len(lender_ids))}).to_csv(
        tmp_path / "lender.csv", index=False)
    pd.DataFrame({"id": bureau_ids, "score": rng.normal(size=len(bureau_ids))}).to_csv(
        tmp_path / "bureau.csv", index=False)
    return ["data=csv", f"data.parties.lender.path={tmp_path / 'lender.csv'}",
            f"data.parties.bureau.path={tmp_path / 'bureau.csv'}", "~data.parties.social",
            "federation.parties=[lender,bureau]", "privacy=off", "train.epochs=1",
            "verbose=false"]


def _align(tmp_path: Path, overrides: list[str]) -> VerticalOutcome:
    settings = to_settings(compose_config(overrides))
    parties = ("lender", "bureau")
    clients = party_settings(settings, parties, tmp_path / "parties")
    app = make_vertical_client_app(VerticalSimulationSource(clients, settings.data,
                                                            settings.seed))
    outcome = VerticalOutcome()
    server = vertical_server_settings(settings, parties, tmp_path)
    run_server_app(make_vertical_server_app(server, outcome), InProcessGrid(app, 2))
    return outcome


def test_ids_with_leading_zeros_at_one_party_only_fail_naming_both_shapes(tmp_path):
    # the same 400 customers, written 00007 at the lender and 7 at the bureau
    n = 400
    outcome = _align(tmp_path, _files(tmp_path, [f"{i:05d}" for i in range(1, n + 1)],
                                      [str(i) for i in range(1, n + 1)]))
    assert isinstance(outcome.error, FederationError)
    message = str(outcome.error)
    assert "bureau shares none of the lender's 400 applicants" in message
    assert "at the lender: digits, 5 characters, with leading zeros" in message
    assert "at bureau: digits, 1 to 3 characters" in message
    assert "00007" not in message and " 7 " not in message  # shapes, never an ID


def test_ids_that_differ_in_case_fail_naming_the_case(tmp_path):
    ids = [f"c{i:04d}x" for i in range(300)]
    outcome = _align(tmp_path, _files(tmp_path, ids, [i.upper() for i in ids]))
    assert isinstance(outcome.error, FederationError)
    assert "lower case" in str(outcome.error) and "upper case" in str(outcome.error)


def test_a_tiny_overlap_is_a_warning_in_the_results(tmp_path):
    lender = [f"a{i}" for i in range(400)]
    bureau = lender[:5] + [f"b{i}" for i in range(395)]  # 5 of 400 shared
    outcome = _align(tmp_path, _files(tmp_path, lender, bureau))
    assert outcome.error is None, outcome.error
    assert outcome.alignment["bureau"]["intersection"] == 5
    assert len(outcome.warnings) == 1 and "only 5 of the lender's 400" in outcome.warnings[0]


def test_the_same_id_format_with_other_numbers_is_not_called_a_different_shape(tmp_path):
    # lender IDs 1..300, bureau IDs 901..1200 (no overlap): the same format, other customers
    outcome = _align(tmp_path, _files(tmp_path, [str(i) for i in range(1, 301)],
                                      [str(i) for i in range(901, 1201)]))
    assert isinstance(outcome.error, FederationError)
    assert "shares none" in str(outcome.error) and "shapes differ" not in str(outcome.error)
