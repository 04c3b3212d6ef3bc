"""The members' client has one calling style: ``Client`` is the transport and pin, each
flow an object reached from it. No module function of ``tandem.client`` takes a client;
the ones left are helpers that never talk to the server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tandem.client import Client, Transport

CLIENT_DIR = Path(__file__).resolve().parents[2] / "src" / "tandem" / "client"
FLOWS = (
    "members",
    "withdrawals",
    "policy",
    "keysets",
    "ceremonies",
    "proofs",
    "books",
    "audit",
    "public_files",
)


def _takes_a_client(fn: ast.FunctionDef) -> bool:
    args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    for a in args:
        shown = ast.unparse(a.annotation) if a.annotation is not None else ""
        if a.arg in {"client", "cl"} or shown.strip("'\"") in {"Client", "Transport"}:
            return True
    return False


@pytest.mark.parametrize("path", sorted(CLIENT_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_module_function_takes_a_client(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and _takes_a_client(n)]
    assert found == [], f"{path.name}: make these methods of the module's flow class: {found}"


def test_every_flow_is_reached_from_the_client() -> None:
    client = Client("http://127.0.0.1:9")
    for name in FLOWS:
        flow = getattr(client, name)
        assert flow._client is client, name
    assert isinstance(client, Transport)


def test_the_transport_carries_no_flow() -> None:
    flows_on_transport = [n for n in FLOWS if hasattr(Transport, n)]
    assert flows_on_transport == []
    assert not any(hasattr(Transport, m) for m in ("propose_add", "enrol_totp", "audit_export"))
