"""Every command in the README and docs/ parses: its overrides compose, its flags exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from experiments.config import to_settings
from tests.conftest import compose_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"```bash\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:credit-fl|(?:\.venv/bin/)?python -m) [^`]+)`")


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in _FENCE.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line and not line.startswith("#"):
                    found.append((page.name, line))
    # the README's examples in running text too (not a synopsis: arguments, no '...', no 'a|b')
    for span in _INLINE.findall((ROOT / "README.md").read_text()):
        least = 3 if span.startswith("credit-fl") else 4
        if "..." not in span and "|" not in span and len(span.split()) >= least:
            found.append(("README.md", span))
    return found


COMMANDS = _commands()


def _first_values(overrides: list[str]) -> list[str]:
    """A sweep's ``key=a,b`` as its first value (lists in brackets stay whole)."""
    out = []
    for item in overrides:
        key, _, value = item.partition("=")
        if value and "," in value and not value.startswith("["):
            value = value.split(",")[0]
        out.append(f"{key}={value}" if _ else item)
    return out


def _compose(overrides: list[str]) -> None:
    to_settings(compose_config(_first_values([o for o in overrides if o != "-m"])))


def _check_scoring(args: list[str]) -> None:
    """A run directory, then overrides that may change at scoring and compose."""
    from credit_fl.config import CHANGEABLE

    assert args and "=" not in args[0], args
    for override in args[1:]:
        key = override.split("=", 1)[0]
        assert any(key == c or key.startswith(c + ".") for c in CHANGEABLE), override
    _compose(args[1:])


def _check(words: list[str]) -> None:
    if words[:1] == ["make"]:
        targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert words[1] in targets
        args = [w for w in words[2:] if w.startswith("ARGS=")]
        if args:
            _compose(shlex.split(args[0][len("ARGS="):]))
        return
    if words[0] == "credit-fl":
        words = ["python", "-m", {"run": "experiments.run", "compare": "experiments.compare",
                                  "deploy": "experiments.deploy", "node": "deployment.node",
                                  "audit": "federation.audit_command",
                                  "score": "experiments.score",
                                  "monitor": "experiments.monitor",
                                  "rerate": "experiments.rerate",
                                  "bench": "experiments.bench"}[words[1]], *words[2:]]
    if words[0].endswith("python") and words[1] == "experiments/bench.py":
        from experiments.bench import BENCHMARKS
        assert set(words[2:]) <= set(BENCHMARKS)
        return
    assert words[0].endswith("python") and words[1] == "-m", words
    module, args = words[2], words[3:]
    if module == "experiments.run":
        _compose(args)
    elif module == "experiments.deploy":
        from experiments.deploy.cli import COMMANDS

        assert args[0] in COMMANDS
        if args[0] in ("score", "serve"):  # a run directory first, then scoring overrides
            _check_scoring(args[1:])
        elif args[0] == "monitor":  # a run directory, monitor.period and monitor.* options
            from experiments.deploy.monitor import split_period
            from experiments.monitor import split_args

            assert len(args) > 1 and "=" not in args[1], args
            split_args(split_period(args[2:])[1])
        else:
            _compose([a for a in args[1:] if not a.startswith("--")])
    elif module == "experiments.score":
        _check_scoring(args)
    elif module == "experiments.monitor":  # a run directory, monitor.* options, the periods
        from experiments.monitor import split_args
        from experiments.monitor_series import period_overrides
        assert args and "=" not in args[0], args
        periods, rest = period_overrides(split_args(args[1:])[1])
        for period in periods:
            _compose([*rest, *period])
    elif module == "experiments.rerate":  # a run directory, a period, rerate.* options
        from experiments.rerate import split_args as rerate_args
        assert len(args) >= 2 and int(args[1]) >= 2, args
        _compose(rerate_args(args[2:])[1])
    elif module == "models.bundle":
        assert args[0] == "verify" and args[1:]
    elif module == "deployment.node":
        from deployment.node import _parser
        _parser().parse_args(args)
    elif module == "deployment.budget":
        from deployment.budget import parser
        parser().parse_args(args)
    elif module == "federation.audit_log":
        assert args[0] == "verify" and args[1:]
    elif module == "federation.audit_command":
        assert args[0] in ("verify", "report") and args[1:]
        if args[0] == "report":  # its flags exist
            from federation.usage_report import parser as report_parser
            report_parser().parse_args(args[1:])
    elif module == "experiments.compare":
        assert args and not args[0].startswith("-")
    else:
        raise AssertionError(f"a command the docs test does not know: {words}")


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}:{i}" for i, (p, _) in
                                                           enumerate(COMMANDS)])
def test_every_documented_command_parses(page, line):
    words = shlex.split(line.replace("<", "_").replace(">", "_"))
    if words[0] in ("ssh-keygen", "flwr", "pip", "cd", "git", "bash", "export", "mlflow"):
        return  # other tools' commands
    _check(words)


def test_the_docs_hold_commands_of_every_kind():
    firsts = {shlex.split(line)[0] for _, line in COMMANDS}
    assert len(COMMANDS) > 20 and {"make", ".venv/bin/python"} <= firsts
