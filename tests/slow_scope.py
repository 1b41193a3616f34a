"""Which slow test modules a change touches: ``python -m tests.slow_scope [BASE]``.

Prints, one a line, each test module with a ``slow`` test that imports (directly or through
other project modules, anywhere in their source) a file changed since ``BASE`` (default
``HEAD``; untracked files count), or is itself changed. A change to ``conf/``, ``pyproject.toml``
or ``constraints.txt`` touches every one. ``make test-slow-changed`` runs what it prints; the
import graph is read from the sources (nothing is imported), so it is cheap.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("credit_data", "credit_fl", "models", "privacy", "federation", "fl_server",
            "fl_client", "experiments", "deployment", "tests")
EVERYTHING = ("conf/", "pyproject.toml", "constraints.txt")
MODULE_NAME = re.compile(rf"(?:{'|'.join(PACKAGES)})(?:\.\w+)+(?::\w+)?")


def _module_file(name: str, repo: Path) -> Path | None:
    base = repo.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, repo: Path) -> set[Path]:
    """The project files ``path`` imports (a package's ``__init__`` for ``from pkg import x``),
    or names as a string (``"-m", "deployment.node"``; ``"deployment.client_app:app"``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and MODULE_NAME.fullmatch(node.value):
            names = [node.value.split(":")[0]]
        for name in names:
            file = _module_file(name, repo) if name.split(".")[0] in PACKAGES else None
            if file is not None:
                found.add(file)
    return found


def reached(path: Path, repo: Path = REPO) -> set[Path]:
    """Every project file ``path`` reaches through imports, itself included."""
    seen, todo = {path}, [path]
    while todo:
        for file in _imports(todo.pop(), repo) - seen:
            seen.add(file)
            todo.append(file)
    return seen


def slow_modules(repo: Path = REPO) -> list[Path]:
    """The test modules that hold a ``slow`` test."""
    return sorted(p for p in (repo / "tests").glob("test_*.py")
                  if "pytest.mark.slow" in p.read_text())


def touched(changed: list[str], repo: Path = REPO) -> list[str]:
    """The slow test modules (paths relative to ``repo``) that the ``changed`` files touch."""
    modules = slow_modules(repo)
    if any(c.startswith(EVERYTHING) for c in changed):
        return [str(m.relative_to(repo)) for m in modules]
    changed_files = {(repo / c).resolve() for c in changed if c.endswith(".py")}
    # a file that is not Python (the deployed Flower app's pyproject.toml, say) touches every
    # slow module that reaches its package
    data_of = {c.split("/")[0] for c in changed if not c.endswith(".py")} & set(PACKAGES)
    hit = []
    for module in modules:
        files = {f.resolve() for f in reached(module, repo)}
        packages = {f.relative_to(repo.resolve()).parts[0] for f in files}
        if files & changed_files or packages & data_of:
            hit.append(str(module.relative_to(repo)))
    return hit


def changed_since(base: str, repo: Path = REPO) -> list[str]:
    """Files changed since ``base``, untracked ones included."""
    def git(*args: str) -> list[str]:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                              check=True)
        return done.stdout.split()
    return sorted(set(git("diff", "--name-only", base))
                  | set(git("ls-files", "--others", "--exclude-standard")))


if __name__ == "__main__":
    print("\n".join(touched(changed_since(sys.argv[1] if len(sys.argv) > 1 else "HEAD"))))
