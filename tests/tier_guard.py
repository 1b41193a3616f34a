"""What ``tests/test_tiers.py`` checks, run as ``python -m tests.tier_guard OUT`` in a fresh
interpreter: one ``pytest --collect-only`` of the whole suite, written to ``OUT`` as JSON.

It records each test's tier markers, the collection errors, where Ray was first imported from
(if it was), and every ``alias.name`` that a module with a slow test reads from a project module
and that does not exist.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
import traceback
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("credit_data", "credit_fl", "models", "privacy", "federation", "fl_server",
           "fl_client", "experiments", "deployment", "tests")


class RayWatch:
    """An import hook that records the project's frames of the stack that first imports Ray."""

    def __init__(self) -> None:
        self.where: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "ray" and not self.where:
            self.where.extend(f"{Path(f.filename).relative_to(REPO)}:{f.lineno}"
                              for f in traceback.extract_stack()
                              if f.filename.startswith(str(REPO)) and "/.venv/" not in f.filename
                              and f.filename != __file__)


def _module_of(target: str, project: tuple[str, ...]) -> str | None:
    """``target`` when it names a project module (not a function or class in one)."""
    if target.split(".")[0] not in project:
        return None
    try:
        return target if importlib.util.find_spec(target) is not None else None
    except (ImportError, AttributeError, ValueError):  # ``pkg.function``: not a module
        return None
    except Exception:  # noqa: BLE001 (a package that fails to import: its test module's
        return None  # collection error says so)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of ``scope``, without those inside the functions and classes nested in it."""
    own, stack = [], list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        own.append(node)
        if not isinstance(node, _SCOPES):
            stack.extend(ast.iter_child_nodes(node))
    return own


def _bindings(scope: ast.AST, nodes: list[ast.AST], project: tuple[str, ...],
              outer: dict[str, str | None]) -> dict[str, str | None]:
    """The names visible in ``scope``: a project module's name, or None where a name is bound
    to anything else (an argument, an assignment) and so hides a module of the same name."""
    imported: dict[str, str] = {}
    other: set[str] = set()
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        args = scope.args
        other |= {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs,
                                  *filter(None, [args.vararg, args.kwarg])]}
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if isinstance(node, ast.Import):
                    name, target = alias.asname or alias.name.split(".")[0], alias.name
                    target = target if alias.asname or "." not in target else ""
                else:
                    name, target = alias.asname or alias.name, f"{node.module}.{alias.name}"
                    target = target if node.module and node.level == 0 else ""
                if target and _module_of(target, project):
                    imported[name] = target
                else:
                    other.add(name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            other.add(node.id)
        elif isinstance(node, _SCOPES[:2] + _SCOPES[3:]):
            other.add(node.name)
    seen = dict(outer) | dict.fromkeys(other) | imported
    return seen | dict.fromkeys(other & set(imported))  # bound both ways: left out


def _reads(nodes: list[ast.AST], names: dict[str, str | None]):
    """``(line, module, name)`` of each ``module.name`` read, and ``setattr(module, "name")``."""
    for node in nodes:
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) \
                and isinstance(node.value, ast.Name) and names.get(node.value.id):
            yield node.lineno, names[node.value.id], node.attr
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "setattr" and len(node.args) >= 2 \
                and isinstance(node.args[0], ast.Name) and names.get(node.args[0].id) \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            yield node.lineno, names[node.args[0].id], node.args[1].value


def missing_attributes(module: types.ModuleType, repo: Path = REPO,
                       project: tuple[str, ...] = PROJECT) -> list[str]:
    """Every ``alias.name`` read (and ``monkeypatch.setattr(alias, "name", ...)``) in
    ``module``'s source where ``alias`` is a project module that has no ``name``.

    Scopes are followed: a local variable that shares a module's name is not the module.
    """
    source = Path(str(module.__file__))
    missing: list[tuple[int, str]] = []
    scopes: list[tuple[ast.AST, dict[str, str | None]]] = [(ast.parse(source.read_text()), {})]
    while scopes:
        scope, outer = scopes.pop()
        nodes = _own_nodes(scope)
        names = _bindings(scope, nodes, project, outer)
        for line, target, attr in _reads(nodes, names):
            try:
                owner = importlib.import_module(target)
            except Exception as error:  # noqa: BLE001 (the report names it)
                missing.append((line, f"{source.relative_to(repo)}:{line}: {target} does not "
                                      f"import: {type(error).__name__}: {error}"))
                continue
            if not hasattr(owner, attr):
                missing.append((line, f"{source.relative_to(repo)}:{line}: "
                                      f"{target}.{attr} does not exist"))
        scopes += [(node, names) for node in nodes if isinstance(node, _SCOPES)]
    return [said for _, said in sorted(missing)]


class CollectionReport:
    """A pytest plugin that writes what one ``--collect-only`` saw to ``out``."""

    def __init__(self, out: Path, ray: RayWatch) -> None:
        self.out, self.ray = out, ray
        self.errors: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        said = f"{report.nodeid}: {str(report.longrepr)[-1500:]}"
        if report.failed and said not in self.errors:
            self.errors.append(said)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from tests.conftest import TIERS

        ray_at_collection = list(self.ray.where)
        items, slow_modules = [], {}
        for item in session.items:
            tiers = [t for t in TIERS if item.get_closest_marker(t) is not None]
            items.append([item.nodeid, tiers])
            module = getattr(item, "module", None)
            if "slow" in tiers and module is not None:
                slow_modules[module.__name__] = module
        missing = []
        for module in slow_modules.values():
            try:
                missing += missing_attributes(module)
            except Exception as error:  # noqa: BLE001 (the report names it)
                missing.append(f"{module.__name__}: not checked: {type(error).__name__}: {error}")
        self.out.write_text(json.dumps({"items": items, "errors": self.errors,
                                        "ray": ray_at_collection,
                                        "slow_modules": sorted(slow_modules),
                                        "missing": missing}))


def main(out: Path) -> int:
    ray = RayWatch()
    sys.meta_path.insert(0, ray)
    return int(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"],
                           plugins=[CollectionReport(out, ray)]))


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
