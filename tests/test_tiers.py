"""The three test tiers, each chosen by name, and the guard that keeps the slow tier from rotting.

``pytest -m unit`` / ``-m engine`` / ``-m slow`` (``make test-unit``, ``test-engine``,
``test-slow``) each select one tier: every collected test carries exactly one tier marker
(``tests/conftest.py`` marks the rest ``engine``). Collecting the suite, as ``pytest -m unit``
does before it deselects, imports no Ray. The slow tier runs outside CI (docs/development.md),
so this fast tier checks what would break it unseen: every test module collects, and every name
a slow test module reads from a project module exists (a renamed function fails here, in CI, not
half an hour into ``make test-slow``).

One ``pytest --collect-only`` of the whole suite runs in a fresh interpreter
(``tests/tier_guard.py``: this process has imports of its own) and reports what it saw.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO, TIERS
from tests.slow_scope import slow_modules, touched
from tests.tier_guard import missing_attributes

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What one ``pytest --collect-only`` of the whole suite saw, in a fresh interpreter."""
    out = tmp_path_factory.mktemp("collected") / "collected.json"
    done = subprocess.run([sys.executable, "-m", "tests.tier_guard", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert out.is_file(), (done.stdout[-3000:], done.stderr[-3000:])
    seen = json.loads(out.read_text())
    seen["returncode"], seen["stdout"] = done.returncode, done.stdout[-3000:]
    return seen


def test_every_test_module_collects(collected):
    # the slow tier's modules included: a broken import there surfaces here, in CI
    assert collected["errors"] == [], "\n".join(collected["errors"])
    assert collected["returncode"] == 0, collected["stdout"]


def test_every_test_is_in_exactly_one_tier(collected):
    by_tier: dict[str, set[str]] = {tier: set() for tier in TIERS}
    for nodeid, tiers in collected["items"]:
        assert len(tiers) == 1, f"{nodeid} is in tiers {tiers}"
        by_tier[tiers[0]].add(nodeid)
    # a module of engine runs without a marker of its own, a unit module, a slow test, a doctest
    assert {n.split("::")[0] for n in by_tier["engine"]} >= {"tests/test_simulation.py",
                                                              "tests/test_horizontal.py"}
    assert not any(n.startswith("tests/test_simulation.py::") for n in by_tier["unit"])
    assert any(n.startswith("tests/test_config.py::") for n in by_tier["unit"])
    assert "tests/test_deploy.py::test_ctrl_c_on_deploy_run_stops_the_run_on_the_federation" \
        in by_tier["slow"]
    assert any(n.startswith("privacy/") for n in by_tier["unit"])  # doctests
    assert "tests/test_tiers.py::test_collecting_the_suite_imports_no_ray" in by_tier["unit"]


def test_collecting_the_suite_imports_no_ray(collected):
    # `pytest -m unit` collects (imports) every module before it deselects: none may import Ray
    # at its top level, or the unit tier loads Ray (a unit test that imports it while it runs
    # fails by tests/conftest.py's `_tier_rules`)
    assert collected["ray"] == [], "Ray is imported at collection, from:\n" + \
        "\n".join(collected["ray"])


def test_a_unit_test_that_imports_ray_while_it_runs_fails(tmp_path):
    # Prepare: two unit tests, the first imports Ray (as a unit test calling into the engine
    # would); run under this suite's conftest in a fresh interpreter
    probe = tmp_path / "probe_test.py"
    probe.write_text("import pytest\n\npytestmark = pytest.mark.unit\n\n\n"
                     "def test_calls_the_engine():\n    import ray  # noqa: F401\n\n\n"
                     "def test_after_it():\n    assert True is not False\n")
    # Execute
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(probe)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    # Assert: the one that imported Ray errs at its teardown, naming itself; the next passes
    assert "probe_test.py::test_calls_the_engine is a unit test and imported Ray" in done.stdout
    assert "test_after_it is a unit test" not in done.stdout
    assert re.search(r"\b2 passed, (\d+ warnings?, )?1 error in", done.stdout), done.stdout[-2000:]


def test_slow_tests_read_only_names_that_exist(collected):
    # the slow tier runs outside CI; a function it calls that was renamed fails here instead
    assert "tests.test_deploy" in collected["slow_modules"]
    assert collected["missing"] == [], "\n".join(collected["missing"])


def test_the_name_check_finds_a_renamed_function(tmp_path):
    # Prepare: a test module that reads one name that exists and one that does not (as the
    # ctrl-c test read `experiments.deploy._flwr_bin` after its rename to `flwr_bin`)
    probe = tmp_path / "probe_test.py"
    probe.write_text("import pytest\nfrom privacy import randomness as rnd\n\n"
                     "def test(monkeypatch):\n    rnd.NoiseSource.fresh()\n"
                     "    monkeypatch.setattr(rnd, 'NoiseSource', None)\n"
                     "    rnd._fresh_noise()\n    monkeypatch.setattr(rnd, '_gone', None)\n")
    spec = importlib.util.spec_from_file_location("probe_test", probe)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Execute
    missing = missing_attributes(module, repo=tmp_path)
    # Assert
    assert missing == ["probe_test.py:7: privacy.randomness._fresh_noise does not exist",
                       "probe_test.py:8: privacy.randomness._gone does not exist"]


def test_slow_scope_knows_every_slow_module(collected):
    # `make test-slow-changed` chooses among the modules that hold the collected slow tests
    assert [str(p.relative_to(REPO)) for p in slow_modules()] == \
        sorted(m.replace(".", "/") + ".py" for m in collected["slow_modules"])


def test_a_change_runs_the_slow_modules_that_reach_it_and_only_those():
    every = [str(p.relative_to(REPO)) for p in slow_modules()]
    assert touched(["docs/index.md", "README.md"]) == []
    assert touched(["conf/privacy/dpsgd.yaml"]) == every
    assert touched(["tests/test_pilot_data.py"]) == ["tests/test_pilot_data.py"]
    # imported by the deployment tests (through the deploy orchestrator)
    assert "tests/test_deploy.py" in touched(["fl_client/vertical_task.py"])
    # started as a process (`-m deployment.node`), not imported
    assert "tests/test_node_liveness.py" in touched(["deployment/node.py"])
    assert "tests/test_pilot_data.py" not in touched(["deployment/node.py"])
    # a file of the deployed Flower app that is not Python
    assert "tests/test_deploy.py" in touched(["deployment/flower_app/pyproject.toml"])


def test_each_tier_is_a_declared_marker():
    # `-m engine` selects by a declared marker (pyproject.toml), not a misspelt one
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    markers = options["ini_options"]["markers"]
    assert sorted(m.split(":")[0] for m in markers) == sorted(TIERS)
