"""The coordinator's ServerApp launcher: ``python -m deployment.serverapp_launcher``.

It does for the SuperLink what Flower's auto-launched ``flower-superexec`` does, with two
differences a shared machine needs:

* it asks the SuperLink's Runtime API for ServerApp tasks with requests signed by the secret
  the SuperLink was started with (``--isolation process --superexec-auth-secret-file``), so a
  local process that holds only the public CA certificate cannot take a run's task (and its
  token) first;
* it tells each ServerApp the coordinator's own directory of runs (``--runs-dir``), under which
  the ServerApp derives its directory from the run's name (:mod:`deployment.coordinator`);
* it starts Flower's own ``flwr-serverapp`` with ``--token-file`` (a file of its own, mode
  0600, removed when the ServerApp ends) instead of ``--token``, so the token never appears on
  a command line (``ps`` shows every process's arguments to every local user).

It stops when the SuperLink's process (``--parent-pid``) ends, and on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from deployment.coordinator import RUNS_ENV
from deployment.node import stop_process
from federation.flower_compat.deployment import TaskOffers
from federation.polling import next_wait

log = logging.getLogger("credit_fl")
LAUNCH_POLL_CAP = 1.0
"""The longest the launcher waits between two asks for a run (:func:`next_wait`)."""


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _token_file(directory: Path, token: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix="serverapp-", suffix=".token")
    with os.fdopen(fd, "w") as out:  # mkstemp makes it 0600
        out.write(token)
    return Path(name)


def _parser() -> argparse.ArgumentParser:
    """Return the launcher's command line."""
    p = argparse.ArgumentParser(prog="python -m deployment.serverapp_launcher",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime-api-address", required=True, help="the SuperLink's host:port")
    p.add_argument("--root-certificates", required=True, type=Path,
                   help="the federation's CA certificate (PEM)")
    p.add_argument("--secret-file", required=True, type=Path,
                   help="the SuperLink's --superexec-auth-secret-file")
    p.add_argument("--token-dir", required=True, type=Path,
                   help="a directory only this user can read, for the tokens' files")
    p.add_argument("--runs-dir", required=True, type=Path,
                   help="the coordinator's own directory of runs (0700): every ServerApp "
                        "writes under it, in the directory its run name gives")
    p.add_argument("--parent-pid", type=int, help="stop when this process (the SuperLink) ends")
    p.add_argument("--poll", type=float, default=0.1,
                   help="seconds between asks (default 0.1); when no run came for a while, a "
                        f"fortieth of the time since the last one, up to {LAUNCH_POLL_CAP} s")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line for every ask
    secret = args.secret_file.read_bytes()
    for private in (args.token_dir, args.runs_dir):
        private.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(private, 0o700)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    offers = TaskOffers(args.runtime_api_address, secret, server=True,
                        root_certificates=str(args.root_certificates))
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    started = time.monotonic()  # of the last ServerApp (or of the launcher)
    try:
        while not stopping and _alive(args.parent_pid):
            _reap(running)
            try:
                token_value = offers.next_token()
            except Exception as exc:  # the SuperLink is starting or stopping
                log.debug("Runtime API not reachable: %s", exc)
                time.sleep(max(args.poll, 0.5))
                continue
            if token_value is None:
                time.sleep(next_wait(time.monotonic() - started, args.poll, LAUNCH_POLL_CAP))
                continue
            started = time.monotonic()
            running.append(_start_serverapp(args, token_value))
    finally:
        offers.close()
        for process, token in running:
            stop_process(process)
            token.unlink(missing_ok=True)
    return 0


def _reap(running: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """Forget the ServerApps that ended, and remove their tokens' files."""
    for process, token in list(running):
        if process.poll() is not None:
            token.unlink(missing_ok=True)
            running.remove((process, token))


def _start_serverapp(args: argparse.Namespace, token_value: str
                     ) -> tuple[subprocess.Popen[bytes], Path]:
    """Start Flower's ``flwr-serverapp`` for one run, its token in a file of its own."""
    env = {**os.environ, RUNS_ENV: str(args.runs_dir.resolve())}
    serverapp = shutil.which("flwr-serverapp", path=str(Path(sys.executable).parent)) or \
        "flwr-serverapp"
    token = _token_file(args.token_dir, token_value)
    log.info("starting a ServerApp")
    return subprocess.Popen(
        [serverapp, "--runtime-api-address", args.runtime_api_address,
         "--token-file", str(token), "--root-certificates",
         str(args.root_certificates), "--parent-pid", str(os.getpid())], env=env,
        umask=0o077), token

if __name__ == "__main__":
    sys.exit(main())
