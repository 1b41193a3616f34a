"""Consent records per customer (issue 34): read, check, the latest record, the gate."""

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from credit_data.consent import (
    PURPOSES,
    check_records,
    consent_counts,
    consented,
    read_records,
    withdrawn_since,
)
from credit_data.errors import DataError
from credit_data.tables import PartyTable
from federation.audit_log import verify
from federation.run_settings import RunSettings
from fl_client.consent_gate import consent_decision, gate_table
from fl_client.settings import client_settings

pytestmark = pytest.mark.unit

HEADER = "customer_id,purpose,status,time,receipt_id\n"


def _write(tmp_path, lines, header=HEADER, name="consent.csv"):
    path = tmp_path / name
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


def _table(ids):
    frame = pd.DataFrame({"x": range(len(ids))}, index=pd.Index(ids, dtype=object))
    return PartyTable("bureau", frame, ("x",), (), "bureau.csv")


def test_every_purpose_maps_to_a_dpv_term():
    assert set(PURPOSES) >= {"credit_training", "credit_scoring", "fraud_check", "monitoring"}
    assert all(iri.startswith("https://w3id.org/dpv#") for iri in PURPOSES.values())


def test_the_latest_record_per_customer_and_purpose_counts(tmp_path):
    path = _write(tmp_path, [
        "C1,credit_training,granted,2026-01-01T00:00:00Z,r1",
        "C1,credit_training,withdrawn,2026-03-01T00:00:00Z,r2",  # withdrawn later
        "C2,credit_training,withdrawn,2026-01-01T00:00:00Z,r3",
        "C2,credit_training,granted,2026-02-01T00:00:00Z,r4",  # granted again
        "C3,credit_scoring,granted,2026-01-01T00:00:00Z,r5",  # another purpose only
        "C4,credit_training,granted,2026-05-01T00:00:00+08:00,r6",
        "C4,credit_training,withdrawn,2026-04-30T17:00:00Z,r7",  # 1 h after r6 in UTC
    ])
    records = read_records(path, "customer_id")
    assert consented(records, "credit_training") == {"C2"}
    assert consented(records, "credit_scoring") == {"C3"}
    counts = consent_counts(records, "credit_training", ["C1", "C2", "C3", "C4", "C5"])
    assert counts == {"consented": 1, "withdrawn": 2, "no_record": 2}
    assert withdrawn_since(records, "credit_training", ["C1", "C2", "C4"],
                           datetime(2026, 2, 15, tzinfo=UTC)) == ["C1", "C4"]


@pytest.mark.parametrize(("lines", "header", "message"), [
    (["C1,credit_marketing,granted,2026-01-01,r1"], HEADER,
     r"consent.csv: column 'purpose', line 2: unknown purpose \('credit_marketing'\)"),
    (["C1,credit_training,granted,2999-01-01,r1"], HEADER,
     r"column 'time', line 2: dated in the future"),
    (["C1,credit_training,granted,yesterday,r1"], HEADER,
     r"column 'time', line 2: not an ISO 8601 time"),
    (["C1,credit_training,maybe,2026-01-01,r1"], HEADER, r"column 'status', line 2"),
    (["C1,credit_training,granted,2026-01-01,"], HEADER, r"column 'receipt_id', line 2"),
    (["C1,credit_training,granted,2026-01-01"], "customer_id,purpose,status,time\n",
     r"consent.csv: consent file has no column 'receipt_id'"),
])
def test_bad_records_are_named_by_file_column_and_line(tmp_path, lines, header, message):
    with pytest.raises(DataError, match=message):
        read_records(_write(tmp_path, lines, header), "customer_id")


def test_ids_in_another_format_than_the_table_are_refused(tmp_path):
    path = _write(tmp_path, ["00007,credit_training,granted,2026-01-01,r1",
                             "00008,credit_training,granted,2026-01-01,r2"])
    with pytest.raises(DataError, match=r"consent.csv: column 'customer_id': none of its IDs "
                                        r"is in bureau.csv.*leading zeros"):
        consent_decision(_table(["7", "8", "9"]), str(path), "credit_training", "customer_id")


