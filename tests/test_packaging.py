"""One command from a wheel (issue 17): ``pip install`` it anywhere, run an experiment elsewhere."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

from experiments.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_the_command_lists_its_subcommands_and_refuses_an_unknown_one(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert all(name in shown for name in COMMANDS)
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_a_wheel_installed_in_a_fresh_virtualenv_runs_an_experiment_elsewhere(tmp_path):
    # Prepare: the wheel, and a fresh virtualenv that holds only it (its dependencies are
    # borrowed from this environment's site-packages, plain, without its editable hooks)
    source = tmp_path / "source"  # a copy: building writes build/ beside the sources
    anywhere = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "__pycache__", ".*_cache")
    at_root = {"outputs", "multirun", "build", "deploy"}  # run outputs; experiments/deploy stays
    shutil.copytree(ROOT, source, ignore=lambda where, names: anywhere(where, names) | (
        at_root & set(names) if Path(where) == ROOT else set()))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(source)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("credit_fl-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True).stdout.strip()
    Path(purelib, "borrowed_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Execute: the installed command, from a directory with no project files
    done = subprocess.run([str(venv / "bin" / "credit-fl"), "run", "federation=centralized",
                           "data.n_customers=2000", "verbose=false",
                           f"hydra.run.dir={elsewhere / 'run'}"], cwd=elsewhere,
                          capture_output=True, text=True, timeout=600)
    # Assert: it ran the installed code with the packaged config
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((elsewhere / "run" / "results.json").read_text())
    assert results["mode"] == "centralized" and results["dataset"]["rows"]["train"] > 1000
    assert 0.5 < results["metrics"]["test"]["auc"] < 1.0
    where = subprocess.run([str(python), "-c", "import experiments.deploy.cli as m; "
                            "print(m.__file__)"], cwd=elsewhere, capture_output=True,
                           text=True).stdout
    assert str(venv) in where and str(ROOT) not in where  # the deploy sub-package is packaged


def test_the_results_schema_page_is_generated_from_the_code():
    from credit_fl.results_schema import markdown

    assert (ROOT / "docs" / "results-schema.md").read_text() == markdown()
