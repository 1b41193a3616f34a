"""Issue 6 (part): the tamper-evident audit log and its verifier."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from federation.audit_log import AuditLog, _digest, describe_arrays, verify
from tests.conftest import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def log_file(tmp_path):
    log = AuditLog(tmp_path / "node" / "audit.jsonl")
    for round_ in range(1, 6):
        log.append("train.embed", round=round_, party="bureau",
                   sent=describe_arrays({"train": np.zeros((100, 8), np.float32)}),
                   epsilon=0.1 * round_)
    return log.path


def _lines(path):
    return path.read_text().splitlines()


def test_an_untouched_log_verifies_and_holds_no_values(log_file):
    verdict = verify(log_file)
    assert verdict.ok and verdict.lines == 5
    first = json.loads(_lines(log_file)[0])
    assert first["sent"] == {"train": {"shape": [100, 8], "dtype": "float32", "bytes": 3200}}
    # appending again continues the same chain
    AuditLog(log_file).append("evaluate.final", party="bureau")
    assert verify(log_file).ok and verify(log_file).lines == 6


def test_an_edited_line_is_found(log_file):
    lines = _lines(log_file)
    lines[2] = lines[2].replace('"epsilon": 0.30000000000000004', '"epsilon": 0.01')
    assert lines[2] != _lines(log_file)[2]
    log_file.write_text("\n".join(lines) + "\n")
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 3 and "changed" in verdict.problem


def test_a_removed_line_is_found(log_file):
    lines = _lines(log_file)
    del lines[1]
    log_file.write_text("\n".join(lines) + "\n")
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 2 and "removed" in verdict.problem


def test_a_swapped_pair_is_found(log_file):
    lines = _lines(log_file)
    lines[2], lines[3] = lines[3], lines[2]
    log_file.write_text("\n".join(lines) + "\n")
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 3 and "reordered" in verdict.problem


def test_verify_command_exit_codes(log_file, tmp_path):
    def run(*files):
        return subprocess.run([sys.executable, "-m", "federation.audit_log", "verify", *files],
                              cwd=REPO, capture_output=True, text=True)
    good = run(str(log_file))
    assert good.returncode == 0 and "ok: 5 lines" in good.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(_lines(log_file)[1:]) + "\n")
    result = run(str(log_file), str(bad))
    assert result.returncode == 1 and "bad.jsonl: line 1: a line was removed" in result.stdout


# issue 19, item 6: what a forger who holds the log but not the writer's key can do ------------

def _anchor(path):
    verdict = verify(path)
    assert verdict.ok
    return verdict.head, verdict.key


def _forge_line(path, **fields):
    """Append a line with a correct seq, prev and hash, as anyone without the key can."""
    last = json.loads(_lines(path)[-1])
    entry = {"seq": last["seq"] + 1, "time": last["time"], "event": "train.embed", **fields,
             "prev": last["hash"]}
    entry["hash"] = _digest(entry)
    entry["sig"] = last["sig"]  # a signature of another line
    with path.open("a") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")


def test_a_line_appended_with_correct_hashes_fails(log_file):
    head, key = _anchor(log_file)
    _forge_line(log_file, party="bureau", epsilon=0.0)
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 6 and "not signed" in verdict.problem


def test_an_edit_with_the_hashes_recomputed_fails(log_file):
    entries = [json.loads(t) for t in _lines(log_file)]
    entries[2]["epsilon"] = 0.01
    prev = entries[1]["hash"]
    for entry in entries[2:]:
        entry["prev"] = prev
        entry["hash"] = prev = _digest(entry)
    log_file.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 3 and "not signed" in verdict.problem


def test_a_whole_file_made_up_with_another_key_fails_against_the_anchor(log_file, tmp_path):
    head, key = _anchor(log_file)
    fake = AuditLog(tmp_path / "forger" / "audit.jsonl")
    for round_ in range(1, 6):
        fake.append("train.embed", round=round_, party="bureau", epsilon=0.0)
    assert verify(fake.path).ok  # consistent in itself ...
    verdict = verify(fake.path, key=key)  # ... but not the writer's
    assert not verdict.ok and "another key" in verdict.problem


def test_a_log_cut_short_fails_against_the_anchor(log_file):
    head, key = _anchor(log_file)
    log_file.write_text("".join(t + "\n" for t in _lines(log_file)[:3]))
    assert verify(log_file).ok  # a shorter chain is still a chain ...
    verdict = verify(log_file, head=head, key=key)
    assert not verdict.ok and "cut off" in verdict.problem


def test_a_duplicated_key_is_refused(log_file):
    lines = _lines(log_file)
    # a reader would show the second value; the hash covers the first
    lines[1] = lines[1][:-1] + ', "epsilon": 0.0}'
    log_file.write_text("\n".join(lines) + "\n")
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 2 and "appears twice" in verdict.problem


def test_an_empty_file_fails(tmp_path):
    empty = tmp_path / "audit.jsonl"
    empty.write_text("")
    verdict = verify(empty)
    assert not verdict.ok and "empty" in verdict.problem


def test_the_signing_key_is_private_to_its_owner(log_file):
    assert (log_file.parent / "audit.key").stat().st_mode & 0o077 == 0


def test_verify_command_checks_an_anchor(log_file):
    head, key = _anchor(log_file)
    command = [sys.executable, "-m", "federation.audit_log", "verify", str(log_file),
               "--head", head, "--key", key]
    assert subprocess.run(command, cwd=REPO, capture_output=True).returncode == 0
    log_file.write_text("".join(t + "\n" for t in _lines(log_file)[:-1]))
    cut = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert cut.returncode == 1 and "cut off" in cut.stdout


def test_anchors_that_do_not_hang_together_are_listed(tmp_path):
    from federation.audit_log import anchors

    server = AuditLog(tmp_path / "server" / "audit.jsonl")
    bureau = {"party": "bureau", "seq": 0, "head": "a" * 64, "key": "k1"}
    server.append("received train.embed", node=7, node_log=bureau)
    server.append("received train.embed", node=7, node_log={**bureau, "seq": 1})
    assert anchors(server.path)["problems"] == []
    # the lender's node (8) sends an anchor in the bureau's name, to frame it
    server.append("received train.head", node=8, node_log={**bureau, "seq": 5, "key": "k2"})
    problems = anchors(server.path)["problems"]
    assert "bureau is named by node 8 and node 7" in problems
    assert any("changed key" in p for p in problems)


# review item 2: the head a node sends the server commits to its line without revealing it ----

def test_a_head_does_not_let_its_holder_test_guesses_of_the_line(tmp_path):
    # Prepare: a deployed node's line notes its lifetime spend (3.5 of 8); the server holds the
    # line's head from the reply's anchor and knows every other field (it sent the message,
    # saw the reply, holds the previous head, and the time to the second)
    log = AuditLog(tmp_path / "bureau" / "audit.jsonl")
    anchor = log.append("train.embed", party="bureau", purpose="training", sent={},
                        epsilon={"epsilon": 1.0},
                        node={"lifetime_epsilon": 3.5, "max_epsilon": 8.0})
    line = json.loads(_lines(log.path)[0])
    known = {k: v for k, v in line.items() if k not in ("hash", "sig", "node", "salt")}
    # Execute: it tries every spend on a grid of 0.01 up to the cap, the true one among them
    guesses = [round(0.01 * i, 2) for i in range(801)]
    matches = [g for g in guesses if _digest(
        {**known, "node": {"lifetime_epsilon": g, "max_epsilon": 8.0}}) == anchor.head]
    # Assert: no guess matches (without the line's salt); the log itself still verifies, and its
    # salt is 32 bytes of its own per line
    assert 3.5 in guesses and matches == []
    assert _digest(line) == anchor.head and verify(log.path).ok
    assert len(bytes.fromhex(line["salt"])) == 32
    log.append("train.embed", party="bureau", purpose="training", sent={})
    salts = [json.loads(t)["salt"] for t in _lines(log.path)]
    assert len(set(salts)) == 2


def test_an_edited_salt_is_found(log_file):
    lines = _lines(log_file)
    entry = json.loads(lines[1])
    entry["salt"] = "00" * 32
    lines[1] = json.dumps(entry, sort_keys=True)
    log_file.write_text("\n".join(lines) + "\n")
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 2 and "changed" in verdict.problem


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_line_edited_to_hold_nan_or_infinity_is_found_changed(log_file, constant):
    lines = _lines(log_file)
    lines[1] = lines[1].replace('"epsilon": 0.2', f'"epsilon": {constant}')
    assert lines[1] != _lines(log_file)[1]
    log_file.write_text("\n".join(lines) + "\n")
    verdict = verify(log_file)
    assert not verdict.ok and verdict.line == 2 and "changed" in verdict.problem
    result = subprocess.run([sys.executable, "-m", "federation.audit_log", "verify",
                             str(log_file)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"line 2: changed: it holds {constant}" in result.stdout
