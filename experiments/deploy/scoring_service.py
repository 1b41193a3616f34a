"""A scoring service on a running deployment: start it, send it requests, stop it.

``deploy serve <run dir>`` starts one Flower run that keeps the model's bundles loaded and the
parties' sealed tag sets at the lender (:mod:`fl_server.scoring_service`); ``deploy score <run
dir> scoring.applicants=<file>`` then hands the request to it instead of starting a run of its
own; ``deploy stop-service`` ends it (``deploy down`` stops everything). A request costs the
lender's reply to the message waiting for it and four message rounds (each party releases
embeddings only for the applicants of a request it charged), not a new ``flwr run`` and five
rounds.

On a loopback deployment this module plays the lender's operator too: it drops the request in
the lender node's inbox (``<lender state>/<service>/lender/inbox/<request>.json``), as the
lender's own systems would on its machine. The coordinator's side, ``requests/<request>.json``
in the service's directory, holds counts only.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from credit_data.errors import ConfigError, DeployError
from credit_data.settings import LABEL_HOLDER
from credit_fl.batch_scoring import render_scoring
from credit_fl.config import config_of, settings_of
from deployment.coordinator import prepare, server_dir
from deployment.run_config import COLUMNS, MODEL_RUN, OUTCOME, RUN_NAME, RUN_SETTINGS, TASK
from deployment.run_files import (
    INBOX,
    NODE_REQUESTS,
    SERVER_REQUESTS,
    SERVICE_FILE,
    STOP,
    read_outcome,
)
from experiments.deploy.federation import (
    APP_DIR,
    CONNECTION,
    ROOT,
    RUN_ID,
    Federation,
    check_matches_federation,
    check_nodes,
    flwr_bin,
    own_run,
    stop_run,
)
from federation.settings import Mode
from federation.storage import write_atomic

SERVICE = "service.json"
"""In the federation's directory: the scoring service that is up (its directory and model)."""
POLL = 0.005
MESSAGE_ROUNDS = 4
"""A request's rounds: the parties evaluate, the lender matches, the parties embed, it scores."""
EXPLANATION_ROUNDS = 2
"""A split network's reasons: the head's gradients to each party, its columns back."""
PER_REQUEST = ("scoring.applicants", "scoring.rows", "scoring.out")
"""What a request to a running service may set; the rest was set when it started."""


def _outcome(out: Path) -> dict[str, Any] | None:
    path = out / OUTCOME
    if not path.is_file():
        return None
    return read_outcome(path)


def recorded(fed: Federation) -> dict[str, Any] | None:
    """Return the service ``serve`` started on ``fed`` (None when none was).

    ``ended`` says how it ended when it is no longer up; the record stays until ``stop`` clears
    it, so that an end nobody asked for is reported.
    """
    path = fed.root / SERVICE
    if not path.is_file():
        return None
    service: dict[str, Any] = json.loads(path.read_text())
    if "superlink" not in fed.pids:
        return service | {"ended": "the federation was brought down"}
    found = _outcome(Path(service["dir"]))
    if found is None:
        return service
    if flower_status(fed, Path(service["dir"])) == "finished:stopped":
        return service | {"ended": "its Flower run was stopped from outside `deploy "
                          "stop-service` (`flwr stop` through the SuperLink's Control API, "
                          "which any local process holding ca.crt can reach)"}
    error = found.get("error")
    return service | {"ended": "it stopped" if error is None else f"it failed: {error}"}


