"""An auditor's install has no server stack: with fastapi, starlette, sqlmodel,
sqlalchemy, alembic, uvicorn, psycopg and pydantic-settings made unimportable, the CLI
still starts and `tandem verify proofs` / `tandem audit verify` check files exported
from a real deployment. The package metadata says the same: those libraries are in the
`server` extra, not in the base requirements."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tests.conftest import World
from tests.helpers.keysets import make_keyset

from tandem.cli.audit_cmds import download_export

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = (
    "fastapi",
    "starlette",
    "sqlmodel",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "psycopg",
    "pydantic_settings",
    "swagger_ui_bundle",
)

# Runs the CLI with the server's libraries unimportable, then asserts none was loaded.
BLOCKED_CLI = f"""
import runpy, sys
BLOCK = set({list(SERVER_ONLY)!r})

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
sys.argv = ["tandem", *sys.argv[1:]]
try:
    runpy.run_module("tandem.cli", run_name="__main__")
except SystemExit as exc:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
    assert not loaded, loaded
    raise
"""


def run_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_blocker_blocks() -> None:
    script = BLOCKED_CLI.replace('runpy.run_module("tandem.cli"', 'runpy.run_module("fastapi"')
    probe = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0
    assert "blocked" in probe.stderr


def test_cli_help_without_server_libraries() -> None:
    result = run_blocked("--help")
    assert result.returncode == 0, result.stderr
    assert "verify" in result.stdout
    for sub in ("proofs", "transcript"):
        result = run_blocked("verify", sub, "--help")
        assert result.returncode == 0, result.stderr


def test_server_commands_say_which_extra_is_missing(tmp_path: Path) -> None:
    for args in (("serve",), ("init", "--data-dir", str(tmp_path / "d"))):
        result = run_blocked(*args)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "pip install 'tandem[server]'" in result.stderr + result.stdout
        assert "server_extra_missing" in result.stderr + result.stdout


@pytest.fixture
def exported(world: World, tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """A real proof bundle and a real audit export, as `tandem proof bundle` and `tandem
    audit export` write them."""
    make_keyset(world, chains=(("bitcoin", "testnet"), ("ethereum", "sepolia")), count=2)
    bundle = world.client.proofs.run(
        issuer=world["olga"],
        manager=world["alice"],
        custodian=world["bob"],
        scope={"kind": "all"},
        code=lambda: world.code("bob"),
    )
    response = world.client.http.get(
        f"/v1/proofs/{bundle['challenge']['id']}/bundle",
        headers={"Authorization": f"Bearer {world.client.session(world['olga'])}"},
    )
    assert response.status_code == 200
    out = tmp_path / "export"
    out.mkdir()
    (out / "proofs.json").write_bytes(response.content)
    assert hashlib.sha256(response.content).hexdigest() == response.headers["X-Tandem-Bundle-Hash"]
    _size, checkpoint = download_export(world.client, world["olga"], out / "audit.jsonl")
    (out / "checkpoint.json").write_text(json.dumps(checkpoint))
    (out / "service-key.json").write_text(json.dumps(world.client.deployment()["service"]))
    return out, bundle


def test_verify_proofs_and_audit_without_server_libraries(
    exported: tuple[Path, dict[str, object]],
) -> None:
    out, bundle = exported
    challenge = bundle["challenge"]
    assert isinstance(challenge, dict)
    proofs = run_blocked("verify", "proofs", str(out / "proofs.json"), "--challenge", str(challenge["nonce"]))
    assert proofs.returncode == 0, proofs.stdout + proofs.stderr
    assert "every proof verifies" in proofs.stdout

    audit = run_blocked("audit", "verify", str(out / "audit.jsonl"))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "OK" in audit.stdout

    # And the blocked run still fails on a tampered file: the check is real.
    lines = (out / "audit.jsonl").read_text().splitlines()
    entry = json.loads(lines[1])
    entry["data"]["tampered"] = True
    lines[1] = json.dumps(entry, separators=(",", ":"))
    (out / "audit.jsonl").write_text("\n".join(lines) + "\n")
    bad = run_blocked("audit", "verify", str(out / "audit.jsonl"))
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr


def _names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_server_libraries_are_in_the_server_extra_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = _names(project["dependencies"])
    server = _names(project["optional-dependencies"]["server"])
    for name in ("fastapi", "sqlmodel", "alembic", "uvicorn", "psycopg", "pydantic-settings"):
        assert name in server
        assert name not in base
    assert {"cryptography", "pynacl", "coincurve", "rfc8785", "pycryptodome", "typer", "rich"} <= base
    assert project["optional-dependencies"]["verify"] == []


def test_scripts_install_the_server_extra() -> None:
    for script, extras in (("test", "[server,dev]"), ("bench", "[server,dev]"), ("demo", "[server]")):
        text = (ROOT / "scripts" / script).read_text()
        assert f'ensure_venv "{extras}"' in text, script
