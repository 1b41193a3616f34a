"""Issue 33, points 2-3: ``credit-fl monitor`` on a small vertical run's later periods.

* A stable period is ``stable`` everywhere; a downturn flags exactly the columns and parties it
  shifted (``act``) and no other, the model's PSI moves, and the exit code is 1.
* Each party's indices equal those computed centrally on the pooled period within 1e-9.
* Nothing but indices and counts leaves a party (what the server routed).
* Bad input names the file or column and writes nothing (monitor and rerate, data=csv too).
* Several periods give one entry each and a plot over them; under a party's DP budget its
  counts are noised from the OS (not the seed) and charged to its ledger.
* Re-rating: a downturn raises the watch list's share; each watched borrower carries the new
  score's reason codes; the book as party files re-rates as the synthetic book.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from credit_data.errors import CreditFLError
from credit_data.loading import load_population
from credit_data.periods import SHIFTED_COLUMNS
from credit_data.settings import Shift
from credit_data.stability import column_index
from credit_data.synthetic import synthetic_frames
from credit_fl.config import settings_of
from credit_fl.monitor_schema import MONITOR_KEYS
from experiments.monitor import main, monitor_run
from fl_client.monitoring_task import EMBEDDING_NORM
from models.bundle import read_manifest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def run_dir(vertical_pairs) -> Path:
    return vertical_pairs["plain"][0][0]


@pytest.fixture(scope="module")
def periods(run_dir, tmp_path_factory):
    out = {}
    # through the command, for its exit code; "downturn" is a series: period 2 as it is, then
    # period 3 in a downturn (its last entry, the report's detail)
    for shift, periods in (("none", ["data.period=2", "data.shift=none"]),
                           ("downturn", ["data.period=2,3", "data.shift=none,downturn"])):
        target = tmp_path_factory.mktemp("monitor") / shift
        code = main([str(run_dir), f"monitor.out={target}", *periods])
        out[shift] = target, json.loads((target / "monitor.json").read_text()), code
    return out


def _statuses(report) -> dict[tuple[str, str], str]:
    return {(p, c): v["status"] for p, e in report["parties"].items()
            for c, v in e["columns"].items()}


def test_a_stable_period_is_stable_everywhere(periods):
    out, report, _ = periods["none"]
    assert list(report) == [key for key, _, _ in MONITOR_KEYS]  # docs/results-schema.md
    assert set(_statuses(report).values()) == {"stable"}
    assert report["model"]["status"] == "stable" and report["status"] == "stable"
    # a run without DP: exact counts, outside any epsilon
    assert {r["epsilon"] for r in report["released"].values()} == {None}
    assert {p: e["status"] for p, e in report["parties"].items()} == {
        "lender": "stable", "bureau": "stable", "social": "stable"}
    assert (out / "monitor.png").stat().st_size > 0
    estimate, outcomes = report["model"]["estimate"], report["model"]["outcomes"]
    assert estimate["trusted"] == (abs(outcomes["calibration_z"]) < 3
                                   and abs(estimate["auc"] - outcomes["auc"]) <= 0.02)
    assert ("Trusted:" if estimate["trusted"] else "**Cannot be trusted**") in (
        out / "report.md").read_text()
    assert "**stable**" in (out / "report.md").read_text()


def test_a_downturn_flags_exactly_the_shifted_columns_and_parties(periods):
    _, stable, _ = periods["none"]
    _, report, _ = periods["downturn"]
    statuses = _statuses(report)
    shifted = {(p, c) for p, cols in SHIFTED_COLUMNS[Shift.downturn].items() for c in cols}
    columns = {k: s for k, s in statuses.items() if k[1] != EMBEDDING_NORM}
    assert {k for k, s in columns.items() if s == "act"} == shifted
    assert {k for k, s in columns.items() if k not in shifted} == {
        k for k, s in columns.items() if k not in shifted and s == "stable"}
    parties = {p: e["status"] for p, e in report["parties"].items()}
    assert parties == {"lender": "act", "bureau": "act", "social": "stable"}
    assert report["model"]["score_psi"] > stable["model"]["score_psi"] + 0.05
    assert report["status"] == "act"
    outcomes = report["model"]["outcomes"]
    assert outcomes["default_rate"] > stable["model"]["outcomes"]["default_rate"]


def test_several_periods_give_one_entry_each_and_a_plot_over_them(periods):
    _, stable, _ = periods["none"]
    out, report, _ = periods["downturn"]
    assert [(e["period"]["period"], e["period"]["shift"]) for e in report["series"]] == [
        (2, "none"), (3, "downturn")]
    assert len(stable["series"]) == 1 and stable["series"][0]["parties"] == stable["parties"]
    first, last = report["series"]
    # period 2 watched in a series is period 2 watched alone; the detail is the last period's
    assert first["parties"] == stable["parties"] and first["model"] == stable["model"]
    assert (first["status"], last["status"], report["status"]) == ("stable", "act", "act")
    assert last["parties"] == report["parties"] and last["model"] == report["model"]
    assert report["released"] == {p: {k: first["released"][p][k] + last["released"][p][k]
                                      for k in ("indices", "counts")} | {"epsilon": None}
                                  for p in first["released"]}
    text = (out / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| 2 |", "| 3 (downturn) |"))]
    assert len(rows) == 2 and "| stable |" in rows[0] and "lender.income" in rows[1]
    assert (out / "monitor_series.png").stat().st_size > 0
    assert not (periods["none"][0] / "monitor_series.png").exists()


def test_exit_code_is_one_on_act_and_zero_when_stable(periods):
    assert periods["downturn"][2] == 1
    assert periods["none"][2] == 0


def test_each_partys_indices_equal_the_central_computation(run_dir, periods):
    _, report, _ = periods["downturn"]
    settings = settings_of(run_dir, "data.period=3", "data.shift=downturn")
    pooled = load_population(settings.data, settings.seed, labels=False)
    bundles = json.loads((run_dir / "results.json").read_text())["model"]["bundles"]
    compared = 0
    for party, entry in report["parties"].items():
        specs = read_manifest(run_dir / bundles[party])["stability"]["columns"]
        frame = pooled.tables[party].frame
        for column, spec in specs.items():
            central = column_index(frame[column], spec, min_count=50)
            assert abs(central.index - entry["columns"][column]["index"]) <= 1e-9
            assert list(central.current) == entry["columns"][column]["counts"]
            compared += 1
    assert compared == 6 + 3 + 8 + 9


def test_nothing_but_indices_and_counts_leaves_a_party(run_dir):
    from credit_fl.in_process import InProcessGrid, run_server_app
    from fl_client.monitoring_app import make_monitoring_client_app
    from fl_client.monitoring_task import MonitoringInput
    from fl_server.monitoring_rounds import MonitoringOutcome, make_monitoring_server_app
    from tests.routed import payload_values

    settings = settings_of(run_dir, "data.period=2")
    population = load_population(settings.data, settings.seed, labels=False)
    bundles = json.loads((run_dir / "results.json").read_text())["model"]["bundles"]
    parties = ["lender", "bureau", "social"]
    app = make_monitoring_client_app(lambda c: (
        parties[int(c.node_config["partition-id"])],
        MonitoringInput(run_dir / bundles[parties[int(c.node_config["partition-id"])]],
                        population.tables[parties[int(c.node_config["partition-id"])]])))
    grid = InProcessGrid(app, len(parties))
    outcome = MonitoringOutcome()
    run_server_app(make_monitoring_server_app(50, outcome), grid)
    assert outcome.error is None and sorted(outcome.parties) == sorted(parties)
    ids = {str(i) for t in population.tables.values() for i in t.frame.index}
    for reply in grid.received:
        values = payload_values(reply.content)
        texts = [v for v in values if isinstance(v, str)]
        assert texts == [reply.content.config_records["status"]["party"]]  # its name only
        numbers = [v for v in values if not isinstance(v, str)]
        assert all(isinstance(v, int | float) for v in numbers)
        assert not ids & {str(v) for v in values}
        party = texts[0]
        keys = set(reply.content.config_records["config"])
        columns = set(outcome.parties[party])
        assert keys == {f"{kind}.{c}" for c in columns for kind in ("index", "rows", "counts")}
        counts = [n for c in columns for n in outcome.parties[party][c]["counts"]]
        assert min(counts) >= 50  # small bins were merged before they left


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _csv(tmp_path: Path, edit) -> list[str]:
    frames = synthetic_frames(600, seed=9)
    edit(frames)
    args = ["data=csv", "data.id_column=customer_id", "data.label=default_12m",
            "data.parties.lender.categorical=[purpose,channel,region]"]
    for party, frame in frames.items():
        path = tmp_path / f"{party}.csv"
        frame.drop(columns=["default_12m"], errors="ignore").to_csv(path, index=False)
        args.append(f"data.parties.{party}.path={path}")
    return args


def test_bad_input_names_the_culprit_and_writes_nothing(run_dir, tmp_path):
    out = tmp_path / "out" / "m"
    out.parent.mkdir()
    with pytest.raises(CreditFLError, match=r"bureau\.csv: column 'utilization' of the model "
                                            "is missing"):
        monitor_run(run_dir, [f"monitor.out={out}", *_csv(
            tmp_path, lambda f: f.__setitem__("bureau", f["bureau"].drop(
                columns=["utilization"])))])
    _nothing_written(out)
    with pytest.raises(CreditFLError, match=r"lender\.csv: file has a header but no rows"):
        monitor_run(run_dir, [f"monitor.out={out}", *_csv(
            tmp_path, lambda f: f.__setitem__("lender", f["lender"].iloc[:0]))])
    _nothing_written(out)
    with pytest.raises(CreditFLError, match="not a run directory .no results.json."):
        monitor_run(tmp_path / "out", [f"monitor.out={out}"])
    _nothing_written(out)


@pytest.fixture(scope="module")
def rerated(run_dir, tmp_path_factory):
    """The book re-rated in period 2 as it is (no reason codes) and in a downturn (with them)."""
    from experiments.rerate import rerate_run

    out = {}
    for shift, explain in (("none", "false"), ("downturn", "true")):
        target = tmp_path_factory.mktemp("rerate") / shift
        out[shift] = rerate_run(run_dir, 2, [f"rerate.out={target}", f"data.shift={shift}",
                                             f"explain.enabled={explain}"])
    return out


def test_a_downturn_raises_the_watch_lists_share(rerated):
    shares = {}
    for shift, (out, report) in rerated.items():
        table = pd.read_csv(out / "rerating.csv", keep_default_na=False)
        assert len(table) == report["borrowers"] == 3000
        # the report's share is the table's, recomputed from its columns
        dropped = (-table["change"] >= 40) | (table["grades_fallen"] >= 2)
        assert (table["reasons"] != "").mean() == pytest.approx(report["watch_list"]["share"])
        assert ((table["reasons"].str.contains("points_drop|grade_fall")) == dropped).all()
        matrix = pd.read_csv(out / "migration.csv", index_col=0)
        assert int(matrix.to_numpy().sum()) == len(table)
        assert report["watch_list"]["by_reason"]["listed"] == 0  # the model asks no holder
        shares[shift] = report["watch_list"]["share"]
    assert shares["downturn"] > shares["none"] + 0.05


def test_each_watched_borrower_carries_the_new_scores_reason_codes(rerated):
    out, report = rerated["downturn"]
    table = pd.read_csv(out / "rerating.csv", keep_default_na=False)
    watched = table[table["reasons"] != ""]
    assert len(watched) == report["watch_list"]["borrowers"] > 0
    parties = ("lender.", "bureau.", "social.")
    # every watched borrower's first code names a party's column, and costs points
    assert watched["reason_1"].str.startswith(parties).all()
    assert (watched["reason_1_points"].astype(float) > 0).all()
    first = watched["reason_1"].value_counts()
    assert report["watch_list"]["first_reason_codes"] == {
        str(k): int(v) for k, v in first.head(5).items()}
    assert f"`{first.index[0]}` {int(first.iloc[0]):,}" in (out / "report.md").read_text()
    assert not [c for c in pd.read_csv(rerated["none"][0] / "rerating.csv").columns
                if c.startswith("reason_")]  # explain.enabled=false: no codes


BOOK_ROWS = 500
"""The borrowers written as files: the first of the book (each borrower is scored alone)."""


def _book_files(run_dir: Path, folder: Path, period: int) -> dict[str, Path]:
    """Write part of the synthetic book of ``period`` as one CSV per party (a period as files)."""
    from credit_data.periods import book
    from credit_fl.monitoring import frames_of

    settings = settings_of(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    population = book(settings.data.n_customers, settings.seed, settings.data.synthetic,
                      period=period, shift=Shift.none)
    paths = {}
    frames = frames_of(population, "customer_id")
    ids = set(frames["lender"]["customer_id"].iloc[:BOOK_ROWS])
    for party, frame in frames.items():
        paths[party] = folder / f"{party}.csv"
        frame[frame["customer_id"].isin(ids)].to_csv(paths[party], index=False)
    return paths


CSV = ["data=csv", "data.id_column=customer_id", "data.label=default_12m",
       "data.parties.lender.categorical=[purpose,channel,region]", "explain.enabled=false"]


def test_rerate_from_party_files_equals_the_synthetic_book(run_dir, rerated, tmp_path):
    from experiments.rerate import rerate_run

    _book_files(run_dir, tmp_path / "p1", 1)
    now = _book_files(run_dir, tmp_path / "p2", 2)
    out, report = rerate_run(run_dir, 2, [
        f"rerate.out={tmp_path / 'csv'}", f"rerate.previous={tmp_path / 'p1'}", *CSV,
        *(f"data.parties.{p}.path={path}" for p, path in now.items())])
    synthetic = pd.read_csv(rerated["none"][0] / "rerating.csv", keep_default_na=False)
    files = pd.read_csv(out / "rerating.csv", keep_default_na=False)
    synthetic = synthetic.iloc[:BOOK_ROWS].reset_index(drop=True)  # the same borrowers
    assert list(files.columns) == list(synthetic.columns) and len(files) == BOOK_ROWS
    assert (files["id"] == synthetic["id"]).all() and (files["reasons"] == synthetic[
        "reasons"]).all()
    for column in ("points_previous", "points"):
        assert float((files[column] - synthetic[column]).abs().max()) <= 1e-3
    assert report["watch_list"]["borrowers"] == int((synthetic["reasons"] != "").sum())
    # the same period's files monitored: the book aged a year, its ages moved, not its mix
    _, watched = monitor_run(run_dir, [f"monitor.out={tmp_path / 'monitored'}", *CSV,
                                       *(f"data.parties.{p}.path={path}"
                                         for p, path in now.items())])
    assert (watched["period"]["source"], watched["period"]["period"]) == ("files", None)
    columns = watched["parties"]["social"]["columns"]
    assert columns["account_age_months"]["status"] == "act"
    assert {watched["parties"]["lender"]["columns"][c]["status"]
            for c in ("purpose", "channel", "region")} == {"stable"}


def test_rerate_bad_input_names_the_culprit_and_writes_nothing(run_dir, tmp_path):
    from experiments.rerate import rerate_run

    _book_files(run_dir, tmp_path / "p1", 1)
    now = _book_files(run_dir, tmp_path / "p2", 2)
    out = tmp_path / "out" / "r"
    out.parent.mkdir()

    def rerate(party: str | None = None, edit=None, *extra: str) -> None:
        paths = dict(now)
        if party is not None:  # this party's file of the period, edited
            paths[party] = tmp_path / f"bad-{party}.csv"
            edit(pd.read_csv(now[party])).to_csv(paths[party], index=False)
        rerate_run(run_dir, 2, [f"rerate.out={out}", f"rerate.previous={tmp_path / 'p1'}",
                                *CSV, *extra,
                                *(f"data.parties.{p}.path={path}" for p, path in paths.items())])

    with pytest.raises(CreditFLError, match=r"bad-bureau\.csv: column 'utilization' of the "
                                            "model is missing"):
        rerate("bureau", lambda f: f.drop(columns=["utilization"]))
    _nothing_written(out)
    with pytest.raises(CreditFLError, match=r"bad-social\.csv: column 'extra' is not one the "
                                            "model was trained with"):
        rerate("social", lambda f: f.assign(extra=1.0))
    _nothing_written(out)
    with pytest.raises(CreditFLError, match=r"bad-lender\.csv: file has a header but no rows"):
        rerate("lender", lambda f: f.iloc[:0])
    _nothing_written(out)
    with pytest.raises(CreditFLError, match=r"rerate\.previous=.*: not a directory"):
        rerate(None, None, f"rerate.previous={tmp_path / 'absent'}")
    _nothing_written(out)
    with pytest.raises(CreditFLError, match="not a run directory .no results.json."):
        rerate_run(tmp_path / "p1", 2, [f"rerate.out={out}"])
    _nothing_written(out)


def test_under_dp_the_counts_are_noised_from_the_os_and_charged(vertical_pairs, tmp_path):
    import dataclasses
    import shutil

    from federation.lifetime_budget import LifetimeBudget
    from fl_client.monitoring_task import MonitoringInput, party_indices

    private = tmp_path / "private"  # a copy: the session's runs are never changed
    shutil.copytree(vertical_pairs["private"][0][0], private)
    settings = settings_of(private, "data.period=2")
    population = load_population(settings.data, settings.seed, labels=False)
    bundles = json.loads((private / "results.json").read_text())["model"]["bundles"]
    ledger = tmp_path / "bureau-state"
    data = MonitoringInput(private / bundles["bureau"], population.tables["bureau"], 1.0, ledger)
    exact = party_indices(dataclasses.replace(data, epsilon=None), "bureau", min_count=50)
    # a deployed node's own floor (--monitor-min-count): a request's smaller min_count is raised
    floored = party_indices(dataclasses.replace(data, epsilon=None, min_count=400), "bureau",
                            min_count=1)
    asked = party_indices(dataclasses.replace(data, epsilon=None), "bureau", min_count=400)
    assert [floored[c].current for c in floored] == [asked[c].current for c in asked]
    assert min(min(floored[c].current) for c in floored) >= 400
    first, second = (party_indices(data, "bureau", min_count=50) for _ in range(2))
    # the same rows and the same config seed: the noise differs (from the OS, not the seed)
    assert [first[c].current for c in first] != [second[c].current for c in second]
    assert [first[c].current for c in first] != [exact[c].current for c in exact]
    scale = 2 * len(exact) / 1.0  # Laplace on each count: histograms / (epsilon / 2)
    for column, value in exact.items():
        assert abs(first[column].rows - value.rows) <= 12 * scale * 6  # within 12 scales a bin
        assert min(first[column].current) >= 50  # merged after the noise
    # charged: one spend line per request in the party's lifetime ledger
    spends = LifetimeBudget.of(ledger, None).runs()
    assert sorted(v["monitoring_epsilon"] for v in spends.values()) == [1.0, 1.0]
    # the command: every party of a DP run noises and charges monitor.epsilon per period
    out, report = monitor_run(private, [f"monitor.out={tmp_path / 'm'}", "monitor.epsilon=0.5",
                                        "data.period=2"])
    assert {p: r["epsilon"] for p, r in report["released"].items()} == {
        "lender": 0.5, "bureau": 0.5, "social": 0.5}
    for party in ("lender", "bureau", "social"):
        state = (private / bundles[party]).parent
        assert LifetimeBudget.of(state, None).spent() == pytest.approx(0.5)
    assert "noised their counts" in (out / "report.md").read_text()
