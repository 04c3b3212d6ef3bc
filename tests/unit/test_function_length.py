"""Every function in src is under 80 lines (migrations, generated, aside): a long one
is split into named steps (see core/withdrawal/bundle.py's ``_BundleVerifier``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tandem"
MAX_LINES = 80


def _files() -> list[Path]:
    files = sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)
    assert files
    return files


def long_functions(path: Path, limit: int = MAX_LINES) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 >= limit
    ]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(SRC)))
def test_functions_are_under_80_lines(path: Path) -> None:
    assert long_functions(path) == []


def test_checker_counts_a_long_function(tmp_path: Path) -> None:
    sample = tmp_path / "long.py"
    sample.write_text("def f():\n" + "    x = 1\n" * 80, encoding="utf-8")
    assert long_functions(sample) == ["f (line 1): 81 lines"]
