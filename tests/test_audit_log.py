"""Issue 6 (part): the tamper-evident audit log and its verifier."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from federation.audit_log import AuditLog, describe_arrays, verify
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
