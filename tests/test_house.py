"""Rules of the house that a reader checks by eye, checked here (issue 31, item 5).

No function outside the tests is over :data:`MAX_LINES` lines unless its docstring says why,
in a sentence beginning "Long because" (an argparse parser that is one list of arguments,
say). Lines are counted from the ``def`` to the last line of the body, decorators left out,
as :mod:`ast` gives them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60
REASON = "Long because"
SKIPPED = {"tests", "outputs", "multirun", "build", "dist", "node_modules"}
"""Top-level directories that hold no project code (tests, run outputs, build products)."""


def _sources(root: Path) -> Iterator[Path]:
    """Yield the project's Python files: everything but hidden directories and SKIPPED."""
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p.endswith(".egg-info") for p in parts):
            continue
        if parts[0] in SKIPPED:
            continue
        yield path


def long_functions(source: str, name: str) -> list[str]:
    """Return ``name:line:function (n lines)`` for each function too long without a reason.

    Nested functions count on their own, and inside the function that holds them.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        lines = (node.end_lineno or node.lineno) - node.lineno + 1
        if lines > MAX_LINES and REASON not in (ast.get_docstring(node) or ""):
            found.append(f"{name}:{node.lineno}:{node.name} ({lines} lines)")
    return found


def test_the_checker_finds_a_long_function_and_accepts_a_stated_reason():
    # Prepare
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES - 1))
    short = f"def short():\n{body}\n"  # exactly MAX_LINES lines
    long = f"def long():\n{body}\n    x = 0\n"
    reasoned = f'def kept():\n    """Long because one list.\n    """\n{body}\n'
    nested = f"def outer():\n    def inner():\n{body.replace('    ', '        ')}\n" \
             f"        y = 1\n    return inner\n"
    # Execute
    found = {case: long_functions(text, "m.py") for case, text in
             (("short", short), ("long", long), ("reasoned", reasoned), ("nested", nested))}
    # Assert
    assert found["short"] == []
    assert found["long"] == [f"m.py:1:long ({MAX_LINES + 1} lines)"]
    assert found["reasoned"] == []
    assert [f.split(" ")[0] for f in found["nested"]] == ["m.py:1:outer", "m.py:2:inner"]


def test_no_function_outside_the_tests_is_over_60_lines_without_a_reason():
    sources = list(_sources(ROOT))
    assert any(p.relative_to(ROOT).parts[0] == "credit_fl" for p in sources)
    assert not any(p.relative_to(ROOT).parts[0] == "tests" for p in sources)
    found = [f for p in sources
             for f in long_functions(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == [], (f"over {MAX_LINES} lines without '{REASON} ...' in the docstring "
                         "(split it into named steps, or say why not): " + "; ".join(found))
