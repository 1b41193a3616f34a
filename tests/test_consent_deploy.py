"""Consent on the loopback deployment (issue 34): the regulator's report matches results.json.

The bureau's partner starts its node with its consent file (and ``--release-consent-counts``):
the coordinator's ``results.json`` carries the counts the node sent with its hello reply, and
``credit-fl audit report`` over the nodes' and the server's logs lists the same per party; a
log with one line edited is flagged first and fails the report. Full-size in the sense of the
suite's tiers (it starts a federation of its own), so ``slow``; ``tests/test_consent_counts.py``
tests the node's mod and the server's reading of the counts.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from experiments.deploy import federation as deploy
from federation.usage_report import main as usage_report

pytestmark = pytest.mark.slow

WITHDRAWN, NO_RECORD, NOT_SCORED = 5, 7, 3
"""Of the bureau's customers: how many withdrew their training consent, how many have none,
how many have no scoring consent."""


def _consent_at_the_bureau(directory: Path, files: dict) -> Path:
    ids = pd.read_csv(files["bureau"][0], dtype=str).iloc[:, 0].tolist()
    rows = [(i, "credit_training", "granted", "2026-01-01T00:00:00Z", f"g-{i}")
            for i in ids[NO_RECORD:]]
    rows += [(i, "credit_training", "withdrawn", "2026-06-01T00:00:00Z", f"w-{i}")
             for i in ids[NO_RECORD:NO_RECORD + WITHDRAWN]]
    rows += [(i, "credit_scoring", "granted", "2026-01-01T00:00:00Z", f"s-{i}")
             for i in ids[NOT_SCORED:]]
    path = directory / "bureau-consent.csv"
    pd.DataFrame(rows, columns=["customer_id", "purpose", "status", "time", "receipt_id"]
                 ).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    directory = tmp_path_factory.mktemp("consent_federation")
    flags = deploy.demo_release_flags
    held: dict = {}

    def with_consent(party, settings, files, *rest):  # the bureau's own flags, its partner's
        extra = []
        if party == "bureau":
            held["rows"] = sum(1 for _ in files["bureau"][0].open()) - 1
            extra = ["--consent", str(_consent_at_the_bureau(directory, files)),
                     "--release-consent-counts"]
        return [*flags(party, settings, files, *rest), *extra]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deploy, "demo_release_flags", with_consent)
        with deploy.local_federation(directory / "fed", [
                "data.n_customers=1000", "train.epochs=2", "verbose=false"]) as fed:
            results = deploy.run(Path(fed.directory))
            run_dir = Path(results["federation"]["server_audit_log"]).parent.parent
            _, scoring = deploy.score(Path(fed.directory), run_dir, ["explain.enabled=false"])
    return results, held["rows"], directory, scoring


def test_a_deployed_results_json_carries_the_counts_the_bureau_sent(deployed):
    results, held, _, _ = deployed
    consent = results["dataset"]["consent"]
    bureau = consent["parties"]["bureau"]
    assert consent["purpose"] == "credit_training"
    assert (bureau["rows_held"], bureau["withdrawn"], bureau["no_record"]) == (
        held, WITHDRAWN, NO_RECORD)
    assert bureau["rows_used"] == bureau["consented"] == held - WITHDRAWN - NO_RECORD
    assert bureau["rows_used"] == results["dataset"]["parties"]["bureau"]["rows"]  # set size
    assert consent["parties"]["lender"] == {"records": False}
    # the opted-in counts among the releases outside any epsilon, the bureau's only
    assert [r for r in results["outside_epsilon"] if r["release"] == "consent_counts"] == [{
        "party": "bureau", "release": "consent_counts", "receiver": "server",
        "opt_in": "--release-consent-counts"}]


def test_the_regulators_report_matches_results_json_and_flags_an_edited_log(deployed):
    results, _, directory, _ = deployed
    fed = results["federation"]
    logs = [*fed["node_audit_logs"].values(), fed["server_audit_log"]]
    out = directory / "usage.json"
    assert usage_report([*logs, "--json", str(out)]) == 0
    records = {r["party"]: r for r in json.loads(out.read_text())["records"]}
    assert all(r["verified"] and r["anchored"]["matches"] for r in records.values())
    # each node noted its lifetime ledger: the run's epsilon within what the ledger holds
    for r in records.values():
        assert r["lifetime"] is not None, r["party"]
        assert r["lifetime"]["run"] <= r["lifetime"]["spent"] + 1e-9
    for party, counted in results["dataset"]["consent"]["parties"].items():
        logged = records[party]["consent"]
        if not counted["records"]:
            assert logged is None
            continue
        logged = logged["credit_training"]
        assert {k: logged[k] for k in ("rows_held", "rows_used", "consented", "withdrawn",
                                       "no_record")} == {
            k: counted[k] for k in ("rows_held", "rows_used", "consented", "withdrawn",
                                    "no_record")}
    # one line of the bureau's log edited: the report says so first and fails
    edited = directory / "edited" / "bureau" / "audit.jsonl"
    edited.parent.mkdir(parents=True)
    lines = Path(fed["node_audit_logs"]["bureau"]).read_text().splitlines()
    consent_line = next(i for i, t in enumerate(lines) if '"event": "consent"' in t
                        or '"event":"consent"' in t)
    lines[consent_line] = lines[consent_line].replace(
        f'"withdrawn": {WITHDRAWN}', '"withdrawn": 0').replace(
        f'"withdrawn":{WITHDRAWN}', '"withdrawn":0')
    assert lines[consent_line] != Path(fed["node_audit_logs"]["bureau"]).read_text(
        ).splitlines()[consent_line]
    edited.write_text("\n".join(lines) + "\n")
    page = directory / "usage.md"
    assert usage_report([str(edited), "--markdown", str(page)]) == 1
    text = page.read_text()
    assert text.index("VERIFICATION FAILED") < text.index("## bureau, run edited")
    assert f"line {consent_line + 1}: changed" in text


def test_a_deployed_scoring_json_carries_the_scoring_counts(deployed):
    _, held, _, scoring = deployed
    consent = scoring["consent"]
    bureau = consent["parties"]["bureau"]
    assert consent["purpose"] == "credit_scoring"
    assert (bureau["rows_held"], bureau["rows_used"], bureau["withdrawn"],
            bureau["no_record"]) == (held, held - NOT_SCORED, 0, NOT_SCORED)
    assert "consent_counts" in scoring["privacy"]["bureau"]["outside_epsilon"]
    assert "consent_counts" not in scoring["privacy"].get("lender", {}).get("outside_epsilon", [])
    log = Path(scoring["node_audit_logs"]["bureau"])
    logged = [json.loads(t) for t in log.read_text().splitlines()]
    assert [(e["purpose"], e["rows_used"]) for e in logged if e["event"] == "consent"] == [
        ("credit_scoring", held - NOT_SCORED)]