def test_the_gate_keeps_consenting_customers_and_logs_counts_once(tmp_path):
    path = _write(tmp_path, ["7,credit_training,granted,2026-01-01,r1",
                             "8,credit_training,withdrawn,2026-01-01,r2",
                             "8,credit_scoring,granted,2026-01-01,r3"])
    settings = client_settings(RunSettings(), "bureau", str(tmp_path / "state"))
    table = _table(["7", "8", "9"])
    for _ in range(2):  # every message reads the rows; the log gets one line
        kept = gate_table(table, str(path), "credit_training", "customer_id", settings)
    assert list(kept.frame.index) == ["7"]
    log = tmp_path / "state" / "bureau" / "audit.jsonl"
    lines = [json.loads(t) for t in log.read_text().splitlines()]
    assert [e["event"] for e in lines] == ["consent"]
    assert {k: lines[0][k] for k in ("purpose", "rows_held", "rows_used", "consented",
                                     "withdrawn", "no_record")} == {
        "purpose": "credit_training", "rows_held": 3, "rows_used": 1, "consented": 1,
        "withdrawn": 1, "no_record": 1}
    assert verify(log).ok
    # scoring is another purpose: customer 8 consented to it
    scored = gate_table(table, str(path), "credit_scoring", "customer_id", settings)
    assert list(scored.frame.index) == ["8"]
    # without records, every row and no log line
    assert gate_table(table, None, "credit_training", "customer_id", settings) is table


def test_a_record_naming_now_is_not_in_the_future():
    frame = pd.DataFrame({"customer_id": ["1"], "purpose": ["credit_training"],
                          "status": ["granted"], "time": ["2026-06-01T12:00:00Z"],
                          "receipt_id": ["r"]})
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert len(check_records(frame, "f.csv", "customer_id", now=now)) == 1


def test_a_deployed_node_applies_its_own_consent_file_at_the_next_run(tmp_path):
    from flwr.app import Context, RecordDict

    from deployment.client_app import vertical_source
    from deployment.run_config import RUN_NAME, RUN_SETTINGS
    from experiments.deploy import federation as deploy

    data = tmp_path / "bureau.csv"
    data.write_text("customer_id,x\n" + "".join(f"c{i},{i}\n" for i in range(40)))
    consent = _write(tmp_path, [f"c{i},credit_training,granted,2026-01-01,r{i}"
                                for i in range(40)] + ["c3,credit_training,withdrawn,2026-02-01,w"])
    _, plain = deploy.compose_settings(["federation=vertical", "privacy=off"])

    def rows(run):
        context = Context(run_id=1, node_id=1, state=RecordDict(),
                          node_config={"party": "bureau", "data-path": str(data),
                                       "state-dir": str(tmp_path / "state"),
                                       "max-epsilon": "none", "consent": str(consent)},
                          run_config={RUN_SETTINGS: json.dumps(plain), RUN_NAME: run})
        return vertical_source(context)[1]

    first = rows("run-1")
    assert len(first.ids) == 39 and "c3" not in first.ids
    logged = [json.loads(t) for t in (tmp_path / "state" / "run-1" / "bureau" / "audit.jsonl"
                                      ).read_text().splitlines()]
    assert [(e["event"], e["withdrawn"], e["rows_used"]) for e in logged] == [
        ("consent", 1, 39)]
    consent.write_text(consent.read_text() + "c5,credit_training,withdrawn,2026-03-01,w2\n")
    second = rows("run-2")  # the same worker: the changed file counts at the next run
    assert len(second.ids) == 38 and "c5" not in second.ids


@pytest.mark.parametrize(("overrides", "message"), [
    (["federation=local", "+data.consent.lender=c.csv"],
     r"data.consent: consent records are applied by the nodes of a vertical federation"),
    (["federation=vertical", "+data.consent.telco=c.csv"],
     r"data.consent names \['telco'\], which takes no part in this run"),
])
def test_consent_where_no_node_applies_it_is_refused(overrides, message):
    from credit_data.errors import ConfigError
    from credit_fl.config import from_config
    from tests.conftest import compose_config

    with pytest.raises(ConfigError, match=message):
        from_config(compose_config(overrides))


def test_a_record_naming_a_lender_authorises_that_lender_only(tmp_path):
    path = _write(tmp_path, [
        "C1,credit_scoring,granted,2026-01-01,r1,acme-bank",
        "C2,credit_scoring,granted,2026-01-01,r2,",  # every lender
        "C3,credit_scoring,granted,2026-01-01,r3,other-bank",
        "C4,credit_scoring,granted,2026-01-01,r4,acme-bank",
        "C4,credit_scoring,withdrawn,2026-02-01,r5,",  # withdrawn from every lender
    ], header="customer_id,purpose,status,time,receipt_id,recipient\n")
    records = read_records(path, "customer_id")
    assert consented(records, "credit_scoring", "acme-bank") == {"C1", "C2"}
    assert consented(records, "credit_scoring", "other-bank") == {"C2", "C3"}
    # a curious lender that nobody authorised learns nothing: the customers are unknown to it
    kept, counts = consent_decision(_table(["C1", "C2", "C3", "C4"]), str(path),
                                    "credit_scoring", "customer_id", "curious-bank")
    assert list(kept.frame.index) == ["C2"]
    assert (counts["consented"], counts["withdrawn"], counts["no_record"]) == (1, 1, 2)
