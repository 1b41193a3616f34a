"""The import contract (issue 17): true layers (import-linter) and light deployed apps."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("hydra", "omegaconf", "ray", "matplotlib", "experiments", "credit_fl",
         "federation.flower_compat.simulation")
PUBLIC_FLOWER = ("flwr.app", "flwr.serverapp", "flwr.clientapp", "flwr.simulation")
"""Flower's public API (its documented packages); everything else of Flower is internal."""
COMPAT = "federation/flower_compat"


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
                                    "deployment.node", "fl_client.simulation_sources"])
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


def _imports(path: Path) -> list[str]:
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _internal(name: str) -> bool:
    if name == "flwr" or name.startswith("flwr."):
        return not any(name == p or name.startswith(p + ".") for p in PUBLIC_FLOWER)
    return name.startswith("ray.") and name.split(".")[1].startswith("_")


def test_flower_and_ray_internals_are_used_only_in_the_compat_package():
    # Prepare: every module of the project outside the compat package and the tests
    sources = [p for p in ROOT.rglob("*.py") if not {".venv", "tests", "build"} & set(p.parts)
               and COMPAT not in p.as_posix()]
    # Execute: the Flower and Ray modules each imports
    found = {str(p.relative_to(ROOT)): [n for n in _imports(p) if _internal(n)] for p in sources}
    # Assert: none reaches past the public API
    assert {k: v for k, v in found.items() if v} == {}
    compat = [n for p in (ROOT / COMPAT).glob("*.py") for n in _imports(p) if _internal(n)]
    assert "flwr.supercore.task_identity" in compat  # the check sees what it looks for
