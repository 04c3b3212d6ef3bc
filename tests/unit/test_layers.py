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
CLIENT_MODULES = (
    "tandem.client",
    "tandem.client.books",
    "tandem.client.ceremony",
    "tandem.client.log",
    "tandem.client.members",
    "tandem.client.pin",
    "tandem.client.policy",
    "tandem.client.proof",
    "tandem.client.public_files",
    "tandem.client.transport",
    "tandem.client.withdrawal",
)

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
        ("core/x.py", "import tandem.client.pin\n", "tandem.client.pin"),
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


# --- no import circles ----------------------------------------------------------------------

# Circles still being taken apart, each with the change that ends it. The test fails when a
# new circle appears, and when one listed here is gone (so the list only shrinks). Empty:
# keep it so.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package modules it imports (at module level or inside functions)."""
    paths = sorted((src / "tandem").rglob("*.py"))
    modules = {_module_name(p, src) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = _module_name(path, src)
        found = _imports(path, src)
        # ``from pkg import sub`` depends on pkg.sub; pkg itself only where a name of it is used.
        via = {(n, t.rsplit(".", 1)[0]) for n, t in found if t in modules and "." in t}
        graph[name] = {t for n, t in found if t in modules and t != name and (n, t) not in via}
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_two_modules_import_each_other() -> None:
    found = set(circles(import_graph()))
    new = [sorted(c) for c in found - set(KNOWN_CIRCLES)]
    assert new == [], f"import circles: {new}"
    gone = [KNOWN_CIRCLES[c] for c in set(KNOWN_CIRCLES) - found]
    assert gone == [], f"circles listed as known are gone; remove them from KNOWN_CIRCLES: {gone}"


def test_circle_finder_finds_a_circle_through_a_lazy_import(tmp_path: Path) -> None:
    pkg = tmp_path / "tandem"
    pkg.mkdir()
    (pkg / "a.py").write_text("from tandem import b\n", encoding="utf-8")
    (pkg / "b.py").write_text("def f():\n    from tandem.c import x\n", encoding="utf-8")
    (pkg / "c.py").write_text("from tandem.a import y\n", encoding="utf-8")
    (pkg / "d.py").write_text("from tandem import a\n", encoding="utf-8")
    assert circles(import_graph(tmp_path)) == [frozenset({"tandem.a", "tandem.b", "tandem.c"})]
