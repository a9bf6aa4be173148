"""Functions stay short enough to read: over MAX_LINES of body (docstring excluded), a
function says why next to its ``def`` (a ``# long:`` comment on the lines just above it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mesmerize_widgets"
MAX_LINES = 60
REASON = "# long:"


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, line, body lines) of each function longer than ``max_lines`` with no reason given."""
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body = body[1:]
        if not body:
            continue
        n = body[-1].end_lineno - body[0].lineno + 1
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[max(0, first - 4) : first - 1]
        if n > max_lines and not any(line.strip().startswith(REASON) for line in above):
            out.append((node.name, node.lineno, n))
    return out


def test_no_function_is_long_without_a_reason():
    found = [f"{p.relative_to(PACKAGE.parent)}:{line} {name} ({n} lines)"
             for p in sorted(PACKAGE.rglob("*.py")) for name, line, n in long_functions(p.read_text())]
    listing = "\n  ".join(found)
    assert not found, f"functions over {MAX_LINES} lines with no '{REASON}' reason:\n  {listing}"


@pytest.mark.parametrize("reason, reported", [("", True), ("# long: one loop\n", False)])
def test_a_long_function_is_reported_unless_it_gives_a_reason(reason, reported):
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    src = f"import os\n\n{reason}def f():\n    \"\"\"Doc.\"\"\"\n{body}"
    assert [(name, n) for name, _, n in long_functions(src)] == ([("f", 61)] if reported else [])
    assert long_functions(src, max_lines=61) == []
