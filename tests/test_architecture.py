"""The import contract (issue 17): true layers (import-linter) and light deployed apps."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("hydra", "omegaconf", "ray", "matplotlib", "experiments")


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return layers


def test_the_import_contract_holds():
    linter = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([linter], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_readme_states_the_layers_of_the_contract():
    line = " -> ".join(layer.replace(" | ", ", ") for layer in _layers())
    assert f"`{line}`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("module", ["deployment.client_app", "deployment.server_app",
                                    "deployment.node"])
def test_a_deployed_app_loads_no_hydra_ray_matplotlib_or_simulation(module):
    code = (f"import sys, time; t = time.perf_counter(); import {module}; "
            "print(round(time.perf_counter() - t, 2)); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, loaded = done.stdout.split("\n")[:2]
    print(f"{module}: imported in {seconds} s")
    assert loaded == "[]"
