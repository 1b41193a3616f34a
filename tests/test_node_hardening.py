"""A partner's node against a hostile coordinator and a careless machine (issue 19, first part)."""

from __future__ import annotations

import os
import stat

import pytest

from credit_data.errors import ConfigError
from deployment.client_app import run_state_dir
from federation.credentials import make_node_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["../../../escaped", "..", ".", "a/b", "/etc", "x/../../y",
                                  "", "run\x00name", "~root"])
def test_a_run_name_that_would_leave_the_state_directory_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="run-name"):
        run_state_dir(tmp_path / "state", name)
    assert not any(tmp_path.iterdir())  # nothing written anywhere


def test_a_plain_run_name_stays_inside_the_state_directory(tmp_path):
    path = run_state_dir(tmp_path, "2026-12-05_10-00-00_vertical")
    assert path.parent == tmp_path.resolve()


def test_a_private_key_written_over_a_loose_file_is_owner_only(tmp_path):
    key = tmp_path / "bureau"
    key.write_text("old")
    os.chmod(key, 0o644)  # a file left readable by everyone
    make_node_key(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
