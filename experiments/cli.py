"""``credit-fl``: one command for everything, installed by ``pip install .``.

``credit-fl run key=value ...`` runs an experiment (Hydra: the same overrides, ``-m`` for a
sweep); ``compare``, ``deploy``, ``node``, ``audit`` and ``bench`` are the project's other
commands. The ``python -m`` forms stay as aliases (``python -m experiments.run`` is
``credit-fl run``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("experiments.run", "train and report one experiment, or a sweep with -m (Hydra)"),
    "score": ("experiments.score", "score applicants with a finished run's model bundles"),
    "monitor": ("experiments.monitor", "watch a run's model on a later period: drift per party"),
    "rerate": ("experiments.rerate", "re-rate the borrowers on the book in a later period"),
    "compare": ("experiments.compare", "privacy-utility tables and plots of sweeps"),
    "deploy": ("experiments.deploy", "a whole federation on this machine: up, run, down"),
    "node": ("deployment.node", "run a partner's node against a SuperLink"),
    "audit": ("federation.audit_command", "verify audit logs: credit-fl audit verify <file> ...; "
              "the data-usage record: credit-fl audit report <logs ...>"),
    "bench": ("experiments.bench", "the benchmarks"),
}


def usage() -> str:
    """Return the list of commands."""
    width = max(map(len, COMMANDS))
    lines = ["usage: credit-fl <command> [arguments]", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "credit-fl <command> --help describes a command (run: Hydra's --help)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``credit-fl <command> ...`` to the command's own ``main``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] not in COMMANDS:
        print(f"credit-fl: unknown command '{args[0]}'\n\n{usage()}", file=sys.stderr)
        return 2
    module, _ = COMMANDS[args[0]]
    entry: Callable[..., Any] = importlib.import_module(module).main
    if args[0] == "run":  # Hydra reads sys.argv itself
        sys.argv = [f"credit-fl {args[0]}", *args[1:]]
        entry()
        return 0
    result = entry(args[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
