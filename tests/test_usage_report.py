"""The regulator's data-usage record (issue 34): verified logs, tampering reported first."""

import json
from datetime import UTC, datetime

import pytest

from federation.audit_log import AuditLog
from federation.usage_report import main

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
