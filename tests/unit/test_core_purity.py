"""The core is pure (STYLE: "a domain core that never touches I/O"): no web, database
or terminal framework is imported under ``tandem.core``, and no core function reads
the wall clock — time always comes in as an argument."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "tandem" / "core"
FORBIDDEN_MODULES = frozenset(
    {
        "fastapi",
        "sqlmodel",
        "sqlalchemy",
        "starlette",
        "typer",
        "rich",
        "httpx",
        "uvicorn",
        "alembic",
        "psycopg",
        "pydantic_settings",
        "requests",
        "tandem.api",
        "tandem.store",
        "tandem.services",
        "tandem.cli",
    }
)
# (module, attribute) pairs that read the wall clock.
CLOCK_CALLS = frozenset(
    {
        ("time", "time"),
        ("time", "time_ns"),
        ("datetime", "now"),
        ("datetime", "utcnow"),
        ("datetime", "today"),
        ("date", "today"),
    }
)


def _core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert files, f"no core modules found under {CORE}"
    return files


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN_MODULES)


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[str] = []
    clock_names: set[str] = set()  # names bound by "from time import time" and the like
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [f"line {node.lineno}: import {a.name}" for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _forbidden(node.module):
                out.append(f"line {node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if (node.module.split(".")[-1], alias.name) in CLOCK_CALLS:
                    clock_names.add(alias.asname or alias.name)
                    out.append(f"line {node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = func.value
            owner_name = (
                owner.id
                if isinstance(owner, ast.Name)
                else (owner.attr if isinstance(owner, ast.Attribute) else None)
            )
            if owner_name is not None and (owner_name, func.attr) in CLOCK_CALLS:
                out.append(f"line {node.lineno}: {owner_name}.{func.attr}()")
        elif isinstance(func, ast.Name) and func.id in clock_names:
            out.append(f"line {node.lineno}: {func.id}()")
    return out


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_is_pure(path: Path) -> None:
    assert _problems(path) == []


def test_checker_catches_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text(
        "import fastapi\nfrom sqlalchemy.orm import Session\nimport time\nimport datetime\n"
        "from time import time as now\nfrom tandem.store import db\n"
        "def f():\n    return time.time(), datetime.datetime.now(), now(), datetime.date.today()\n",
        encoding="utf-8",
    )
    found = "\n".join(_problems(sample))
    for expected in (
        "import fastapi",
        "from sqlalchemy.orm",
        "time.time()",
        "datetime.now()",
        "from time import time",
        "now()",
        "date.today()",
        "from tandem.store",
    ):
        assert expected in found


def test_member_side_client_loads_no_server_code() -> None:
    """What runs on a member's machine (client modules, and so the CLI's signing path)
    needs no database, web framework or server use case: it must not even import them."""
    import subprocess
    import sys

    probe = (
        "import sys, tandem.client, tandem.client.ceremony, tandem.client.withdrawal, tandem.client.proof\n"
        "bad = ('sqlmodel', 'sqlalchemy', 'fastapi', 'alembic', 'psycopg',\n"
        "       'tandem.services', 'tandem.store')\n"
        "print(','.join(m for m in bad if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
