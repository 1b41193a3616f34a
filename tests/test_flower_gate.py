"""Another Flower release than the pinned one: a simulation or a node refuses at once (issue 17)."""

from __future__ import annotations

import pytest

from credit_data.errors import EngineVersionError
from federation import flower_compat

pytestmark = pytest.mark.unit


@pytest.fixture
def newer_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    real = flower_compat.installed
    monkeypatch.setattr(flower_compat, "installed",
                        lambda package: "1.42.0" if package == "flwr" else real(package))


def test_a_simulation_refuses_another_flower_release_naming_both(newer_flower):
    from credit_fl.simulation import SimulationEngine

    with pytest.raises(EngineVersionError, match=r"flwr 1\.42\.0 is installed; this project "
                                                 r"supports exactly flwr 1\.41\.0"):
        SimulationEngine(verbose=False)


def test_a_node_refuses_another_flower_release_before_it_starts(newer_flower, tmp_path, capsys):
    from deployment.node import main

    code = main(["--party", "bureau", "--data", str(tmp_path / "b.csv"), "--superlink",
                 "127.0.0.1:1", "--state-dir", str(tmp_path / "state"), "--max-epsilon", "3"])
    assert code == 2
    assert "flwr 1.42.0 is installed" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


def test_plain_flower_behaviour_is_the_documented_fallback(newer_flower, monkeypatch):
    from credit_fl.simulation import SimulationEngine

    monkeypatch.setenv(flower_compat.PLAIN_FLOWER, "1")
    assert SimulationEngine(verbose=False).plain


def test_the_supported_release_is_the_one_pinned_and_installed():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                              .read_text())
    assert f"flwr[simulation]=={flower_compat.SUPPORTED['flwr']}" in \
        pyproject["project"]["dependencies"]
    assert flower_compat.installed("flwr") == flower_compat.SUPPORTED["flwr"]
    assert flower_compat.installed("ray") == flower_compat.SUPPORTED["ray"]
