"""Issue 33, points 2-3: ``credit-fl monitor`` on a small vertical run's later periods.

* A stable period is ``stable`` everywhere; a downturn flags exactly the columns and parties it
  shifted (``act``) and no other, the model's PSI moves, and the exit code is 1.
* Each party's indices equal those computed centrally on the pooled period within 1e-9.
* Nothing but indices and counts leaves a party (what the server routed).
* Bad input names the file or column and writes nothing.
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
from experiments.monitor import main, monitor_run
from experiments.monitor_schema import MONITOR_KEYS
from fl_client.monitoring_task import EMBEDDING_NORM
from models.bundle import read_manifest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def run_dir(vertical_pairs) -> Path:
    return vertical_pairs["plain"][0][0]


@pytest.fixture(scope="module")
def periods(run_dir, tmp_path_factory):
    out = {}
    for shift in ("none", "downturn"):  # through the command, for its exit code
        target = tmp_path_factory.mktemp("monitor") / shift
        code = main([str(run_dir), f"monitor.out={target}", "data.period=2",
                     f"data.shift={shift}"])
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


def test_exit_code_is_one_on_act_and_zero_when_stable(periods):
    assert periods["downturn"][2] == 1
    assert periods["none"][2] == 0


def test_each_partys_indices_equal_the_central_computation(run_dir, periods):
    _, report, _ = periods["downturn"]
    settings = settings_of(run_dir, "data.period=2", "data.shift=downturn")
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


def test_a_downturn_raises_the_watch_lists_share(run_dir, tmp_path):
    from experiments.rerate import rerate_run

    shares = {}
    for shift in ("none", "downturn"):
        out, report = rerate_run(run_dir, 2, [f"rerate.out={tmp_path / shift}",
                                              f"data.shift={shift}"])
        table = pd.read_csv(out / "rerating.csv", keep_default_na=False)
        assert len(table) == report["borrowers"] == 3000
        # the report's share is the table's, recomputed from its columns
        dropped = (-table["change"] >= 40) | (table["grades_fallen"] >= 2)
        assert (table["reasons"] != "").mean() == pytest.approx(report["watch_list"]["share"])
        assert ((table["reasons"].str.contains("points_drop|grade_fall")) == dropped).all()
        matrix = pd.read_csv(out / "migration.csv", index_col=0)
        assert int(matrix.to_numpy().sum()) == len(table)
        shares[shift] = report["watch_list"]["share"]
    assert shares["downturn"] > shares["none"] + 0.05
