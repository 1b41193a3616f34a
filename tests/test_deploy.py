"""Real deployments on loopback: a SuperLink with TLS and node authentication, one node per party.

Each federation is started once per module (``experiments.deploy.federation.local_federation``) and
stopped after it, also when a test fails. The same runs go through Flower's simulation engine
for comparison. Small data keeps them in CI; the full-size comparison is the ``deployment``
benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_data.errors import ConfigError
from credit_fl.horizontal import run_horizontal
from credit_fl.vertical import run_vertical
from deployment.client_app import NodeConfig
from experiments.deploy import federation as deploy
from experiments.deploy import main as deploy_main
from federation.audit_log import verify
from federation.credentials import make_node_key
from fl_server.horizontal_rounds import FederationError
from privacy.sealed_key import MASTER_KEY_FILE
from tests.conftest import REPO
from tests.run_progress import STALL, wait_while_progressing, written

VERTICAL = ["data.n_customers=1000", "train.epochs=2", "verbose=false"]
HORIZONTAL = ["federation=horizontal", "partition.n_lenders=3", "federation.rounds=2",
              "data.n_customers=2500", "partition.alpha=100", "verbose=false"]
HORIZONTAL_CI = ["federation=horizontal", "partition.n_lenders=2", "federation.rounds=1",
                 "data.n_customers=2000", "partition.alpha=100", "verbose=false"]
"""Under CI=true: two lender nodes and one round (the suite's time limit); RUN_SLOW=1 runs three
nodes and two rounds. Each node splits its rows with its own OS-drawn key (15% validation, 15%
test), so a lender with few defaults can get a split without one (a refusal, named): under the
default skew (alpha 0.5) seed 0 gives a lender 11 defaults at 1,000 customers and three lenders
(a split without a default in 35% of federations) and 24 at 2,000 and two (4%). Lenders near
alike (alpha 100) hold 781-869 rows and 109-118 defaults each here (2,500, three lenders), 990
and 1,010 rows and 110 and 135 defaults (2,000, two): a split without a default, or without a
non-default, in fewer than 1 in 10 million federations."""
NODE_CAP = 1.0
IN_PROCESS = ["engine=in_process"]
"""The simulations a deployment is compared with run in this process: both engines give the same
metrics for the same seed (tests/test_front_door_runs.py), without a Ray start per comparison."""


@pytest.fixture(scope="module")
def vertical_federation(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("vertical_federation")
    with deploy.local_federation(directory, VERTICAL) as fed:
        yield fed
    assert not (directory / deploy.STATE).exists()


@pytest.fixture(scope="module")
def capped_federation(tmp_path_factory: pytest.TempPathFactory):
    """The bureau's node caps its lifetime epsilon at ``NODE_CAP``."""
    directory = tmp_path_factory.mktemp("capped_federation")
    with deploy.local_federation(directory, VERTICAL,
                                 node_max_epsilon={"bureau": NODE_CAP}) as fed:
        yield fed


@pytest.fixture(scope="module", params=[
    pytest.param(HORIZONTAL, marks=pytest.mark.slow, id="3-lenders-2-rounds"),
    pytest.param(HORIZONTAL_CI, id="2-lenders-1-round")])
def horizontal_federation(request: pytest.FixtureRequest,
                          tmp_path_factory: pytest.TempPathFactory):
    with deploy.local_federation(tmp_path_factory.mktemp("horizontal_federation"),
                                 request.param) as fed:
        yield fed, request.param


def _the_nodes_keys(fed: deploy.Federation, tmp_path: Path) -> list[str]:
    """Overrides that simulate the deployed nodes themselves: their master keys, their splits.

    Each node splits its customers with a key from its own master key (issue 30, finding 9), so
    a simulation matches a deployment only on the same nodes' keys.
    """
    keys = tmp_path / "the-nodes-keys"
    for party in fed.parties:
        (keys / party).mkdir(parents=True)
        shutil.copy2(fed.node_state(party) / MASTER_KEY_FILE, keys / party / MASTER_KEY_FILE)
    return [f"federation.key_dir={keys}"]


_FORBIDDEN: list[Path] = []
"""Directories no code may open while :func:`_blind_to` is active."""


def _refuse_forbidden_opens(event: str, args: tuple) -> None:
    if event == "open" and _FORBIDDEN and isinstance(args[0], (str, bytes, Path)):
        raw = args[0].decode() if isinstance(args[0], bytes) else args[0]
        path = Path(raw).resolve()
        if any(path.is_relative_to(d) for d in _FORBIDDEN):
            raise PermissionError(f"opened a node's file: {path}")


sys.addaudithook(_refuse_forbidden_opens)  # a hook cannot be removed: it checks the list


@contextlib.contextmanager
def _blind_to(directory: Path):
    """Refuse every ``open`` under ``directory`` in this process (``np.load``, ``read_text``...).

    The tests run as root here, where ``chmod 000`` would not stop a read.
    """
    _FORBIDDEN.append(directory.resolve())
    try:
        yield
    finally:
        _FORBIDDEN.clear()


@pytest.fixture
def collector_blind(monkeypatch: pytest.MonkeyPatch) -> None:
    """``deploy.collect`` can open nothing under the nodes' directories and load no data."""
    collect = deploy.collect

    def no_data(*args, **kwargs):
        raise AssertionError("the collector loaded the population")

    def blind(settings, fed, *args, **kwargs):
        with _blind_to(Path(fed.directory) / "nodes"), pytest.MonkeyPatch.context() as m:
            for module in ("credit_data.loading", "fl_client.simulation_sources",
                           "credit_fl.vertical", "experiments.deploy.federation"):
                m.setattr(f"{module}.load_population", no_data)
            return collect(settings, fed, *args, **kwargs)

    monkeypatch.setattr(deploy, "collect", blind)


def test_a_collector_that_reads_a_nodes_file_is_caught(tmp_path: Path) -> None:
    node_file = tmp_path / "nodes" / "lender" / "scores.npz"
    node_file.parent.mkdir(parents=True)
    np.savez(node_file, test_scores=np.zeros(3))
    with _blind_to(tmp_path / "nodes"), pytest.raises(PermissionError, match="node's file"):
        np.load(node_file)
    assert np.load(node_file)["test_scores"].shape == (3,)  # readable again afterwards


def _check_audit_logs(results: dict) -> None:
    f = results["federation"]
    for path in [*f["node_audit_logs"].values(), f["server_audit_log"]]:
        verdict = verify(path)
        assert verdict.ok and verdict.lines > 0, (path, verdict)
    # what left the lender is described by shapes and bytes; no values are in the log
    lender_log = Path(next(iter(f["node_audit_logs"].values())))
    entries = [json.loads(line) for line in lender_log.read_text().splitlines()]
    assert any(e.get("sent") for e in entries)
    for entry in entries:
        for item in entry.get("sent", {}).values():
            assert set(item) <= {"shape", "dtype", "bytes"}


@contextlib.contextmanager
def _watching(fed: deploy.Federation):
    """Record, while the block runs, every listener and command line of the federation's
    processes (issue 19, items 3 and 4)."""
    import threading

    from tests.listeners import listeners, process_tree

    seen: dict[str, set] = {"listeners": set(), "commands": set()}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            pids = set().union(*(process_tree(pid) for pid in fed.pids.values()))
            seen["listeners"] |= set(listeners(pids))
            for pid in pids:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    seen["commands"].add(Path(f"/proc/{pid}/cmdline").read_bytes().decode()
                                         .replace("\0", " "))
            time.sleep(0.2)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def test_vertical_deployment_matches_simulation(vertical_federation, tmp_path: Path,
                                                collector_blind) -> None:
    # the collector reads nothing under the nodes' directories and loads no data
    with _watching(vertical_federation) as seen:
        results = deploy.run(Path(vertical_federation.directory), ["privacy=off"])
    # no listener outside 127.0.0.0/8, and no token on a command line (items 3 and 4)
    from tests.listeners import is_loopback

    assert any("flwr-serverapp" in c for c in seen["commands"])  # the watch saw the run
    assert [c for c in seen["commands"] if "--token " in c + " "] == []
    assert len(seen["listeners"]) >= 2
    assert [f for f in seen["listeners"] if not is_loopback(f[1])] == []
    settings, _ = deploy.compose_settings(VERTICAL + ["privacy=off"] + IN_PROCESS
                                          + _the_nodes_keys(vertical_federation, tmp_path))
    simulated = run_vertical(settings, tmp_path / "simulation")
    f = results["federation"]
    assert f["engine"] == "deployment" and f["tls"] and f["node_auth"]
    assert f["epochs"] == 2
    print(f"vertical test AUC: deployed {results['metrics']['test']['auc']:.4f}, simulated "
          f"{simulated.metrics['test']['auc']:.4f}")
    assert abs(results["metrics"]["test"]["auc"] - simulated.metrics["test"]["auc"]) <= 0.005
    assert results["metrics"]["test"]["auc"] > 0.55  # learned something (1,000 customers)
    _check_audit_logs(results)
    # the channel keys travelled signed (an X25519 key is 32 bytes; the signature follows)
    server_log = Path(f["server_audit_log"]).read_text().splitlines()
    answers = [json.loads(line) for line in server_log if "received query.psi_answer" in line]
    assert answers and all(a["content"]["key"]["bytes"] > 32 for a in answers)
    # research attacks stay in research: no deployed node ran the label-leakage attack
    nodes = Path(vertical_federation.directory) / "nodes"
    assert not list(nodes.rglob("label_leakage.npz"))
    assert results.get("audit") is None or "label_leakage" not in results["audit"]


@pytest.mark.slow
def test_node_refuses_a_run_past_its_own_max_epsilon(capped_federation) -> None:
    # the run asks epsilon 3 per mechanism (the vertical default); the bureau's node allows 1
    with pytest.raises(FederationError, match=r"bureau refused: .*max_epsilon 1\.0"):
        deploy.run(Path(capped_federation.directory))
    state = Path(capped_federation.directory) / "nodes" / "bureau" / "state"
    logs = sorted(state.glob("*/bureau/audit.jsonl"))
    entries = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    assert any("max_epsilon 1.0" in e.get("refused", "") for e in entries)


@pytest.mark.slow
def test_a_capped_node_spends_its_lifetime_budget_across_runs(capped_federation) -> None:
    directory = Path(capped_federation.directory)
    state, data = directory / "nodes" / "bureau" / "state", directory / "nodes" / "bureau" / \
        "data.csv"
    with pytest.raises(FederationError, match="bureau refused: .*outside any epsilon"):
        deploy.run(directory, ["privacy=off"])

    def budget() -> str:
        return subprocess.run([sys.executable, "-m", "deployment.budget", "show", "--state-dir",
                               str(state), "--data", str(data), "--max-epsilon", str(NODE_CAP)],
                              capture_output=True, text=True, cwd=REPO, check=True).stdout

    # runs that each ask less than the cap: served until the lifetime total would pass it
    served = []
    for _ in range(3):
        try:
            served.append(deploy.run(directory, ["privacy.target_epsilon=0.6"]))
        except FederationError as exc:
            assert "lifetime budget" in str(exc), exc
            break
    assert len(served) <= 1, "two runs at 0.6 passed a lifetime cap of 1"
    shown = budget()
    total = float(shown.split("spent since the last reset: epsilon ")[1].split()[0])
    assert 0 < total <= NODE_CAP + 1e-9, shown
    # the partner resets it; a run at 0.6 is then served
    subprocess.run([sys.executable, "-m", "deployment.budget", "reset", "--state-dir",
                    str(state), "--data", str(data), "--reason", "test"], check=True, cwd=REPO)
    results = deploy.run(directory, ["privacy.target_epsilon=0.6"])
    assert results["privacy"]["party_totals"]["bureau"]["epsilon"] <= 0.6 + 1e-9
    assert "spent since the last reset: epsilon 0." in budget()


def _node(fed: deploy.Federation, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    data = Path(fed.directory) / "nodes" / "bureau" / "data.csv"
    cmd = [sys.executable, "-m", "deployment.node", "--party", "bureau", "--data", str(data),
           "--superlink", fed.superlink, "--state-dir", str(tmp_path / "state"),
           "--runtime-port", str(deploy._free_port()), "--max-retries", "2",
           "--max-epsilon", "3", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=fed.env(), cwd=deploy.ROOT)


def test_an_unregistered_node_is_refused(vertical_federation, tmp_path: Path) -> None:
    key = tmp_path / "intruder"
    make_node_key(key)
    ca = Path(vertical_federation.directory) / "tls" / "ca.crt"
    done = _node(vertical_federation, tmp_path, "--root-certificates", str(ca),
                 "--auth-key", str(key))
    assert done.returncode != 0
    assert "Failed to activate SuperNode" in done.stdout + done.stderr


def test_a_node_without_tls_is_refused(vertical_federation, tmp_path: Path) -> None:
    done = _node(vertical_federation, tmp_path, "--insecure")
    assert done.returncode != 0
    assert "could not establish a connection" in done.stdout + done.stderr


def test_horizontal_deployment_matches_simulation(horizontal_federation, tmp_path: Path,
                                                  collector_blind) -> None:
    # the collector reads nothing under the nodes' directories and loads no data
    fed, overrides = horizontal_federation
    results = deploy.run(Path(fed.directory))
    settings, _ = deploy.compose_settings(overrides + IN_PROCESS + _the_nodes_keys(fed, tmp_path))
    simulated = run_horizontal(settings, tmp_path / "simulation")
    assert results["federation"]["completed_rounds"] == settings.federation.rounds
    assert results["federation"]["clients"] == settings.partition.n_lenders
    print(f"horizontal test AUC: deployed {results['metrics']['test']['auc']:.4f}, simulated "
          f"{simulated.metrics['test']['auc']:.4f}")
    assert abs(results["metrics"]["test"]["auc"] - simulated.metrics["test"]["auc"]) <= 0.005
    assert results["dataset"]["rows"] == simulated.dataset["rows"]
    assert not (Path(results["federation"]["server_audit_log"]).parent.parent
                / "predictions.csv").exists()  # the row-level scores stay at the lenders
    _check_audit_logs(results)
    # the final model's bundle at the coordinator and on every lender's own disk (issue 20)
    run_dir = _run_dir(results)
    model_id = results["model"]["model_id"]
    assert json.loads((run_dir / "model" / "model.json").read_text())["model_id"] == model_id
    for lender in fed.parties:
        kept = fed.node_state(lender) / run_dir.name / lender / "model" / "model.json"
        assert json.loads(kept.read_text())["model_id"] == model_id
    # and `deploy score` on it: each lender scores its own test rows with the model it kept
    _check_horizontal_scoring(fed, overrides, results)


def test_a_deployed_private_run_reports_the_simulations_ledger(
        horizontal_federation, tmp_path: Path, collector_blind) -> None:
    fed, overrides = horizontal_federation
    results = deploy.run(Path(fed.directory), ["privacy=dpsgd"])
    settings, _ = deploy.compose_settings(overrides + ["privacy=dpsgd"] + IN_PROCESS
                                          + _the_nodes_keys(fed, tmp_path))
    simulated = run_horizontal(settings, tmp_path / "simulation")
    assert simulated.privacy is not None
    got, want = results["privacy"], simulated.privacy
    print(f"horizontal DP-SGD epsilon: deployed {got['epsilon']:.6f}, simulated "
          f"{want['epsilon']:.6f}; test AUC deployed {results['metrics']['test']['auc']:.4f}, "
          f"simulated {simulated.metrics['test']['auc']:.4f}")
    assert got["epsilon"] == pytest.approx(want["epsilon"], rel=1e-9)
    assert {k: (v["epsilon"], v["steps"]) for k, v in got["parties"].items()} == {
        k: (pytest.approx(v["epsilon"], rel=1e-9), v["steps"]) for k, v in want["parties"].items()}
    # under DP no training row's score or default count leaves a lender
    assert results["metrics"]["test"]["psi_reference"] == "val"
    assert results["dataset"]["positive_rate"]["train"] is None
    assert all(p["default_rate"] is None for p in results["dataset"]["parties"].values())


def test_no_telemetry_update_check_or_runtime_installation(vertical_federation) -> None:
    for name, pid in vertical_federation.pids.items():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"FLWR_TELEMETRY_ENABLED=0" in environ, name
        assert b"FLWR_DISABLE_UPDATE_CHECK=1" in environ, name
        assert b"--allow-runtime-dependency-installation" not in cmdline, name
        if name == "superlink":
            assert b"--disable-runtime-dependency-installation" in cmdline
            assert b"--enable-supernode-auth" in cmdline and b"--ssl-certfile" in cmdline


def test_node_config_errors_name_the_key() -> None:
    good = {"party": "bureau", "data-path": "b.csv", "state-dir": "s", "max-epsilon": 3.0}
    assert NodeConfig.from_context(good).max_epsilon == 3.0
    # a cap is required (issue 30, finding 4): no cap is the node's explicit 'none'
    assert NodeConfig.from_context({**good, "max-epsilon": "none"}).max_epsilon is None
    with pytest.raises(ConfigError, match="'max-epsilon' must be a positive number or 'none'"):
        NodeConfig.from_context({k: v for k, v in good.items() if k != "max-epsilon"})
    with pytest.raises(ConfigError, match="'max-epsilon' must be a positive number"):
        NodeConfig.from_context({**good, "max-epsilon": -1.0})
    with pytest.raises(ConfigError, match="'data-path' must be a non-empty string"):
        NodeConfig.from_context({**good, "data-path": ""})


def test_deploy_command_refuses_bad_input(tmp_path: Path, capsys) -> None:
    assert deploy_main(["run", "--dir", str(tmp_path)]) == 2
    assert "no federation is up here" in capsys.readouterr().err
    assert deploy_main(["up", "--dir", str(tmp_path), "--node-max-epsilon", "bureau=x"]) == 2
    assert "expected party=number" in capsys.readouterr().err
    assert deploy_main(["up", "--dir", str(tmp_path), "federation=centralized"]) == 2
    assert "a deployment runs federation=vertical" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_supernode_waits_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SuperNode's idle poll is capped at the configured interval, its wait for the reply of
    the worker (a local check, 0.5 s in Flower) at 20 ms; a bad interval names the variable."""
    from federation.flower_compat import deployment
    from fl_client import supernode

    slept: list[float] = []
    monkeypatch.setattr(deployment.time, "sleep", slept.append)
    capped = deployment._CappedSleep(0.2)
    capped.sleep(3)  # Flower's idle sleep
    capped.sleep(0.5)  # Flower's wait for the reply and its objects
    assert slept == [0.2, deployment.REPLY_POLL] and deployment.REPLY_POLL <= 0.02
    assert capped.monotonic() > 0  # everything else is the real module
    monkeypatch.setenv(supernode.POLL_ENV, "0")
    with pytest.raises(SystemExit, match=supernode.POLL_ENV):
        supernode.poll_interval()


@pytest.fixture(scope="module")
def private_deployed_runs(vertical_federation) -> list[dict]:
    """A deployed run with label DP and DP-SGD (CI's one; the slow tier adds a second)."""
    return [deploy.run(Path(vertical_federation.directory), ["privacy=label_dp_dpsgd"])]


def _flips(results: dict) -> str:
    """The lender's label flips of one deployed run, the same at every ``train.head``."""
    log = Path(results["federation"]["node_audit_logs"]["lender"])
    notes = [json.loads(line).get("node") for line in log.read_text().splitlines()]
    flips = [n["label_flips_sha256"] for n in notes if n and "label_flips_sha256" in n]
    assert len(flips) >= 4 and len(set(flips)) == 1  # every train.head: the same flips
    assert results["privacy"]["guarantee"]
    return flips[0]


def test_deployed_label_flips_are_drawn_once_per_run(private_deployed_runs) -> None:
    _flips(private_deployed_runs[0])


@pytest.mark.slow
def test_deployed_label_flips_differ_between_runs(vertical_federation,
                                                  private_deployed_runs) -> None:
    """A second deployed run (about 45 s); CI checks one run's flips (the test above)."""
    again = deploy.run(Path(vertical_federation.directory), ["privacy=label_dp"])
    assert _flips(again) != _flips(private_deployed_runs[0])


def test_a_nodes_own_flags_set_its_poll_and_its_noise(tmp_path: Path) -> None:
    from deployment.node import _check, _parser, node_config

    data = tmp_path / "b.csv"
    data.write_text("id,x\n1,2\n")
    base = ["--party", "bureau", "--data", str(data), "--superlink", "127.0.0.1:1",
            "--state-dir", str(tmp_path / "s"), "--insecure", "--max-epsilon", "3"]
    with pytest.raises(SystemExit, match="--poll-interval must lie between 0.01 and 3"):
        _check(_parser().parse_args(base + ["--poll-interval", "5"]))
    assert "reproducible-noise" not in node_config(_parser().parse_args(base))
    config = node_config(_parser().parse_args(base + ["--reproducible-noise"]))
    assert config["reproducible-noise"] is True
    assert NodeConfig.from_context(config).reproducible_noise
    # issue 30, finding 4: a node states its cap; no cap is said, never a default
    with pytest.raises(SystemExit):
        _parser().parse_args(base[:-2])
    uncapped = node_config(_parser().parse_args(base[:-2] + ["--max-epsilon", "none"]))
    assert NodeConfig.from_context(uncapped).max_epsilon is None
    assert NodeConfig.from_context(config).max_epsilon == 3.0


def _ask_for_a_task(address: str, secret_file: Path | None,
                    ca: Path | None = None) -> subprocess.CompletedProcess:
    """Ask a Runtime API for a task from another process (as a local intruder would).

    A node's (ClientApp tasks), or with ``ca`` the SuperLink's (ServerApp tasks, over TLS).
    Its own process: Flower's HTTP client answers a 401 by sending SIGINT to its own process.
    """
    code = ("import sys; from pathlib import Path; "
            "from federation.flower_compat.deployment import TaskOffers; "
            "secret = Path(sys.argv[2]).read_bytes() if sys.argv[2] != '-' else None; "
            "ca = sys.argv[3] if sys.argv[3] != '-' else None; "
            "offers = TaskOffers(sys.argv[1], secret, server=ca is not None, "
            "root_certificates=ca); "
            "print('token:', offers.next_token(), flush=True)")
    return subprocess.run([sys.executable, "-c", code, address,
                           str(secret_file) if secret_file else "-", str(ca) if ca else "-"],
                          capture_output=True, text=True, timeout=60, cwd=deploy.ROOT)


def test_a_local_process_with_only_public_material_cannot_take_the_serverapps_task(
        vertical_federation, tmp_path):
    # issue 19, item 4: the SuperLink's Runtime API answered acquire-task with HTTP 200 to any
    # local process holding the public ca.crt; it now hands tasks only to signed requests
    fed = vertical_federation
    ca = fed.root / "tls" / "ca.crt"
    secret_file = fed.root / "superlink" / "runtime-api.secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"x" * 32)
    for secret in (None, wrong):
        done = _ask_for_a_task(fed.superlink, secret, ca)
        assert done.returncode != 0 and "token:" not in done.stdout, (done.stdout,
                                                                     done.stderr[-2000:])
    done = _ask_for_a_task(fed.superlink, secret_file, ca)
    assert done.returncode == 0 and "token: None" in done.stdout, done.stderr[-2000:]


def test_a_local_process_without_the_nodes_secret_cannot_take_its_tasks(vertical_federation,
                                                                        tmp_path):
    from deployment.node import RUNTIME_SECRET

    pid = vertical_federation.pids["bureau"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    address = f"127.0.0.1:{cmdline[cmdline.index('--runtime-port') + 1]}"
    secret_file = vertical_federation.node_state("bureau") / RUNTIME_SECRET
    assert secret_file.stat().st_mode & 0o777 == 0o600
    wrong = tmp_path / "wrong.secret"
    wrong.write_bytes(b"x" * 32)
    # Flower's SuperNode refuses an unsigned request for the next task, and a wrongly signed one
    for secret in (None, wrong):
        done = _ask_for_a_task(address, secret)
        assert done.returncode != 0 and "token:" not in done.stdout, (done.stdout,
                                                                     done.stderr[-2000:])
    # the node's own secret is accepted (no task is waiting)
    done = _ask_for_a_task(address, secret_file)
    assert done.returncode == 0 and "token: None" in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_on_deploy_run_stops_the_run_on_the_federation(vertical_federation):
    # issue 19, item 9: the run used to go on at the SuperLink and the nodes after Ctrl-C
    fed = vertical_federation
    before = set((fed.root / "runs").glob("*")) if (fed.root / "runs").is_dir() else set()
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.deploy", "run", "--dir", str(fed.root),
         "privacy=off", "train.epochs=200", "train.early_stopping=false"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        log = fed.root / "no run yet"

        def training() -> bool:
            nonlocal log
            new = sorted(set((fed.root / "runs").glob("*")) - before)
            if new:
                log = fed.node_state("bureau") / new[0].name / "bureau" / "audit.jsonl"
            return log.is_file() and log.read_text().count("train.embed") >= 3

        started = wait_while_progressing(lambda: training() or process.poll() is not None,
                                         lambda: written([fed.root / "runs", fed.root / "nodes"]))
        assert started and process.poll() is None, (
            f"the run did not start training (it wrote nothing for {STALL} s, or ended): "
            f"{process.stderr.read()[-2000:] if process.poll() is not None else ''}")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "stopped by SIGINT: run" in err and "was stopped on the federation" in err, err
    run_id = re.search(r"run (\d+) was stopped", err).group(1)
    # the nodes get no more work: the bureau's log stops growing
    time.sleep(3)
    lines = log.read_text().count("\n")
    time.sleep(3)
    assert log.read_text().count("\n") == lines
    listed = subprocess.run([deploy.flwr_bin(), "ls", "--run-id", run_id, "--format", "json",
                             deploy.CONNECTION], env=fed.env(), cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert "stopped" in listed.stdout, listed.stdout[-2000:]


@pytest.mark.slow
def test_a_superlink_restart_is_survived_between_runs_and_named_during_one(tmp_path):
    # issue 19, item 10: a restart refused the nodes (registrations in memory) and a run in
    # progress ended with "the ServerApp left no outcome" and nothing else
    import threading

    with deploy.local_federation(tmp_path, VERTICAL + ["privacy=off"]) as fed:
        deploy.restart_superlink(fed.root)  # between runs: the nodes reconnect
        assert "metrics" in deploy.run(fed.root)
        failure: list[BaseException] = []

        def long_run() -> None:
            try:
                deploy.run(fed.root, ["train.epochs=200", "train.early_stopping=false"])
            except BaseException as exc:  # noqa: BLE001 (the test reads it)
                failure.append(exc)
        running = threading.Thread(target=long_run)
        running.start()
        time.sleep(12)  # in the middle of its training
        deploy.restart_superlink(fed.root)
        running.join(timeout=300)
        assert failure and "the SuperLink restarted during the run" in str(failure[0]), failure
        assert "metrics" in deploy.run(fed.root)  # and the federation works on


@pytest.mark.unit
@pytest.mark.parametrize(("override", "key"), [
    ("seed=7", "seed"), ("data.n_customers=2000", "data.n_customers"),
    ("federation=horizontal", "federation.mode"),
    ("federation.parties=[lender,bureau]", "federation.parties")])
def test_a_run_whose_data_settings_differ_from_the_federations_is_refused_first(
        tmp_path, override, key):
    # issue 19, item 11: a run with another seed trained to the end, then crashed
    fed = deploy.Federation(str(tmp_path), list(VERTICAL), "127.0.0.1:1", ["lender"])
    fed.save()
    with pytest.raises(ConfigError, match=rf"^{key}: this run has .* brought up with"):
        deploy.run(tmp_path, [override])
    assert not (tmp_path / "runs").exists()  # nothing was submitted or written
    settings, _ = deploy.compose_settings(VERTICAL + ["train.epochs=5", "data.scaler=standard"])
    deploy.check_matches_federation(fed, settings)  # the run's own settings may differ


def _run_dir(results: dict) -> Path:
    return Path(results["federation"]["server_audit_log"]).parents[1]


@pytest.mark.slow
def test_a_deployed_vertical_run_resumes_without_a_new_alignment(vertical_federation):
    # issue 19, item 12: a deployed run that stopped part-way had to start again from nothing
    fed = vertical_federation
    same = ["privacy=off", "train.epochs=3", "train.early_stopping=false"]
    whole = deploy.run(fed.root, same)
    first = deploy.run(fed.root, [*same, "federation.stop_after=1"])
    assert first["federation"]["stopped_after"] == 1
    second = deploy.run(fed.root, [*same, f"resume={_run_dir(first)}"])
    assert second["federation"]["resumed_from"] == str(_run_dir(first))
    assert second["metrics"]["test"]["auc"] == whole["metrics"]["test"]["auc"]
    log = fed.node_state("bureau") / _run_dir(second).name / "bureau" / "audit.jsonl"
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "train.embed" in events and not [e for e in events if "psi" in e]


@pytest.mark.slow
def test_a_deployed_horizontal_run_resumes_with_the_same_ledger(horizontal_federation):
    fed, _ = horizontal_federation
    same = ["privacy=dpsgd", "privacy.target_epsilon=3", "federation.rounds=3"]
    whole = deploy.run(fed.root, same)
    first = deploy.run(fed.root, [*same, "federation.stop_after=1"])
    second = deploy.run(fed.root, [*same, f"resume={_run_dir(first)}"])
    assert second["federation"]["completed_rounds"] == 3
    assert second["privacy"]["epsilon"] == pytest.approx(whole["privacy"]["epsilon"], rel=1e-9)


def _check_scores_match_training(fed, run_dir: Path, scoring: dict) -> pd.DataFrame:
    """The lender's scores of a request for its test rows equal the trained model's own."""
    scores = pd.read_csv(scoring["lender_scores"], dtype={"id": str})
    kept = np.load(fed.node_state("lender") / run_dir.name / "lender" / "scores.npz")
    ids = pd.read_csv(fed.root / "nodes" / "lender" / "data.csv", dtype=str).iloc[:, 0]
    trained = pd.DataFrame({"id": ids.to_numpy()[kept["test_rows"]],
                            "score": kept["test_scores"]})
    both = trained.merge(scores, on="id")
    assert len(both) == len(trained) == len(scores) == scoring["applicants"]
    assert float((both["score"] - both["probability"]).abs().max()) <= 1e-6
    return scores


def test_deployed_scoring_reproduces_the_lenders_scores_with_label_dp_and_dpsgd(
        vertical_federation, private_deployed_runs) -> None:
    # issue 20: each node loads the bundle it kept and its own rows; the scores stay at the
    # lender and equal the trained model's own test scores there
    fed = vertical_federation
    results = private_deployed_runs[-1]
    assert results["privacy"]["mechanism"] == "label_dp+dpsgd"
    run_dir = _run_dir(results)
    for party in fed.parties:  # every party's bundle is on its own node's disk
        manifest = json.loads((fed.node_state(party) / run_dir.name / party / "model" /
                               "model.json").read_text())
        assert manifest["model_id"] == results["model"]["model_id"]
    out, scoring = deploy.score(Path(fed.directory), run_dir, ["scoring.rows=test"])
    assert scoring["engine"] == "deployment" and scoring["message_rounds"] == 5
    assert not (out / "scores.csv").exists()  # the coordinator has counts only
    _check_scores_match_training(fed, run_dir, scoring)
    for party in fed.parties:  # every node's log has the scoring messages, purpose scoring
        log = Path(scoring["node_audit_logs"][party])
        verify(log)
        assert {json.loads(line)["purpose"] for line in log.read_text().splitlines()} == {
            "scoring"}


def test_a_deployed_scoring_service_answers_requests_in_four_rounds(
        vertical_federation, private_deployed_runs) -> None:
    # issue 20's latency target: one Flower run serves many requests; each is the lender's
    # reply to the message waiting for it and four rounds (issue 30: a party sends embeddings
    # only of a charged request's applicants), and reproduces the trained scores
    from experiments.deploy import scoring_service as served

    fed = vertical_federation
    run_dir = _run_dir(private_deployed_runs[-1])  # label DP and DP-SGD
    status = served.serve(Path(fed.directory), run_dir)
    try:
        assert status["state"] == "ready" and set(status["tables"]) == {"bureau", "social"}
        assert deploy_main(["serve", str(run_dir), "--dir", fed.directory]) == 2  # one at a time
        out, scoring = served.score(Path(fed.directory), run_dir, ["scoring.rows=test"])
        assert scoring["message_rounds"] == 4 and not (out / "scores.csv").exists()
        scores = _check_scores_match_training(fed, run_dir, scoring)
        ids = pd.read_csv(fed.root / "nodes" / "lender" / "data.csv", dtype=str).iloc[:, 0]
        # one new applicant, through the command line: `deploy score` finds the service
        first = pd.read_csv(fed.root / "nodes" / "lender" / "data.csv").iloc[:1]
        first.drop(columns=[c for c in first.columns if c.startswith(("default", "fraud"))],
                   errors="ignore").to_csv(fed.applicants_dir() / "one.csv", index=False)
        assert deploy_main(["score", str(run_dir), "scoring.applicants=one.csv",
                            "--dir", fed.directory]) == 0
        requests = sorted((Path(status["dir"]) / "requests").glob("*.json"))
        assert len(requests) == 2
        one = json.loads(requests[-1].read_text())
        assert one["rows"] == 1 and set(one["asked"].values()) == {1}
        # the coordinator holds counts: no applicant's ID in what it wrote or logged
        coordinator = "".join(p.read_text() for p in Path(status["dir"]).rglob("*.json*"))
        assert not [i for i in ids.iloc[:300] if f'"{i}"' in coordinator]
        # each party counted what it was asked, in its ledger and its audit log
        for party in ("bureau", "social"):
            ledger = json.loads((fed.node_state(party) / "queries.json").read_text())
            month = next(v for k, v in ledger["lender"].items() if len(k) == 7)
            assert month["service"] >= len(scores) + 1
            log = fed.node_state(party) / status["name"] / party / "audit.jsonl"
            verify(log)
            lines = [json.loads(line) for line in log.read_text().splitlines()]
            assert {line["purpose"] for line in lines} == {"scoring"}
            assert [line["node"]["asked"] for line in lines if "serve_eval" in line["event"]
                    ] == [len(scores), 1]
    finally:
        last = served.stop(Path(fed.directory))
    assert last is not None and last["state"] == "stopped" and last["requests"] == 2
    assert served.running(deploy.Federation.load(Path(fed.directory))) is None


def test_a_service_stopped_through_the_control_api_is_reported_never_replaced(
        vertical_federation, private_deployed_runs, tmp_path: Path, capsys) -> None:
    # issue 29, item 3: `flwr stop` from a local process ended the service, after which `deploy
    # score` silently ran a batch scoring run no --max-queries cap covers, and `deploy
    # stop-service` said no service was up
    from experiments.deploy import scoring_service as served

    fed = vertical_federation
    run_dir = _run_dir(private_deployed_runs[-1])
    status = served.serve(fed.root, run_dir)
    found = deploy.RUN_ID.search((Path(status["dir"]) / "flwr_run.log").read_text())
    assert found is not None
    done = _outsider_flwr(fed, tmp_path / "home", "stop", found.group(1), "x")
    assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 60
    while "ended" not in (served.recorded(deploy.Federation.load(fed.root)) or {}):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    scored_before = sorted((run_dir / "scoring").glob("*")) if (run_dir / "scoring").is_dir() \
        else []
    capsys.readouterr()
    assert deploy_main(["score", str(run_dir), "scoring.rows=test", "--dir", fed.directory]) == 2
    err = capsys.readouterr().err
    assert "is no longer up" in err and "flwr stop" in err, err
    now = sorted((run_dir / "scoring").glob("*")) if (run_dir / "scoring").is_dir() else []
    assert now == scored_before  # no batch scoring run instead
    assert deploy_main(["stop-service", "--dir", fed.directory]) == 0
    assert "had already ended: its Flower run was stopped from outside" in \
        capsys.readouterr().out
    assert served.recorded(deploy.Federation.load(fed.root)) is None


@pytest.mark.slow
def test_a_deployed_holder_answers_lookups_and_caps_a_lender(tmp_path_factory) -> None:
    # issue 21: a holder is a node of its own with its list only; its own --max-queries caps a
    # lender across runs (its ledger is under its state directory); training and scoring ask it
    directory = tmp_path_factory.mktemp("holder_federation")
    overrides = [*VERTICAL, "privacy=off", "blacklists.holders=[consortium]"]
    with deploy.local_federation(directory, overrides) as fed:
        assert fed.holders == ["consortium"] and "consortium" not in fed.parties
        listed = pd.read_csv(fed.root / "nodes" / "consortium" / "data.csv", dtype=str)
        assert list(listed.columns) == ["customer_id"]  # the list, and nothing else
        results = deploy.run(Path(fed.directory))
        b = results["federation"]["blacklists"]["holders"]["consortium"]
        assert b["asked"] == 1000 and b["list_size"] == len(listed)
        run_dir = _run_dir(results)
        manifest = json.loads((fed.node_state("lender") / run_dir.name / "lender" / "model" /
                               "model.json").read_text())
        assert manifest["blacklists"] == ["consortium"]
        ledger = json.loads((fed.node_state("consortium") / "queries.json").read_text())
        month = {k: v for k, v in ledger["lender"].items() if len(k) == 7}  # "2026-12"
        assert list(month.values()) == [{"training": 1000}]
        log = Path(results["federation"]["node_audit_logs"]["consortium"])
        verify(log)
        lookups = [json.loads(x) for x in log.read_text().splitlines()
                   if json.loads(x)["event"] == "query.list_answer"]
        assert [(x["node"]["asked"], x["node"]["lookup"]) for x in lookups] == [
            (1000, "training")]
        out, scoring = deploy.score(Path(fed.directory), run_dir,
                                    ["scoring.rows=test", "blacklists.on_hit=review"])
        assert scoring["message_rounds"] == 5  # the lookup rides on the alignment's rounds
        scores = pd.read_csv(scoring["lender_scores"], dtype={"id": str})
        kept = np.load(fed.node_state("lender") / run_dir.name / "lender" / "scores.npz")
        assert np.allclose(np.sort(scores["probability"]), np.sort(kept["test_scores"]),
                           atol=1e-6)
        on = scores["on_list_consortium"] == 1
        assert (scores["decision"] == np.where(on, "review", "score")).all()
        ledger = json.loads((fed.node_state("consortium") / "queries.json").read_text())
        month = {k: v for k, v in ledger["lender"].items() if len(k) == 7}
        assert list(month.values()) == [{"training": 1000, "scoring": len(scores)}]
        # a scoring service asks the holder too, each request in the parties' round
        from experiments.deploy import scoring_service as served

        served.serve(Path(fed.directory), run_dir, ["blacklists.on_hit=review"])
        try:
            _, again = served.score(Path(fed.directory), run_dir, ["scoring.rows=test"])
        finally:
            served.stop(Path(fed.directory))
        assert again["blacklists"]["consortium"]["listed"] == int(on.sum())
        assert again["lender"]["decisions"] == scoring["lender"]["decisions"]
        ledger = json.loads((fed.node_state("consortium") / "queries.json").read_text())
        month = {k: v for k, v in ledger["lender"].items() if len(k) == 7}
        assert list(month.values()) == [
            {"training": 1000, "scoring": len(scores), "service": len(scores)}]
        # a run asking past the nodes' training cap (lowered by the run's) fails: the holder
        # and the parties charge the same alignment request, and any of them refuses first
        with pytest.raises(FederationError, match=r"(consortium|bureau|social) refuses: lender "
                                                  r"asked 1000 IDs for training"):
            deploy.run(Path(fed.directory), ["blacklists.max_queries=1500"])


def _check_horizontal_scoring(fed, overrides: list[str], results: dict) -> None:
    """Issue 20: every lender scores its own applicants with the bundle it kept.

    The scores stay at each lender and equal the coordinator's copy of the model on the same
    rows; the server gets counts (one message round).
    """
    from credit_data.loading import load_population
    from credit_data.split import TEST, assign_split
    from credit_data.tables import PartyTable, Population
    from credit_fl.one_bundle_scoring import score_with_bundle
    from privacy.split_key import derive_split_key

    run_dir = _run_dir(results)
    out, scoring = deploy.score(Path(fed.directory), run_dir, ["scoring.rows=test"])
    assert scoring["mode"] == "horizontal" and scoring["message_rounds"] == 1
    assert sorted(scoring["lenders"]) == sorted(fed.parties)
    assert scoring["model_id"] == results["model"]["model_id"]
    assert not (out / "scores.csv").exists()  # the coordinator has counts only
    assert "Each lender scored its own applicants" in (out / "report.md").read_text()
    settings, _ = deploy.compose_settings(overrides)
    population = load_population(settings.data, settings.seed, labels=False)
    total = 0
    for lender in fed.parties:
        scores = pd.read_csv(scoring["lender_scores"][lender], dtype={"id": str})
        own = pd.read_csv(fed.root / "nodes" / lender / "data.csv", dtype=str).iloc[:, 0]
        key = derive_split_key(fed.node_state(lender), lender, seed=settings.seed,
                               reproducible=False)  # the lender node's own split
        test = own[assign_split(pd.Index(own), key, settings.data.split) == TEST]
        assert sorted(scores["id"]) == sorted(test)
        assert scoring["lenders"][lender]["rows"] == len(scores)
        # the coordinator's bundle on the same applicants gives the same scores
        lender_table = population.tables["lender"]
        cut = Population(population.name, {
            p: (PartyTable("lender", lender_table.frame.loc[scores["id"]],
                           lender_table.numeric, lender_table.categorical, "test")
                if p == "lender" else t) for p, t in population.tables.items()})
        expected, _ = score_with_bundle(run_dir / "model", cut, settings)
        both = scores.merge(expected, on="id", suffixes=("", "_coordinator"))
        assert len(both) == len(scores)
        assert float((both["probability"] - both["probability_coordinator"]).abs().max()) \
            <= 1e-6
        total += len(scores)
    assert scoring["applicants"] == total



# --- issue 29, item 7: the partner guide's commands, as written -------------------------------
def _guide_commands() -> list[str]:
    """Return the shell commands of docs/partner-guide.md's code blocks, one string each."""
    text = (deploy.ROOT / "docs" / "partner-guide.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", "", block)  # continuation lines joined
        commands += [c.strip() for c in joined.splitlines() if c.strip()]
    return commands


def _wait_offline(fed: deploy.Federation, party: str, timeout: float = 90) -> None:
    """Wait until the SuperLink no longer counts ``party``'s node online (it may then rejoin)."""
    from deployment.pins import read_pins

    node = read_pins(fed.runs)[party]
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run([deploy.flwr_bin(), "supernode", "list", deploy.CONNECTION,
                                 "--format", "json"], env=fed.env(), cwd=deploy.ROOT,
                                capture_output=True, text=True, timeout=60)
        status = {int(n["node-id"]): n["status"] for n in json.loads(listed.stdout)["nodes"]}
        if status.get(node) != "online" and not deploy._alive(fed.pids[party]):
            return
        assert time.monotonic() < deadline, status
        time.sleep(1)


@pytest.mark.slow
def test_the_partner_guides_commands_run_as_written(vertical_federation, tmp_path: Path) -> None:
    # the bureau's node of the federation is replaced by the one the guide starts (slow: in the
    # full module under CI load the replaced node was once not counted online; see the note)
    import shlex

    fed = vertical_federation
    state = tmp_path / "var-lib-credit-fl"
    ours = {"/data/bureau.csv": str(fed.root / "nodes" / "bureau" / "data.csv"),
            "coordinator.example.org:8000": fed.superlink,
            " ca.crt": f" {fed.root / 'tls' / 'ca.crt'}",
            "keys/partners": str(fed.root / "peer-keys"), "keys/bureau": str(
                fed.root / "keys" / "bureau"), "/var/lib/credit-fl": str(state),
            ".venv/bin/python": sys.executable}

    def as_here(command: str) -> list[str]:
        for theirs, mine in ours.items():
            command = command.replace(theirs, mine)
        return shlex.split(command)

    commands = _guide_commands()
    (node,) = [c for c in commands if "deployment.node --party bureau" in c]
    assert "--categorical" not in node  # the bureau's columns are all numeric
    os.killpg(fed.pids["bureau"], signal.SIGTERM)  # the federation's own bureau node leaves
    _wait_offline(fed, "bureau")
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        guide = subprocess.Popen(as_here(node), stdout=out, stderr=subprocess.STDOUT,
                                 env=fed.env(), cwd=deploy.ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"SuperNode ID:" not in log.read_bytes():
            assert guide.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        results = deploy.run(fed.root, ["train.epochs=1"])  # label DP + DP-SGD: under its cap
        run = _run_dir(results).name
        assert (state / run / "bureau" / "audit.jsonl").is_file()
        for command in commands:  # the node's own tools, as the guide shows them
            if "deployment.budget show" in command or "models.bundle verify" in command:
                done = subprocess.run(as_here(command.replace("<run>", run)), env=fed.env(),
                                      cwd=deploy.ROOT, capture_output=True, text=True,
                                      timeout=120)
                assert done.returncode == 0, (command, done.stdout, done.stderr)
    finally:
        os.killpg(guide.pid, signal.SIGTERM)
        guide.wait(timeout=60)
        deadline = time.monotonic() + 60
        while deploy._alive(guide.pid):  # its SuperNode too: a late leave would undo the restart
            assert time.monotonic() < deadline
            time.sleep(0.2)
        _wait_offline(fed, "bureau")
        deploy.restart_node(fed.root, "bureau")  # the federation's own node, for what follows


# --- issue 29: what a local process holding only ca.crt can do ----------------------------------
class _Planted:
    """A pickle that would create a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _outsider_run(fed: deploy.Federation, home: Path, config: dict[str, str]
                  ) -> subprocess.CompletedProcess:
    """Submit a run of this app as a local process with its own Flower config and ca.crt only."""
    home.mkdir(parents=True, exist_ok=True)
    run_config = home / "run_config.toml"
    run_config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    return _outsider_flwr(fed, home, "run", str(deploy.APP_DIR), "x", "--run-config",
                          str(run_config), "--stream")


def _a_finished_run(fed: deploy.Federation) -> Path:
    done = sorted(p for p in fed.runs.iterdir() if (p / "results.json").is_file())
    return done[-1] if done else _run_dir(deploy.run(fed.root, ["privacy=off"]))


def test_a_run_config_from_outside_writes_nowhere_and_runs_nothing(vertical_federation,
                                                                   tmp_path: Path) -> None:
    # issue 29, items 1 and 2: a run config chose where the coordinator wrote (its audit log,
    # key and outcome, 0644) and a planted checkpoint on resume ran code in the coordinator
    fed = vertical_federation
    real = _a_finished_run(fed)
    log_before = (real / "server" / "audit.jsonl").read_bytes()
    target = tmp_path / "attacker"
    marker = tmp_path / "code-ran"
    planted = tmp_path / "planted"
    planted.mkdir()
    import pickle

    (planted / "checkpoint.pt").write_bytes(pickle.dumps(_Planted(marker)))
    settings, plain = deploy.compose_settings(VERTICAL + ["privacy=off"])
    runs_before = sorted(fed.runs.iterdir())
    for name, resume in ((str(target), None), ("../../attacker", None), (real.name, None),
                         ("2026-01-01_00-00-00_vertical", str(planted))):
        config = {"run-settings": json.dumps(plain | {"resume": resume}), "run-name": name,
                  "columns": json.dumps(fed.columns)}
        done = _outsider_run(fed, tmp_path / "home", config)
        assert "Successfully started run" in done.stdout + done.stderr  # the API took it
    assert not target.exists() and not marker.exists()
    assert sorted(fed.runs.iterdir()) == runs_before  # no directory made, none written to
    assert (real / "server" / "audit.jsonl").read_bytes() == log_before
    assert verify(real / "server" / "audit.jsonl").ok
    # what the coordinator writes is its own: runs 0700, a run's files 0600
    assert fed.runs.stat().st_mode & 0o777 == 0o700
    assert (real / "server" / "audit.jsonl").stat().st_mode & 0o077 == 0
    for party in fed.parties:  # each party's raw rows are its own user's alone
        assert (fed.root / "nodes" / party / "data.csv").stat().st_mode & 0o077 == 0


def test_the_coordinators_own_resume_refuses_a_planted_checkpoint(vertical_federation,
                                                                 tmp_path: Path) -> None:
    import pickle

    fed = vertical_federation
    real = _a_finished_run(fed)
    marker = tmp_path / "code-ran"
    (real / "checkpoint.pt").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(ConfigError, match="checkpoint"):
        deploy.run(fed.root, ["privacy=off", f"resume={real}"])
    assert not marker.exists()
    with pytest.raises(ConfigError, match="not a run of the federation"):
        deploy.run(fed.root, ["privacy=off", f"resume={tmp_path}"])


def _outsider_flwr(fed: deploy.Federation, home: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``flwr`` as a local process with its own Flower config and ca.crt only."""
    home.mkdir(parents=True, exist_ok=True)
    ca = home / "ca.crt"
    ca.write_bytes((fed.root / "tls" / "ca.crt").read_bytes())
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = "{fed.superlink}"\n'
        f'root-certificates = "{ca}"\n')
    return subprocess.run([deploy.flwr_bin(), *args], env={**fed.env(), "FLWR_HOME": str(home)},
                          capture_output=True, text=True, timeout=120, cwd=home)


def test_a_second_node_claiming_a_party_is_refused_by_name_while_runs_go_on(
        vertical_federation, tmp_path: Path, caplog) -> None:
    # issue 29, item 3: a key registered by a local process, and a node with it that says it is
    # 'bureau', made every run fail ("two nodes both say they are 'bureau'")
    fed = vertical_federation
    key = tmp_path / "impostor"
    make_node_key(key)
    done = _outsider_flwr(fed, tmp_path / "home", "supernode", "register", f"{key}.pub", "x")
    assert done.returncode == 0, done.stdout + done.stderr
    from deployment.pins import node_id_from_register_output

    impostor_id = node_id_from_register_output(done.stdout)
    data = tmp_path / "bureau.csv"  # rows of its own in the bureau's columns
    pd.read_csv(fed.root / "nodes" / "bureau" / "data.csv").head(50).to_csv(data, index=False)
    impostor = subprocess.Popen(
        [sys.executable, "-m", "deployment.node", "--party", "bureau", "--data", str(data),
         "--superlink", fed.superlink, "--root-certificates", str(tmp_path / "home" / "ca.crt"),
         "--auth-key", str(key), "--state-dir", str(tmp_path / "state"), "--runtime-port",
         str(deploy._free_port()), "--max-epsilon", "none"], env=fed.env(), cwd=deploy.ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the SuperLink lists it online
            listed = _outsider_flwr(fed, tmp_path / "home", "supernode", "list", "x", "--format",
                                    "json")
            nodes = {int(n["node-id"]): n["status"] for n in json.loads(listed.stdout)["nodes"]}
            if nodes.get(impostor_id) == "online":
                break
            assert impostor.poll() is None and time.monotonic() < deadline - 1, nodes
            time.sleep(1)
        with caplog.at_level("WARNING", logger="credit_fl"):
            results = deploy.run(fed.root, ["privacy=off", "train.epochs=1"])
    finally:
        impostor.terminate()
        impostor.wait(timeout=30)
    refused = results["federation"]["refused_nodes"]  # named, and sent nothing
    assert [(r["node_id"], r["claimed"]) for r in refused] == [(impostor_id, None)]
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").glob("2*"))
    assert results["metrics"]["test"]["auc"] > 0.55  # the run went on with the real bureau
    assert f"node {impostor_id}" in caplog.text  # the coordinator named the foreign key


def test_an_unregistered_node_is_named_before_a_run_is_submitted(vertical_federation,
                                                                  tmp_path: Path) -> None:
    # issue 29, item 3: `flwr supernode unregister` from a local process removed a node, which
    # exited saying only "terminated gracefully". Last in this module: the federation's bureau
    # cannot connect again afterwards.
    fed = vertical_federation
    from deployment.pins import read_pins

    bureau = read_pins(fed.runs)["bureau"]
    done = _outsider_flwr(fed, tmp_path / "home", "supernode", "unregister", str(bureau), "x")
    assert done.returncode == 0, done.stdout + done.stderr
    runs_before = sorted(fed.runs.iterdir())
    with pytest.raises(deploy.DeployError, match=r"node of 'bureau' \(node \d+\) is no longer "
                                                 "registered"):
        deploy.run(fed.root, ["privacy=off"])
    assert sorted(fed.runs.iterdir()) == runs_before  # nothing prepared, nothing submitted
    # the node itself says why it left, and exits non-zero
    log = fed.root / "logs" / "bureau.log"
    deadline = time.monotonic() + 90
    while "ended on its own" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(1)
    assert "flwr supernode unregister" in log.read_text(errors="replace")
