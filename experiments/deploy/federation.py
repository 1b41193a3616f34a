"""A whole federation on this machine, on Flower's deployment engine: up, run, score, down.

The orchestration behind ``credit-fl deploy`` (:mod:`experiments.deploy.cli` names the
commands): certificates and keys, a SuperLink and one node per party (:mod:`deployment.node`),
``flwr run`` of the deployed apps, and the run's files from what the server received. The
collector reads nothing from the nodes' directories, as a real coordinator could not: the
metrics come from the lender's score summaries (a horizontal server pools the lenders'), the
same summaries a simulation's metrics come from. The row-level scores stay at the lender
(``scores.npz`` in its state directory); there is no ``predictions.csv`` and no membership audit
at the coordinator. The scoring service (:mod:`experiments.deploy.scoring_service`) and the deployed
monitor (:mod:`experiments.deploy.monitor`) build on this module, never the reverse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from credit_data.blacklists import holder_lists
from credit_data.consent import SCORING
from credit_data.errors import ConfigError, DeployError
from credit_data.horizontal import LenderRows
from credit_data.loading import load_population
from credit_data.settings import LABEL_HOLDER, PARTIES
from credit_data.tables import PartyTable
from credit_fl.attacks import attack_outcome
from credit_fl.batch_scoring import render_scoring
from credit_fl.config import config_of, settings_of
from credit_fl.config import settings as run_settings
from credit_fl.horizontal import horizontal_outcome, keep_bundle, lender_rows
from credit_fl.outcome import RunOutcome, training_parties
from credit_fl.results import write_run
from credit_fl.vertical import vertical_outcome
from deployment.coordinator import check_run_name, prepare, server_dir
from deployment.pins import node_id_from_register_output, read_pins, write_pins
from deployment.run_config import (
    COLUMNS,
    MODEL_RUN,
    OUTCOME,
    RUN_NAME,
    RUN_SETTINGS,
    TASK,
)
from deployment.run_files import read_outcome
from experiments.plots import write_plots
from federation.consent_counts import consent_released, run_summary
from federation.credentials import (
    ServerCredentials,
    make_node_key,
    make_server_credentials,
    write_private,
)
from federation.flower_compat import QUIET
from federation.run_settings import RunSettings
from federation.settings import Mode
from federation.storage import write_atomic

log = logging.getLogger("credit_fl")
ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "deployment" / "flower_app"
STATE = "federation.json"
CONNECTION = "local"



@dataclass
class Federation:
    """What ``up`` started: addresses, files and processes (saved as ``federation.json``)."""

    directory: str
    overrides: list[str]
    superlink: str
    parties: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    holders: list[str] = field(default_factory=list)  # blacklist holders' nodes

    @property
    def root(self) -> Path:
        return Path(self.directory)

    def save(self) -> None:
        write_atomic(self.root / STATE, json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Federation:
        path = directory / STATE
        if not path.is_file():
            raise DeployError(f"{path}: no federation is up here (run `python -m "
                              f"experiments.deploy up --dir {directory}` first)")
        return cls(**json.loads(path.read_text()))

    def env(self) -> dict[str, str]:
        """Return the environment of every Flower command: its own home, quiet (no telemetry)."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, **QUIET, "PATH": path, "FLWR_HOME": str(self.root / "flwr")}

    @property
    def runs(self) -> Path:
        """The coordinator's own directory of runs (0700; :mod:`deployment.coordinator`)."""
        return self.root / "runs"

    def node_state(self, party: str) -> Path:
        return self.root / "nodes" / party / "state"

    def periods_dir(self, party: str) -> Path:
        """Return a party node's directory of later periods' files (``monitor.period``)."""
        return self.root / "nodes" / party / "periods"

    def applicants_dir(self) -> Path:
        """Return the lender node's directory of new applicants' files (``scoring.applicants``)."""
        return self.root / "nodes" / LABEL_HOLDER / "applicants"


def compose_settings(overrides: list[str]) -> tuple[RunSettings, dict[str, Any]]:
    """Return the settings ``credit-fl run`` composes (:func:`credit_fl.settings`), and plain."""
    settings = run_settings(*overrides)
    if settings.federation.mode not in (Mode.vertical, Mode.horizontal):
        raise ConfigError(f"federation={settings.federation.mode.value}: a deployment runs "
                          "federation=vertical or federation=horizontal")
    return settings, config_of(settings)


