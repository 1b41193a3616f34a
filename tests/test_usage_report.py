"""The regulator's data-usage record (issue 34): verified logs, tampering reported first."""

import json
from datetime import UTC, datetime

import pytest

from federation.audit_log import AuditLog
from federation.lifetime_notes import CONTINUES
from federation.usage_report import build_report, main, render

pytestmark = pytest.mark.unit


def _node_log(tmp_path):
    path = tmp_path / "run-1" / "parties" / "bureau" / "audit.jsonl"
    log = AuditLog(path)
    log.append("consent", party="bureau", purpose="credit_training",
               dpv="https://w3id.org/dpv#ResearchAndDevelopment", rows_held=10, rows_used=8,
               consented=8, withdrawn=1, no_record=1, file_sha256="ab")
    log.append("query.psi_setup", party="bureau", purpose="training", group="",
               sent={"setup": {"bytes": 1200}}, epsilon={})
    log.append("train.embed", party="bureau", purpose="training", group="",
               sent={"train": {"bytes": 800, "dtype": "float32", "shape": [8, 25]}},
               epsilon={"bureau/embedding": 1.5})
    log.append("train.embed", party="bureau", purpose="training", group="", sent={},
               epsilon={}, refused="bureau: lender 'x' is outside this node's grant 'g'")
    return path


def test_the_record_lists_purposes_counts_what_left_and_refusals(tmp_path):
    path = _node_log(tmp_path)
    out = tmp_path / "report.json"
    assert main([str(path), "--json", str(out), "--markdown", str(tmp_path / "r.md")]) == 0
    (record,) = json.loads(out.read_text())["records"]
    assert (record["party"], record["run"], record["verified"]) == ("bureau", "run-1", True)
    assert record["consent"]["credit_training"]["rows_used"] == 8
    assert record["bytes_sent_total"] == 2000
    assert record["messages"] == {"query.psi_setup": 1, "train.embed": 2}
    assert record["epsilon_reported"] == 1.5
    assert "outside this node's grant 'g'" in record["refusals"][0]["reason"]
    page = (tmp_path / "r.md").read_text()
    assert "Record of processing (GDPR Art. 30(1))" in page and "PIPL Art. 55-56" in page
    assert "`credit_training`: 8 of 10 customers used" in page


def test_a_deployed_nodes_run_is_set_against_its_lifetime_cap(tmp_path):
    # Prepare: a deployed node's lines note its ledger (3.5 spent since its reset, 2.0 of it
    # by earlier runs) and its cap; this run's figures are cumulative: DP-SGD 0.5 then 1.0,
    # its noisy summary (composed into DP-SGD) 0.3, label DP 0.5
    path = tmp_path / "run-2" / "bureau" / "audit.jsonl"
    log = AuditLog(path)
    for figures, spent in (({"summary_epsilon": 0.3}, 2.3), ({"epsilon": 0.5}, 2.5),
                           ({"epsilon": 1.0, "label_epsilon": 0.5}, 3.5)):
        log.append("train.embed", party="bureau", purpose="training", sent={},
                   epsilon=figures, node={"lifetime_epsilon": spent, "max_epsilon": 8.0})
    uncapped = tmp_path / "run-3" / "social" / "audit.jsonl"
    AuditLog(uncapped).append("train.embed", party="social", purpose="training", sent={},
                              epsilon={"epsilon": 0.25},
                              node={"lifetime_epsilon": 0.25, "max_epsilon": "none"})
    simulated = _node_log(tmp_path)  # a simulated party notes no ledger
    # Execute
    report = build_report([path, uncapped, simulated])
    page = render(report)
    # Assert: 1.0 + 0.5 spent by the run, 3.5 of the node's 8; no cap; the simulation's figure
    records = {r["log"]: r for r in report["records"]}
    assert records[str(path)]["lifetime"] == {"run": 1.5, "spent": 3.5, "cap": 8.0}
    assert records[str(uncapped)]["lifetime"] == {"run": 0.25, "spent": 0.25, "cap": None}
    assert records[str(simulated)]["lifetime"] is None
    assert ("epsilon spent by this run 1.5; the node's lifetime budget (every run's): 3.5 of "
            "its cap 8 spent since its last reset") in page
    assert "0.25 spent since its last reset (no cap: its partner's choice)" in page
    assert ("no lifetime budget in the log (a simulated party); largest epsilon reported: "
            "1.5") in page


def test_a_tampered_log_is_reported_first_and_fails(tmp_path, capsys):
    path = _node_log(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"bytes": 800', '"bytes": 8')  # hide what left the node
    path.write_text("\n".join(lines) + "\n")
    assert main([str(path)]) == 1
    page = capsys.readouterr().out
    assert page.index("## VERIFICATION FAILED") < page.index("## bureau, run run-1")
    assert "line 3: changed" in page


def test_a_file_that_is_not_a_log_is_refused_and_nothing_written(tmp_path, capsys):
    good = _node_log(tmp_path)
    bad = tmp_path / "notes.jsonl"
    bad.write_text("customer_id,score\n1,0.3\n")
    out = tmp_path / "report.json"
    assert main([str(good), str(bad), "--json", str(out)]) == 2
    assert "notes.jsonl: line 1 is not an audit log line" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".report*")) == []


