"""The regulator's data-usage record (issue 34): verified logs, tampering reported first."""

import json
from datetime import UTC, datetime

import pytest

from federation.audit_log import AuditLog
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