def flower_status(fed: Federation, out: Path) -> str | None:
    """Return the SuperLink's status of the Flower run submitted for ``out`` (None: unknown)."""
    log = out / "flwr_run.log"
    found = RUN_ID.search(log.read_text(errors="replace")) if log.is_file() else None
    if found is None:
        return None
    done = subprocess.run([flwr_bin(), "ls", CONNECTION, "--run-id", found.group(1), "--format",
                           "json"], env=fed.env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    try:
        return str(json.loads(done.stdout)["runs"][0]["status"])
    except (json.JSONDecodeError, KeyError, IndexError, TypeError):
        return None


def running(fed: Federation) -> dict[str, Any] | None:
    """Return the service that is up on ``fed`` (None when none is, or it has ended)."""
    service = recorded(fed)
    return None if service is None or "ended" in service else service


def check_not_ended(fed: Federation, model_run: Path) -> None:
    """Refuse to score ``model_run`` another way while its service's end is unreported.

    A service that ended without ``deploy stop-service`` (stopped through the Control API, or
    failed) is never replaced silently by a batch scoring run (another run, of other rounds,
    which the operator did not ask for).
    """
    service = recorded(fed)
    if service is not None and "ended" in service and Path(service["model_run"]) == model_run:
        raise DeployError(f"the scoring service of {model_run} is no longer up: "
                          f"{service['ended']}. Requests are not sent to a batch scoring run "
                          "instead. `deploy stop-service` clears the service and reports its "
                          f"requests; `deploy serve {model_run}` starts it again")


def serve(directory: Path, model_run: Path, overrides: list[str] | None = None,
          timeout: float = 600.0) -> dict[str, Any]:
    """Start a scoring service with ``model_run``'s bundles; return its status once it is ready.

    Ready means every node checked its bundle and each party's sealed tag set is at the lender
    (built once per model and table, then read from the party's disk).
    """
    fed = Federation.load(directory)
    model_run = own_run(fed, model_run, "deploy serve ")
    up = running(fed)
    if up is not None:
        raise DeployError(f"a scoring service of {up['model_run']} is already up "
                          f"({up['dir']}); stop it first: deploy stop-service")
    settings = settings_of(model_run, *(overrides or []))
    check_matches_federation(fed, settings)
    if settings.federation.mode is not Mode.vertical:
        raise ConfigError(f"{model_run}: a scoring service serves a vertical model; a "
                          f"{settings.federation.mode.value} model scores in one round: "
                          f"deploy score {model_run}")
    name = time.strftime("%Y-%m-%d_%H-%M-%S_serve")
    out = server_dir(fed.runs, "serve", name, model_run.name)
    config = {RUN_SETTINGS: json.dumps(config_of(settings)),
              RUN_NAME: name, COLUMNS: json.dumps(fed.columns), TASK: "serve",
              MODEL_RUN: model_run.name}
    check_nodes(fed)
    prepare(out, config)
    config_file = out / "run_config.toml"
    config_file.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    with (out / "flwr_run.log").open("w") as log:  # submits the run and returns
        subprocess.run([flwr_bin(), "run", str(APP_DIR), CONNECTION, "--run-config",
                        str(config_file)], env=fed.env(), cwd=ROOT, stdout=log,
                       stderr=subprocess.STDOUT, timeout=120, check=False,
                       start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        status = out / SERVICE_FILE
        if status.is_file():
            break
        found = _outcome(out)
        if found is not None:
            shutil.rmtree(out, ignore_errors=True)
            if "error" in found:
                raise found["error"]
            raise DeployError("the scoring service stopped before it was ready")
        if time.monotonic() > deadline:
            stopped = stop_run(fed, out)
            raise DeployError(f"the scoring service was not ready within {timeout:.0f} s; "
                              f"{stopped}; see {out / 'flwr_run.log'}")
        time.sleep(0.05)
    service = {"dir": str(out), "model_run": str(model_run), "name": name}
    write_atomic(fed.root / SERVICE, json.dumps(service, indent=2) + "\n")
    return service | json.loads(status.read_text())


def _inbox(fed: Federation, service: dict[str, Any]) -> Path:
    return fed.node_state(LABEL_HOLDER) / service["name"] / LABEL_HOLDER / INBOX


def _wait_for(path: Path, out: Path, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        found = _outcome(out)
        if found is not None and "error" in found:
            raise DeployError(f"the scoring service failed: {found['error']}")
        if found is not None:
            raise DeployError(f"the scoring service stopped before it answered {what}")
        if time.monotonic() > deadline:
            raise DeployError(f"the scoring service did not answer {what} within "
                              f"{timeout:.0f} s")
        time.sleep(POLL)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def score(directory: Path, model_run: Path, overrides: list[str] | None = None,
          timeout: float = 600.0) -> tuple[Path, dict[str, Any]]:
    """Hand one scoring request to the service of ``model_run``; return its directory.

    ``scoring.applicants=<file>`` (a file in the lender node's ``--applicants-dir``) or
    ``scoring.rows=test|all`` (the lender's own data file). The scores stay at the lender
    (``lender_scores`` in ``scoring.json``); the scoring directory holds counts only.
    """
    start = time.perf_counter()
    fed = Federation.load(directory)
    model_run = model_run.resolve()
    service = running(fed)
    if service is None or Path(service["model_run"]) != model_run:
        raise DeployError(f"no scoring service of {model_run} is up; start one with deploy "
                          f"serve {model_run}")
    fixed = [o for o in overrides or [] if o.split("=", 1)[0].lstrip("+~") not in PER_REQUEST]
    if fixed:
        raise ConfigError(f"{fixed[0].split('=', 1)[0]}: a scoring service's settings are set "
                          f"when it starts (deploy serve {model_run} ...); a request may set "
                          f"only {', '.join(PER_REQUEST)}")
    settings = settings_of(model_run, *(overrides or []))
    request_id = time.strftime("%Y-%m-%d_%H-%M-%S_") + secrets.token_hex(3)
    out = Path(settings.scoring.out) if settings.scoring.out else model_run / "scoring" / request_id
    if out.exists():
        raise ConfigError(f"scoring.out={out} exists; name a new directory")
    request: dict[str, Any] = {"id": request_id, "rows": settings.scoring.rows.value}
    if settings.scoring.applicants:
        request["applicants"] = settings.scoring.applicants
    asked = time.perf_counter()
    write_atomic(_inbox(fed, service) / f"{request_id}.json", json.dumps(request), mode=0o600)
    service_dir = Path(service["dir"])
    record = _wait_for(service_dir / SERVER_REQUESTS / f"{request_id}.json", service_dir,
                       timeout, f"request {request_id}")
    answered = time.perf_counter() - asked
    if "error" in record:
        raise DeployError(f"the scoring service refused request {request_id}: "
                          f"{record['error']}")
    lender = record["lender"]
    name = service["name"]
    scoring = {
        "run": str(model_run), "mode": "vertical", "rows": settings.scoring.rows.value,
        "applicants": record["rows"], "engine": "deployment (scoring service)",
        "service": service["dir"], "request": request_id, "model_id": record["model_id"],
        "parties": record["parties"], "absent": record["absent"],
        "alignment": {p: {"applicants": record["rows"], "known": k, "asked": record["asked"][p],
                          **record.get("queries", {}).get(p, {})}
                      for p, k in lender.get("known", {}).items() if p in record["asked"]},
        "lender": lender, "privacy": {}, "blacklists": record.get("blacklists", {}),
        "message_rounds": MESSAGE_ROUNDS + (EXPLANATION_ROUNDS if "explanation" in record[
            "seconds"] else 0), "seconds": record["seconds"] | {"request": answered},
        "lender_scores": str(fed.node_state(LABEL_HOLDER) / name / LABEL_HOLDER / NODE_REQUESTS
                             / request_id / "scores.csv"),
        "node_audit_logs": {p: str(fed.node_state(p) / name / p / "audit.jsonl")
                            for p in record["parties"]},
        "server_audit_log": str(service_dir / "server" / "audit.jsonl"),
        "wall_seconds": time.perf_counter() - start}
    out.mkdir(parents=True)
    write_atomic(out / "scoring.json", json.dumps(scoring, indent=2, default=str) + "\n")
    write_atomic(out / "report.md", render_scoring(scoring, None))
    return out, scoring


def stop(directory: Path, timeout: float = 120.0) -> dict[str, Any] | None:
    """Stop the scoring service (None when none was started); return its last status.

    A service that had already ended (``ended`` in the status says how) is cleared and reported.
    """
    fed = Federation.load(directory)
    service = recorded(fed)
    if service is None:
        return None
    out = Path(service["dir"])
    if "ended" in service:
        (fed.root / SERVICE).unlink(missing_ok=True)
        return _status(out) | {"ended": service["ended"]}
    write_atomic(_inbox(fed, service) / f"~{STOP}.json", json.dumps({STOP: True}), mode=0o600)
    deadline = time.monotonic() + timeout
    while _outcome(out) is None:
        if time.monotonic() > deadline:
            stop_run(fed, out)
            break
        time.sleep(0.05)
    (fed.root / SERVICE).unlink(missing_ok=True)
    return _status(out)


def _status(out: Path) -> dict[str, Any]:
    status = out / SERVICE_FILE
    return json.loads(status.read_text()) if status.is_file() else {}  # type: ignore[no-any-return]