def test_a_withdrawal_after_training_lists_the_bundle_to_retrain(tmp_path):
    path = _node_log(tmp_path)  # its consent line is dated now, when the run read its rows
    consent = tmp_path / "consent.csv"
    now = datetime.now(UTC).isoformat()
    consent.write_text("customer_id,purpose,status,time,receipt_id\n"
                       "c1,credit_training,granted,2026-01-01T00:00:00Z,r1\n"
                       "c2,credit_training,granted,2026-01-01T00:00:00Z,r2\n"
                       "c3,credit_training,withdrawn,2026-01-02T00:00:00Z,r3\n"  # not used
                       f"c1,credit_training,withdrawn,{now},r4\n"  # used, withdrew since
                       f"c3,credit_training,withdrawn,{now},r5\n")  # withdrew before too
    out = tmp_path / "report.json"
    assert main([str(path), "--consent", f"bureau={consent}", "--json", str(out)]) == 0
    (record,) = json.loads(out.read_text())["records"]
    assert record["retrain"] == {"withdrawn_since_training": 1,
                                 "bundle": str(path.parent / "model")}


# review items: the report checks a deployed node's own lifetime notes ------------------------

def _deployed_log(tmp_path, run, notes, *, day=1, party="bureau"):
    """A deployed node's log of one run: one line per (spend, cap, resets) note (None: none)."""
    path = tmp_path / run / party / "audit.jsonl"
    log = AuditLog(path)
    for second, note in enumerate(notes):
        node = {} if note is None else {
            "node": {"lifetime_epsilon": note[0], "max_epsilon": note[1],
                     "lifetime_resets": note[2]}}
        log.append("train.embed", party=party, purpose="training", sent={}, epsilon={},
                   deployed=True, time=f"2026-01-{day:02d}T00:00:{second:02d}Z", **node)
    return path


def test_a_note_past_its_own_cap_fails_naming_node_line_and_figures(tmp_path, capsys):
    path = _deployed_log(tmp_path, "run-1", [(2.0, 8.0, 0), (9.5, 8.0, 0)])
    assert main([str(path)]) == 1
    captured = capsys.readouterr()
    problem = f"node bureau, {path} line 2: notes a lifetime epsilon of 9.5, past its cap 8"
    assert problem in captured.err
    assert captured.out.index("## VERIFICATION FAILED") < captured.out.index(problem)


def test_a_lifetime_spend_that_goes_down_fails_unless_a_reset_is_noted(tmp_path, capsys):
    # Prepare: run-1 (day 1) ends at 3.0; run-2 (day 2) starts at 1.0 with no reset noted;
    # run-3 (day 3) reads 0.5 after its partner's reset (resets 0 -> 1)
    first = _deployed_log(tmp_path, "run-1", [(1.0, 8.0, 0), (3.0, 8.0, 0)], day=1)
    second = _deployed_log(tmp_path, "run-2", [(1.0, 8.0, 0), (1.5, 8.0, 0)], day=2)
    reset = _deployed_log(tmp_path, "run-3", [(0.5, 8.0, 1), (0.25, 8.0, 1)], day=3)
    # Execute: the runs given in any order
    assert main([str(second), str(first)]) == 1
    err = capsys.readouterr().err
    # Assert: the drop from run-1's last line to run-2's first is named, with both figures
    assert (f"node bureau: its lifetime epsilon went down from 3 ({first} line 2) to 1 "
            f"({second} line 1) with no reset noted") in err
    # a reset in between explains a drop; a drop inside one run is named by its lines
    report = build_report([first, reset])
    assert [f["problem"] for f in report["failures"]] == [
        f"node bureau: its lifetime epsilon went down from 0.5 ({reset} line 1) to 0.25 "
        f"({reset} line 2) with no reset noted (resets 1 then 1)"]
    assert build_report([first, _deployed_log(tmp_path, "run-4", [(3.5, 8.0, 0)], day=4)])[
        "verified"]


def test_a_deployed_nodes_lines_without_a_note_do_not_read_as_a_simulation(tmp_path):
    unnoted = _deployed_log(tmp_path, "run-1", [None, None])
    partly = _deployed_log(tmp_path, "run-2", [(1.0, 8.0, 0), None], party="social")
    simulated = _node_log(tmp_path)
    report = build_report([unnoted, partly, simulated])
    page = render(report)
    records = {r["log"]: r for r in report["records"]}
    assert records[str(unnoted)]["deployed"] and not records[str(simulated)]["deployed"]
    assert records[str(partly)]["lifetime_unnoted"] == [2]
    assert page.count("(a simulated party)") == 1
    assert "no lifetime note (deployed node): its lines do not say what its ledger holds" in page
    assert "1 of its lines carry no lifetime note (deployed node; first: line 2)" in page