def flwr_bin() -> str:
    """Return the ``flwr`` command of this environment."""
    return shutil.which("flwr", path=str(Path(sys.executable).parent)) or "flwr"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT, start_new_session=True, umask=0o077)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path,
                   timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeployError(f"{what} exited with code {process.returncode}; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise DeployError(f"{what} did not listen on port {port} within {timeout:.0f} s; see {log}")


def _activated(log: Path) -> bool:
    """Whether a node's SuperNode has been let in (Flower logs its node ID then)."""
    return log.is_file() and b"SuperNode ID:" in log.read_bytes()


# --- each party's own file -------------------------------------------------------------------
def _private_csv(frame: pd.DataFrame, path: Path, index: bool = True) -> None:
    """Write a party's rows readable by its own user alone (its directory 0700, the file 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_atomic(path, frame.to_csv(index=index), mode=0o600)


def _table_csv(table: PartyTable, id_column: str, label: str | None, path: Path) -> None:
    frame = table.frame.copy()
    if label is not None and table.labels is not None:
        frame[label] = table.labels[label].to_numpy()
    frame.index.name = id_column
    _private_csv(frame, path)


def _lender_csv(rows: LenderRows, id_column: str, label: str, path: Path) -> None:
    frame = rows.frame[list(rows.numeric + rows.categorical)].copy()
    frame[label] = rows.y.astype(np.int64)
    frame.index.name = id_column
    _private_csv(frame, path)


def write_party_files(settings: RunSettings, root: Path
                      ) -> tuple[dict[str, tuple[Path, str]], dict[str, list[str]]]:
    """Write each node's own CSV; return (party -> (file, categorical columns), columns)."""
    data = settings.data
    files: dict[str, tuple[Path, str]] = {}
    if settings.federation.mode is Mode.vertical:
        population = load_population(data, settings.seed)
        parties = training_parties(settings, population)
        for party in parties:
            table = population.tables[party]
            path = root / "nodes" / party / "data.csv"
            _table_csv(table, data.id_column, data.label if party == LABEL_HOLDER else None,
                       path)
            files[party] = (path, ",".join(table.categorical))
        lists = holder_lists(settings.blacklists.holders, data.blacklists, data.id_column,
                             population, settings.seed)
        for holder, the_list in lists.items():  # a holder's node gets its list only
            path = root / "nodes" / holder / "data.csv"
            _private_csv(pd.DataFrame({data.id_column: list(the_list.ids)}), path, index=False)
            files[holder] = (path, "")
        return files, {}
    _, _, rows = lender_rows(settings)
    for name, r in rows.items():
        path = root / "nodes" / name / "data.csv"
        _lender_csv(r, data.id_column, data.label, path)
        files[name] = (path, ",".join(r.categorical))
    first = next(iter(rows.values()))
    return files, {"numeric": list(first.numeric), "categorical": list(first.categorical)}


# --- up / run / down -------------------------------------------------------------------------
def _start_superlink(fed: Federation) -> None:
    """Start the SuperLink and the launcher of its ServerApps; wait until it listens."""
    log = fed.root / "logs" / "superlink.log"
    link = _start(fed.commands["superlink"], log, fed.env())
    fed.pids["superlink"] = link.pid
    fed.save()
    _wait_for_port(int(fed.superlink.rsplit(":", 1)[1]), link, "the SuperLink", log)
    launcher = _start([*fed.commands["serverapp-launcher"], "--parent-pid", str(link.pid)],
                      fed.root / "logs" / "serverapp-launcher.log", fed.env())
    fed.pids["serverapp-launcher"] = launcher.pid
    fed.save()


def restart_superlink(directory: Path) -> Federation:
    """Stop the federation's SuperLink and start it again (its state is in its database)."""
    fed = Federation.load(directory)
    _stop([fed.pids.pop("serverapp-launcher")] if "serverapp-launcher" in fed.pids else [])
    _stop([fed.pids.pop("superlink")] if "superlink" in fed.pids else [])
    _start_superlink(fed)
    return fed


def _write_secret(path: Path) -> None:
    """Write a fresh 32-byte secret readable by its owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private(path, secrets.token_bytes(32))


DEMO_VOLUME = 100
"""The loopback demo federation's declared lender volume: this many times the lender's rows a
month, for applications and for training (its tests train and score the same synthetic rows
many times a day). A partner's node declares what its agreement with the lender says."""


def demo_release_flags(party: str, settings: RunSettings,
                       files: dict[str, tuple[Path, str]], explanations: bool = False
                       ) -> list[str]:
    """Return the flags ``up`` gives a vertical demo node: its query volume and its opt-ins.

    Stated plainly: the demo's nodes hold synthetic rows and opt into the default run's
    releases outside any epsilon (a party's exact embeddings, the lender's per-record
    gradients) and into monitoring (``deploy monitor``), which a partner's node refuses
    unless its own config opts in. ``explanations``: the passive parties opt into sending
    reason codes' attributions too (``--release-explanations``; ``bench explain``).
    """
    if settings.federation.mode is not Mode.vertical:
        return []
    if party == LABEL_HOLDER:
        return ["--release-record-gradients", "--release-monitoring"]
    with files[LABEL_HOLDER][0].open("rb") as lender:
        volume = str(DEMO_VOLUME * max(sum(1 for _ in lender) - 1, 1))
    flags = ["--lender-applications", volume, "--lender-training-rows", volume]
    return flags if party in settings.blacklists.holders else [
        *flags, "--release-exact-embeddings", "--release-monitoring",
        *(["--release-explanations"] if explanations else [])]


def up(directory: Path, overrides: list[str],
       node_max_epsilon: dict[str, float] | None = None, *,
       explanations: bool = False) -> Federation:
    """Start a SuperLink and one authenticated node per party over TLS; see the module doc.

    ``explanations``: the passive parties' nodes start with ``--release-explanations``.
    """
    settings, _ = compose_settings(overrides)
    if (directory / STATE).is_file():
        raise DeployError(f"{directory}: a federation is already up here; run `down` first")
    caps = dict(node_max_epsilon or {})
    directory.mkdir(parents=True, exist_ok=True)
    fed = Federation(str(directory.resolve()), list(overrides), "", [])
    try:
        files, fed.columns = write_party_files(settings, fed.root)
        unknown = sorted(set(caps) - set(files))
        if unknown:
            raise ConfigError(f"--node-max-epsilon names unknown parties {unknown}; the nodes "
                              f"are {sorted(files)}")
        fed.holders = [h for h in files if h in settings.blacklists.holders]
        fed.parties = [p for p in files if p not in fed.holders]
        creds = make_server_credentials(fed.root / "tls")
        _plan_superlink(fed, creds)
        _start_superlink(fed)
        write_pins(fed.runs, _register_nodes(fed, files))  # the ServerApp refuses any other
        # the partners exchange their public keys directly (here: one directory for all)
        peers = fed.root / "peer-keys"
        peers.mkdir(parents=True, exist_ok=True)
        for party in files:
            shutil.copy(fed.root / "keys" / f"{party}.pub", peers / f"{party}.pub")
        processes = {}
        for party, (path, categorical) in files.items():
            cmd = _node_command(fed, settings, party, path, categorical, creds.ca_cert, peers,
                                caps)
            cmd += demo_release_flags(party, settings, files, explanations)
            cmd += _demo_dirs(fed, settings, party)
            processes[party] = _start(cmd, fed.root / "logs" / f"{party}.log", fed.env())
            fed.pids[party], fed.commands[party] = processes[party].pid, cmd  # restart_node
            fed.save()
        _wait_online(fed, processes)
    except BaseException:
        down(directory)
        raise
    return fed


def _plan_superlink(fed: Federation, creds: ServerCredentials) -> None:
    """Write the ``flwr`` connection config; keep the SuperLink's and launcher's commands.

    The SuperLink keeps its state (registered nodes, runs) in a database file, so that a
    restarted SuperLink still knows the nodes; the ServerApp's tasks go only to requests
    signed with a secret of our launcher's.
    """
    port = _free_port()
    fed.superlink = f"127.0.0.1:{port}"
    (fed.root / "flwr").mkdir(parents=True, exist_ok=True)
    (fed.root / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{fed.superlink}"\nroot-certificates = "{creds.ca_cert}"\n')
    bin_dir = Path(sys.executable).parent
    secret = fed.root / "superlink" / "runtime-api.secret"
    _write_secret(secret)
    fed.commands["superlink"] = [
        str(bin_dir / "flower-superlink"), "--ssl-ca-certfile", str(creds.ca_cert),
        "--ssl-certfile", str(creds.cert), "--ssl-keyfile", str(creds.key),
        "--enable-supernode-auth", "--disable-runtime-dependency-installation",
        "--host", "127.0.0.1", "--port", str(port), "--isolation", "process",
        "--superexec-auth-secret-file", str(secret),
        "--database", str(fed.root / "superlink" / "state.db")]
    fed.commands["serverapp-launcher"] = [
        sys.executable, "-m", "deployment.serverapp_launcher", "--runtime-api-address",
        fed.superlink, "--root-certificates", str(creds.ca_cert), "--secret-file",
        str(secret), "--token-dir", str(fed.root / "superlink" / "tokens"),
        "--runs-dir", str(fed.runs)]


def _register_nodes(fed: Federation, files: dict[str, tuple[Path, str]]) -> dict[str, int]:
    """Make each party's key and register it with the SuperLink; return each node's id."""
    flwr = flwr_bin()
    registering = [subprocess.Popen(
        [flwr, "supernode", "register", str(make_node_key(fed.root / "keys" / party)),
         CONNECTION], env=fed.env(), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT) for party in files]
    pins = {}
    for party, done in zip(files, registering, strict=True):
        out, _ = done.communicate(timeout=120)
        if done.returncode != 0:
            raise DeployError(f"registering the key of '{party}' failed: "
                              f"{out.decode(errors='replace')[-2000:]}")
        pins[party] = node_id_from_register_output(out.decode(errors="replace"))
    return pins


def _node_command(fed: Federation, settings: RunSettings, party: str, path: Path,
                  categorical: str, ca_cert: Path, peers: Path, caps: dict[str, float]
                  ) -> list[str]:
    """Return the command starting ``party``'s node, with its data, keys and cap."""
    cmd = [sys.executable, "-m", "deployment.node", "--party", party, "--data",
           str(path), "--superlink", fed.superlink, "--root-certificates",
           str(ca_cert), "--auth-key", str(fed.root / "keys" / party), "--peer-keys", str(peers),
           "--state-dir",
           str(fed.node_state(party)), "--categorical", categorical,
           "--id-column", settings.data.id_column, "--runtime-port", str(_free_port())]
    # a node states its cap (required); the local federation's synthetic nodes are
    # uncapped, said so, unless --node-max-epsilon names them
    return cmd + ["--max-epsilon", str(caps.get(party, "none"))]


def _demo_dirs(fed: Federation, settings: RunSettings, party: str) -> list[str]:
    """Return a vertical node's directories of later periods and of new applicants."""
    cmd: list[str] = []
    if settings.federation.mode is Mode.vertical and party not in fed.holders:
        fed.periods_dir(party).mkdir(mode=0o700, parents=True, exist_ok=True)
        cmd += ["--periods-dir", str(fed.periods_dir(party))]  # deploy monitor
    if party == LABEL_HOLDER and settings.federation.mode is Mode.vertical:
        applicants = fed.applicants_dir()
        applicants.mkdir(parents=True, exist_ok=True)
        cmd += ["--applicants-dir", str(applicants)]  # new applicants to score
    return cmd


def _wait_online(fed: Federation, processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Wait up to 120 s for every node to come online; refuse a node that exited."""
    deadline = time.monotonic() + 120
    logs = {party: fed.root / "logs" / f"{party}.log" for party in processes}
    while not all(_activated(log) for log in logs.values()):
        for party, process in processes.items():
            if process.poll() is not None:
                raise DeployError(f"node '{party}' exited with code {process.returncode}; "
                                  f"see {logs[party]}")
        if time.monotonic() > deadline:
            raise DeployError("the nodes did not all come online within 120 s")
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Whether any process of the group ``up`` started as ``pid`` is left, running.

    (A node's SuperNode outlives a node killed with SIGKILL unless it got the parent-death
    signal.) A zombie is not left: it has ended and waits for its parent to collect its status;
    an orphan's parent is the init process, which in a container may collect it only seconds
    later (every 2 s measured here) or never.
    """
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but not ours to signal
        return True
    return _group_runs(pid)


def _group_runs(group: int) -> bool:
    """Whether a process of ``group`` is more than a zombie (True where there is no ``/proc``)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:  # after the command's closing parenthesis: state, parent, process group
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # it ended while we looked
        if int(pgrp) == group and state not in ("Z", "X"):
            return True
    return False


STOPPED, GONE, LEFT = "stopped", "already gone", "could not be stopped"


def _stop(pids: list[int], timeout: float = 5) -> dict[int, str]:
    """SIGTERM each process group, wait for all of them together, SIGKILL what is left.

    Returns what became of each: :data:`STOPPED`, :data:`GONE` (nothing of it was running) or
    :data:`LEFT` (still there after SIGKILL, or not ours to signal).
    """
    outcome = {pid: STOPPED if _alive(pid) else GONE for pid in pids}
    running = [pid for pid in pids if outcome[pid] == STOPPED]
    for pid in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while (left := [p for p in running if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2  # SIGKILL is not instant
    while (left := [p for p in left if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    outcome.update(dict.fromkeys(left, LEFT))
    return outcome


@dataclass(frozen=True)
class Stopping:
    """What ``down`` did to each process ``up`` started, by name (``superlink``, a party...)."""

    stopped: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)  # name -> process group still there

    def describe(self) -> str:
        """One line per outcome, for the command line."""
        if not (self.stopped or self.gone or self.left):
            return "nothing was running"
        lines = [f"stopped: {', '.join(self.stopped)}"] if self.stopped else []
        if self.gone:
            lines.append(f"already gone (nothing to stop): {', '.join(self.gone)}")
        if self.left:
            lines.append("could not be stopped: " + ", ".join(
                f"{name} (process group {pid}: `kill -9 -- -{pid}`)"
                for name, pid in self.left.items()))
        return "\n".join(lines)


def down(directory: Path) -> Stopping:
    """Stop every process of the federation in ``directory``; say what became of each.

    A process that could not be stopped stays in ``federation.json`` (``down`` again tries it
    again); when all are gone the file goes.
    """
    path = directory / STATE
    if not path.is_file():
        return Stopping()
    fed = Federation(**json.loads(path.read_text()))
    nodes = {name: pid for name, pid in fed.pids.items() if name != "superlink"}
    outcome = _stop(list(nodes.values()))  # nodes first
    if "superlink" in fed.pids:
        outcome |= _stop([fed.pids["superlink"]])
    (directory / "service.json").unlink(missing_ok=True)  # a scoring service ends with them
    by_name = {name: outcome[pid] for name, pid in fed.pids.items()}
    result = Stopping([n for n, o in by_name.items() if o == STOPPED],
                      [n for n, o in by_name.items() if o == GONE],
                      {n: fed.pids[n] for n, o in by_name.items() if o == LEFT})
    if result.left:
        fed.pids = dict(result.left)
        fed.save()
    else:
        path.unlink()
    return result


def restart_node(directory: Path, party: str, timeout: float = 120) -> Federation:
    """Start ``party``'s node again with the command ``up`` used; wait until it is let in.

    A node that died, or one that is still running (it is stopped first).

    A node killed outright is marked offline by the SuperLink at once when its SuperNode could
    leave (the parent-death signal) and within twice its heartbeat interval otherwise; until
    then the SuperLink refuses to activate it again, and this raises with the node's log.
    """
    fed = Federation.load(directory)
    if party not in [*fed.parties, *fed.holders] or party not in fed.commands:
        raise DeployError(f"{fed.root}: no node '{party}' was started here (nodes: "
                          f"{[*fed.parties, *fed.holders]})")
    if party in fed.pids and _stop([fed.pids[party]])[fed.pids[party]] == LEFT:
        raise DeployError(f"the node of '{party}' (process group {fed.pids[party]}) could "
                          "not be stopped; stop it, then restart it")
    log = fed.root / "logs" / f"{party}.log"
    start = log.stat().st_size if log.is_file() else 0
    process = _start(fed.commands[party], log, fed.env())
    fed.pids[party] = process.pid
    fed.save()
    deadline = time.monotonic() + timeout
    while b"SuperNode ID:" not in log.read_bytes()[start:]:
        if process.poll() is not None:
            tail = log.read_bytes()[start:].decode(errors="replace").strip().splitlines()[-3:]
            raise DeployError(f"node '{party}' exited with code {process.returncode} on its "
                              f"restart: {' | '.join(tail)} (see {log})")
        if time.monotonic() > deadline:
            raise DeployError(f"node '{party}' did not come back online within "
                              f"{timeout:.0f} s; see {log}")
        time.sleep(0.2)
    return fed


FIXED_BY_UP = ("seed", "data.name", "data.source", "data.n_customers", "data.id_column",
               "data.label", "data.parties", "data.synthetic", "partition", "federation.mode",
               "federation.parties", "blacklists.holders", "data.blacklists")
"""Settings ``up`` wrote the parties' files with (the synthetic population, who holds what):
a run must keep them. The others (training, privacy, the split, the scaler...) are the run's."""


def _setting(settings: RunSettings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_nodes(fed: Federation) -> None:
    """Refuse to submit while a party's registered node is gone; warn of foreign nodes.

    Flower 1.41's Control API is open to any local process holding ``ca.crt``: it can
    unregister a node, or register keys of its own. Both are named here, before a run.
    """
    done = subprocess.run([flwr_bin(), "supernode", "list", CONNECTION, "--format", "json"],
                          env=fed.env(), cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    try:
        nodes = {int(n["node-id"]): n for n in json.loads(done.stdout)["nodes"]}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise DeployError(f"`flwr supernode list` failed: {(done.stdout + done.stderr)[-500:]}"
                          ) from None
    pins = read_pins(fed.runs)
    for party, node_id in pins.items():
        status = nodes.get(node_id, {}).get("status", "unregistered")
        if status in ("unregistered", "deleted"):
            raise DeployError(
                f"the node of '{party}' (node {node_id}) is no longer registered at the "
                f"SuperLink (unregistered {nodes.get(node_id, {}).get('deleted-at', '')}: "
                "`flwr supernode unregister` through the Control API, which any local process "
                "holding ca.crt can reach); its key cannot connect again. Bring the federation "
                "down and up again (`deploy down`, `deploy up`), which registers the keys anew")
    mine = set(pins.values())
    for node_id, n in nodes.items():
        if node_id not in mine and n.get("status") not in ("unregistered", "deleted"):
            log.warning("node %s (%s) is registered at the SuperLink but is no party's: "
                        "someone registered a key of their own; a node with it that claims a "
                        "party is refused and named", node_id, n.get("status"))


def check_matches_federation(fed: Federation, settings: RunSettings) -> None:
    """Refuse, before anything is submitted, a run whose data settings differ from ``up``'s."""
    base, _ = compose_settings(fed.overrides)
    for key in FIXED_BY_UP:
        theirs, mine = _setting(base, key), _setting(settings, key)
        if mine != theirs:
            raise ConfigError(
                f"{key}: this run has {mine!r}, the federation in {fed.root} was brought up "
                f"with {theirs!r} (`up` wrote each party's data with it, and the nodes hold "
                f"that data). Run without overriding {key}, or bring a federation up with it "
                "(`down`, then `up` with the override)")


def own_run(fed: Federation, path: Path, what: str) -> Path:
    """Return the run directory ``path`` names (its path, or its name) if it is this federation's.

    The coordinator runs only its own runs, by name, never a path.
    """
    path = fed.runs / path if len(path.parts) == 1 else path
    resolved = path.resolve()
    if resolved.parent != fed.runs.resolve() or not (resolved / "server").is_dir():
        raise ConfigError(f"{what}{path}: not a run of the federation in {fed.root} (its runs "
                          f"are in {fed.runs})")
    check_run_name(resolved.name, what.strip(" ="))
    return resolved


def run(directory: Path, overrides: list[str] | None = None,
        timeout: float = 3600) -> dict[str, Any]:
    """Run on the federation that is up in ``directory``; write and return results.json.

    The run's directory is ``<dir>/runs/<name>``, the coordinator's own (0700); ``resume=``
    names an earlier run of the federation (its directory or its name).
    """
    start = time.perf_counter()
    fed = Federation.load(directory)
    settings, plain = compose_settings(fed.overrides + list(overrides or []))
    check_matches_federation(fed, settings)
    if settings.resume is not None:
        plain["resume"] = own_run(fed, Path(settings.resume), "resume=").name  # not a path
    name = time.strftime("%Y-%m-%d_%H-%M-%S_") + settings.federation.mode.value
    run_dir = fed.runs / name
    config = {RUN_SETTINGS: json.dumps(plain), RUN_NAME: name, COLUMNS: json.dumps(fed.columns)}
    check_nodes(fed)
    prepare(run_dir, config)
    train_start = time.perf_counter()
    found = _flwr_run(fed, run_dir, config, timeout)
    train_seconds = time.perf_counter() - train_start
    outcome = collect(settings, fed, found, train_seconds)
    if settings.federation.mode is Mode.horizontal:  # the coordinator's copy of the model
        outcome = keep_bundle(outcome, found, run_dir, tuple(
            p for p in PARTIES if p in settings.federation.parties))
    assert outcome.federation is not None
    outcome.federation.update({
        "engine": "deployment", "superlink": fed.superlink, "tls": True, "node_auth": True,
        "refused_nodes": found.refused_nodes,  # a node that claimed a party pinned to another
        "node_audit_logs": {p: str(fed.node_state(p) / name / p / "audit.jsonl")
                            for p in [*fed.parties, *fed.holders]},
        "server_audit_log": str(run_dir / "server" / "audit.jsonl")})
    results = write_run(run_dir, outcome, time.perf_counter() - start, plain,
                        attack_outcome(outcome), figures=write_plots)
    return results


def _flwr_run(fed: Federation, run_dir: Path, config: dict[str, str], timeout: float) -> Any:
    """Submit the deployed app with ``config`` (``flwr run``); return the server's outcome."""
    config_file = run_dir / "run_config.toml"
    config_file.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    with (run_dir / "flwr_run.log").open("w") as log:
        try:
            subprocess.run([flwr_bin(), "run", str(APP_DIR), CONNECTION, "--run-config",
                            str(config_file), "--stream"], env=fed.env(), cwd=ROOT,
                           stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False,
                           start_new_session=True)  # a Ctrl-C is ours to handle, not flwr's
        except subprocess.TimeoutExpired as exc:
            stopped = stop_run(fed, run_dir)
            raise DeployError(f"the run did not finish within {timeout:.0f} s; {stopped}; see "
                              f"{run_dir / 'flwr_run.log'}") from exc
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (main turns it into one)
            raise RunInterrupted(stop_run(fed, run_dir)) from exc
    if not (run_dir / OUTCOME).is_file():
        raise DeployError(_no_outcome(fed, run_dir))
    found = read_outcome(run_dir / OUTCOME)  # runs no code: a planted pickle is refused
    if "error" in found:
        raise found["error"]
    return found["outcome"]


def score(directory: Path, model_run: Path, overrides: list[str] | None = None,
          timeout: float = 3600) -> tuple[Path, dict[str, Any]]:
    """Score with the bundles of ``model_run`` (a run of this federation) on its nodes.

    Each node loads the bundle it wrote in that run and its own rows; the scores stay at the
    lender (``<lender state>/<scoring run>/lender/scores.csv``). The coordinator writes what
    the server received, counts only, to ``scoring.json`` and ``report.md`` in the scoring
    directory (``scoring.out``, by default ``<model run>/scoring/<name>``).
    """
    start = time.perf_counter()
    fed = Federation.load(directory)
    model_run = own_run(fed, model_run, "deploy score ")
    settings = settings_of(model_run, *(overrides or []))
    check_matches_federation(fed, settings)
    if settings.federation.mode not in (Mode.vertical, Mode.horizontal):
        raise ConfigError(f"{model_run}: deploy score scores with a federated model's bundles; "
                          f"a {settings.federation.mode.value} model is one bundle: "
                          f"credit-fl score {model_run}")
    name = time.strftime("%Y-%m-%d_%H-%M-%S_score")
    server = server_dir(fed.runs, "score", name, model_run.name)
    out = Path(settings.scoring.out) if settings.scoring.out else server
    if out.exists():
        raise ConfigError(f"scoring.out={out} exists; name a new directory")
    plain = config_of(settings)
    config = {RUN_SETTINGS: json.dumps(plain), RUN_NAME: name, COLUMNS: json.dumps(fed.columns),
              TASK: "score", MODEL_RUN: model_run.name}
    check_nodes(fed)
    prepare(server, config)
    try:
        outcome = _flwr_run(fed, server, config, timeout)
    except BaseException:
        shutil.rmtree(server, ignore_errors=True)
        raise
    out.mkdir(parents=True, exist_ok=True)
    scoring = _scoring_record(fed, settings, model_run, name, server, outcome)
    scoring["wall_seconds"] = time.perf_counter() - start
    write_atomic(out / "scoring.json", json.dumps(scoring, indent=2, default=str) + "\n")
    write_atomic(out / "report.md", render_scoring(scoring, None))
    return out, scoring


def _scoring_record(fed: Federation, settings: RunSettings, model_run: Path, name: str,
                    server: Path, outcome: Any) -> dict[str, Any]:
    """Return scoring.json from what the server received: counts, and where the scores stay."""
    horizontal = settings.federation.mode is Mode.horizontal
    consent = run_summary(outcome.consent, outcome.parties, SCORING)  # as the nodes sent them
    for released in consent_released(consent):  # opted-in counts, as results.json says
        listed = outcome.privacy.setdefault(str(released["party"]), {}).setdefault(
            "outside_epsilon", [])
        listed.append(str(released["release"]))
    return {
        "run": str(model_run), "mode": settings.federation.mode.value,
        "rows": settings.scoring.rows.value,
        "applicants": outcome.applicants, "engine": "deployment",
        "model_id": outcome.model_id, "parties": outcome.parties, "absent": outcome.absent,
        "alignment": outcome.alignment, "lender": outcome.lender, "privacy": outcome.privacy,
        "blacklists": outcome.blacklists, "refused_nodes": outcome.refused_nodes,
        "consent": consent,
        "message_rounds": outcome.message_rounds, "seconds_by_message": outcome.seconds_by_kind,
        "seconds": outcome.seconds, "communication": outcome.communication,
        "lender_scores": {p: str(fed.node_state(p) / name / p / "scores.csv")
                          for p in outcome.lenders} if horizontal
        else str(fed.node_state(LABEL_HOLDER) / name / LABEL_HOLDER / "scores.csv"),
        "lenders": outcome.lenders,
        "node_audit_logs": {p: str(fed.node_state(p) / name / p / "audit.jsonl")
                            for p in [*outcome.parties, *outcome.blacklists]},
        "server_audit_log": str(server / "server" / "audit.jsonl")}


def _no_outcome(fed: Federation, run_dir: Path) -> str:
    """Say why a run left no outcome, and what to do."""
    now = Federation.load(fed.root)
    link = now.pids.get("superlink")
    log = run_dir / "flwr_run.log"
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:]) \
        if log.is_file() else ""
    if link is None or not _alive(link):
        return ("the SuperLink stopped during the run, and the run with it. Start the "
                "federation again (`python -m experiments.deploy down`, then `up`) and run "
                f"again. flwr run said: {tail}")
    if link != fed.pids.get("superlink"):
        return ("the SuperLink restarted during the run: the run in progress is lost (its "
                "ServerApp's connection ended). The SuperLink keeps its registrations in its "
                "database and the nodes reconnect by themselves: run again. flwr run said: "
                f"{tail}")
    return (f"the ServerApp left no outcome in {run_dir / OUTCOME}; flwr run said: {tail} "
            f"(see {log} and {fed.root / 'logs'})")


class RunInterrupted(Exception):
    """``deploy run`` was stopped by a signal; the message says what became of the run."""


RUN_ID = re.compile(r"Successfully started run (\d+)")


def stop_run(fed: Federation, run_dir: Path) -> str:
    """Stop the run ``flwr run`` started for ``run_dir`` on the federation; say what happened.

    Without this the run goes on at the SuperLink and the nodes (spending their privacy
    budgets) after ``flwr run`` is gone.
    """
    log = run_dir / "flwr_run.log"
    found = RUN_ID.search(log.read_text(errors="replace")) if log.is_file() else None
    if found is None:
        return "the run had not started on the federation"
    run_id = found.group(1)
    done = subprocess.run([flwr_bin(), "stop", run_id, CONNECTION], env=fed.env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        return (f"stopping run {run_id} on the federation failed ({done.stdout.strip()} "
                f"{done.stderr.strip()}); stop it with `flwr stop {run_id}`")
    return f"run {run_id} was stopped on the federation (flwr stop)"


def collect(settings: RunSettings, fed: Federation, server_outcome: Any,
            train_seconds: float) -> RunOutcome:
    """Turn what the server received into the run's outcome, as a real coordinator must.

    Nothing is read from the nodes' directories and no data is loaded: the metrics come from
    the lenders' reports (score summaries), the ledger and history from the server.
    """
    if settings.federation.mode is Mode.vertical:
        return vertical_outcome(settings, tuple(fed.parties), server_outcome, 0.0, train_seconds)
    return horizontal_outcome(settings, server_outcome, 0.0, train_seconds)


@contextlib.contextmanager
def local_federation(directory: Path, overrides: list[str],
                     node_max_epsilon: dict[str, float] | None = None, *,
                     explanations: bool = False) -> Iterator[Federation]:
    """``up`` for the duration of a ``with`` block, then ``down`` (also on failure)."""
    fed = up(directory, overrides, node_max_epsilon, explanations=explanations)
    try:
        yield fed
    finally:
        down(directory)
