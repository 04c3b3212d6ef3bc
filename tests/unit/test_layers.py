"""The layers of docs/architecture.md, enforced: an import that points up a layer fails.

core      imports nothing from services, store, api, cli or the members' client;
services  nothing from api or cli;
api       nothing from cli;
client    (the members' side) nothing from services, store or api.

Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "tandem"
CLIENT_MODULES = ("tandem.client", "tandem.client_ceremony", "tandem.client_log", "tandem.client_pin",
                  "tandem.client_proof", "tandem.client_withdrawal")

# layer -> modules it must never import
RULES: dict[str, tuple[str, ...]] = {
    "core": ("tandem.services", "tandem.store", "tandem.api", "tandem.cli", *CLIENT_MODULES),
    "services": ("tandem.api", "tandem.cli"),
    "api": ("tandem.cli",),
    "client": ("tandem.services", "tandem.store", "tandem.api"),
}


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    if module in CLIENT_MODULES or module.startswith("tandem.client."):
        return "client"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RULES else None


def _imports(path: Path, src: Path) -> list[tuple[int, str]]:
    module = _module_name(path, src)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return out


def _hits(target: str, forbidden: tuple[str, ...]) -> bool:
    return any(target == f or target.startswith(f + ".") for f in forbidden)


def violations(path: Path, src: Path = SRC) -> list[str]:
    layer = _layer(_module_name(path, src))
    if layer is None:
        return []
    forbidden = RULES[layer]
    return sorted({f"line {n}: {target}" for n, target in _imports(path, src) if _hits(target, forbidden)})


FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_points_up_a_layer(path: Path) -> None:
    assert violations(path) == []


def test_every_layer_is_checked() -> None:
    layers = {_layer(_module_name(p)) for p in FILES}
    assert set(RULES) <= layers


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("core/x.py", "from tandem.services.base import Call\n", "tandem.services.base"),
        ("core/x.py", "def f():\n    from tandem.store import db\n", "tandem.store"),
        ("core/x.py", "import tandem.client_pin\n", "tandem.client_pin"),
        ("services/x.py", "from tandem.api import app\n", "tandem.api"),
        ("services/x.py", "from ..cli import main\n", "tandem.cli"),
        ("api/x.py", "from tandem.cli.main import main\n", "tandem.cli.main"),
    ],
)
def test_checker_catches_what_it_should(tmp_path: Path, where: str, source: str, expected: str) -> None:
    path = tmp_path / "tandem" / where
    path.parent.mkdir(parents=True)
    path.write_text(source, encoding="utf-8")
    assert any(expected in v for v in violations(path, tmp_path))