def _spending_log(tmp_path, run, lines, *, day, cap=5.0, party="bureau"):
    """A deployed node's log whose lines report (epsilon so far, noted lifetime, cap)."""
    path = tmp_path / run / party / "audit.jsonl"
    log = AuditLog(path)
    for second, (epsilon, spent, line_cap) in enumerate(lines):
        log.append("train.embed", party=party, purpose="training", sent={},
                   epsilon={"epsilon": epsilon}, deployed=True,
                   time=f"2026-01-{day:02d}T00:00:{second:02d}Z",
                   node={"lifetime_epsilon": spent, "max_epsilon": line_cap or cap,
                         "lifetime_resets": 0})
    return path


def test_runs_add_up_and_a_note_is_never_below_its_own_run(tmp_path, capsys):
    # Prepare (review M2): run 1 reports epsilon 1 then 3 and notes 1 then 3; run 2 reports 1
    # then 3 too but notes 3 then 3 (its ledger holds 6, past the cap 5); run 3's replies
    # report epsilon 4 and it notes a lifetime of 0
    first = _spending_log(tmp_path, "run-1", [(1.0, 1.0, None), (3.0, 3.0, None)], day=1)
    second = _spending_log(tmp_path, "run-2", [(1.0, 3.0, None), (3.0, 3.0, None)], day=2)
    zero = _spending_log(tmp_path, "run-3", [(4.0, 0.0, None)], day=3, party="social")
    # Execute
    assert main([str(first), str(second), str(zero)]) == 1
    err = capsys.readouterr().err
    # Assert: each names the node, the line and the figures
    assert (f"node bureau: {second} line 2 notes a lifetime epsilon of 3, short of the 3 noted "
            f"before it ({first} line 2) plus the 3 its run spent (6)") in err
    assert (f"node social, {zero} line 1: notes a lifetime epsilon of 0, below the 4 its "
            "run's own replies reported so far") in err
    # an honest second run adds up (1 + 3 + ... = 3 + 2 = 5 within the cap)
    honest = _spending_log(tmp_path, "run-4", [(1.0, 4.0, None), (2.0, 5.0, None)], day=4)
    assert build_report([first, honest])["verified"]


def test_a_resumed_run_adds_only_its_growth_over_the_run_it_continues(tmp_path):
    # a resumed run's figures include the run it continues (the ledger keeps both under the
    # first run's name): epsilon 1.0 then 1.5 in all adds 0.5 to the 1.0 noted before
    first = _spending_log(tmp_path, "run-1", [(1.0, 1.0, None)], day=1)
    resumed = _spending_log(tmp_path, "run-2", [(1.5, 1.5, None)], day=2)
    assert not build_report([first, resumed])["verified"]  # read as a run of its own: 2.5
    (tmp_path / "run-2" / CONTINUES).write_text("run-1")  # deployment's LIFETIME_RUN
    assert build_report([first, resumed])["verified"]


def test_a_cap_that_rises_or_goes_away_without_a_reset_fails(tmp_path):
    rises = _spending_log(tmp_path, "run-1", [(1.0, 1.0, 5.0), (1.0, 1.0, 9.0)], day=1)
    gone = _spending_log(tmp_path, "run-2", [(0.0, 1.0, "none")], day=2)
    problems = [f["problem"] for f in build_report([rises, gone])["failures"]]
    assert problems == [
        f"node bureau: its cap rose from 5 ({rises} line 1) to 9 ({rises} line 2) with no "
        "reset noted",
        f"node bureau: its cap rose from 9 ({rises} line 2) to none ({gone} line 1) with no "
        "reset noted"]
    assert build_report([_spending_log(tmp_path, "run-3", [(1.0, 1.0, 5.0), (1.0, 1.0, 4.0)],
                                       day=3)])["verified"]  # a lower cap is no failure


def test_a_line_edited_to_hold_nan_is_a_changed_line_and_the_report_still_runs(tmp_path,
                                                                             capsys):
    path = _node_log(tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"bureau/embedding": 1.5', '"bureau/embedding": NaN')
    path.write_text("\n".join(lines) + "\n")
    other = _spending_log(tmp_path, "run-2", [(1.0, 1.0, None)], day=1)
    out = tmp_path / "report.json"
    assert main([str(path), str(other), "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["failures"] == [{"log": str(path), "problem": "line 3: changed: it holds NaN, "
                                   "which no log line holds, so its content does not match "
                                   "its hash"}]
    assert len(report["records"]) == 2
