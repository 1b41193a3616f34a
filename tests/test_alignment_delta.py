"""Alignment that costs only what changed (issue 36): the second run blinds only new IDs.

The caches' intersection is compared with a full PSI's on the same sets (fresh keys, nothing
kept); the vertical ServerApp and ClientApp run twice on the unit tier's in-process grid over the
same files, then over a lender's file with new applicants.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.alignment import LenderAlignment, PartyAlignment, SetupCache
from federation.alignment_cache import AnswerCache, FoundCache, RequestCache
from tests.test_alignment_checks import _align

pytestmark = pytest.mark.unit


def _full_psi(lender: list[str], party: list[str]) -> np.ndarray:
    """Which applicants the party knows, by a PSI that keeps nothing."""
    side, other = LenderAlignment(lender), PartyAlignment("bureau", party)
    setup = other.setup(len(lender))
    request, key = side.request()
    response, party_key = other.answer(request, key)
    return side.intersect("bureau", setup, response, party_key)[1]


def _cached_psi(root: Path, lender: list[str], party: list[str]) -> tuple[np.ndarray, tuple]:
    """The same PSI through the caches: the intersection and what was computed anew."""
    key, request, blinded = RequestCache(root).request(lender)
    party_key, setup, _ = SetupCache(root, "bureau").setup(party, len(lender))
    side = PartyAlignment("bureau", party, psi_key=party_key)
    response, answered = AnswerCache(root, "bureau").answer(side, request)
    found, looked_up = FoundCache(root, "bureau").found(key, lender, setup, response)
    return found, (blinded, answered, looked_up)


def test_only_changed_ids_are_blinded_and_the_intersection_is_the_full_psis(tmp_path):
    # Prepare: 1,000 applicants, a party knowing every other one and 250 others
    lender = [f"A{i:05d}" for i in range(1_000)]
    party = lender[::2] + [f"P{i}" for i in range(250)]
    # Execute / Assert: first run, all computed; second, nothing
    found, work = _cached_psi(tmp_path, lender, party)
    assert np.array_equal(found, _full_psi(lender, party)) and work == (1_000, 1_000, 1_000)
    found, work = _cached_psi(tmp_path, lender, party)
    assert np.array_equal(found, _full_psi(lender, party)) and work == (0, 0, 0)
    # 1% new applicants (half of them known to the party), 30 gone: only the 10 new computed
    changed = lender[30:] + [f"A{i:05d}" for i in range(1_001, 1_011)]
    party = party + [f"A{i:05d}" for i in range(1_001, 1_011, 2)]
    found, work = _cached_psi(tmp_path, changed, party)
    assert np.array_equal(found, _full_psi(changed, party))
    assert work[0] == 10 and found[-10:].sum() == 5
    # (the party's set changed too: its new set has a new key, so it answers all anew)
    assert work[1:] == (len(changed), len(changed))


def test_the_lender_alone_changing_costs_only_its_new_applicants(tmp_path):
    lender = [f"A{i:05d}" for i in range(1_000)]
    party = lender[::3]
    _cached_psi(tmp_path, lender, party)
    changed = lender[5:] + ["N1", "N2", lender[0]]  # two new, five gone, one kept in place
    found, work = _cached_psi(tmp_path, changed, party)
    assert np.array_equal(found, _full_psi(changed, party))
    assert work == (2, 2, 2)  # the moved one is answered from the caches


def _counts(caplog) -> list[tuple[int, ...]]:
    texts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("alignment:")
             and "anew" in r.getMessage()]
    return [tuple(int(n) for n in re.findall(r"\b(\d+)\b", t)[:2]) for t in texts]


def test_a_second_run_on_the_same_tables_reuses_its_alignment(tmp_path, caplog):
    # Prepare: a lender and a bureau, a PSI cache of their own
    rng = np.random.default_rng(0)
    lender_ids = [f"C{i:04d}" for i in range(600)]
    bureau_ids = lender_ids[::2] + [f"X{i}" for i in range(100)]
    pd.DataFrame({"id": lender_ids, "income": rng.normal(size=600),
                  "default": rng.integers(0, 2, 600)}).to_csv(tmp_path / "lender.csv",
                                                                index=False)
    pd.DataFrame({"id": bureau_ids, "score": rng.normal(size=len(bureau_ids))}).to_csv(
        tmp_path / "bureau.csv", index=False)
    overrides = ["data=csv", f"data.parties.lender.path={tmp_path / 'lender.csv'}",
                 f"data.parties.bureau.path={tmp_path / 'bureau.csv'}", "~data.parties.social",
                 "federation.parties=[lender,bureau]", "privacy=off", "train.epochs=1",
                 "verbose=false", f"federation.psi_cache={tmp_path / 'psi'}"]
    caplog.set_level(logging.INFO, logger="credit_fl")
    # Execute
    first = _align(tmp_path / "first", overrides)
    caplog.clear()
    second = _align(tmp_path / "second", overrides)
    # Assert: the same intersection; nothing blinded, answered or looked up anew
    assert second.alignment["bureau"]["intersection"] == 300
    assert second.alignment == first.alignment | {"bureau": {
        **first.alignment["bureau"], "setup_cached": True}}
    assert _counts(caplog) == [(0, 600), (0, 600), (0, 600)]
