"""`tandem fetch ...` against a real in-process server: no keystore, no session, the file
written and then verified offline against the genesis file and hash (or a pin file);
the wrong trust fails, the hash alone is refused as not enough. And the command path,
verification included, runs with the server's libraries unimportable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api.test_auditor_install import SERVER_ONLY, run_blocked
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.cli import invoke

from tandem.cli import exit_codes, fetch_cmds
from tandem.client import Client
from tandem.core.canonical import canonical

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def auditor(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A deployment with a keygen ceremony and a completed proof; the auditor's genesis
    file and pin file on disk; every `tandem fetch` pointed at the server with a client
    that holds no session and no pin."""
    sent: list[httpx.Request] = []
    world.client.http.event_hooks["request"].append(sent.append)
    monkeypatch.setattr(fetch_cmds, "Client", lambda server: Client(http=world.client.http))
    transcript = world.client.ceremonies.run(
        proposer=world["alice"],
        approvers=[world["bob"]],
        definition_text=(ROOT / "ceremonies" / "bitcoin-testnet-cold.toml").read_text(),
        code=world.code,
    )
    bundle = world.client.proofs.run(
        issuer=world["olga"],
        manager=world["alice"],
        custodian=world["bob"],
        scope={"kind": "all"},
        code=lambda: world.code("bob"),
    )
    genesis = audit_entries(world)[0]["data"]
    (tmp_path / "genesis.json").write_text(
        json.dumps({"genesis": genesis["genesis"], "signatures": genesis["signatures"]})
    )
    assert world.client.pin is not None
    (tmp_path / "olga.pin.json").write_text(json.dumps(world.client.pin.to_json()))
    sent.clear()
    return {
        "hash": genesis["genesis_hash"],
        "ceremony": transcript["ceremony"]["id"],
        "challenge": bundle["challenge"],
        "sent": sent,
    }


def by_genesis(tmp_path: Path, auditor: dict[str, Any]) -> list[str]:
    return ["--genesis", str(tmp_path / "genesis.json"), "--genesis-hash", auditor["hash"]]


def test_each_file_is_fetched_without_a_keystore_and_verified(
    world: World, tmp_path: Path, auditor: dict[str, Any]
) -> None:
    pin = ["--pin", str(tmp_path / "olga.pin.json")]
    runs = [
        (["checkpoint"], by_genesis(tmp_path, auditor), "signed by the service key"),
        (["inclusion", "2"], pin, "entry 2 (hash"),
        (["consistency", "1", "5"], by_genesis(tmp_path, auditor), "extends the tree of 1"),
        (
            ["proofs", auditor["challenge"]["id"], "--challenge", auditor["challenge"]["nonce"]],
            pin,
            "proofs verify",
        ),
        (["transcript", auditor["ceremony"]], by_genesis(tmp_path, auditor), "transcript of ceremony"),
    ]
    for i, (what, trust, says) in enumerate(runs):
        out = tmp_path / f"file{i}.json"
        status, text = invoke("fetch", *what, "--out", str(out), *trust)
        assert status == exit_codes.OK, text
        assert says in text, text
        assert f"OK: {out} verifies against genesis {auditor['hash']}" in " ".join(text.split())
        assert out.exists()
    assert auditor["sent"], "the commands reached the server"
    for request in auditor["sent"]:
        assert "authorization" not in {k.lower() for k in request.headers}
        assert request.url.path.startswith("/v1/public/"), request.url
    # The bundle written is the very file whose hash the session route announces.
    session = {"Authorization": f"Bearer {world.client.session(world['olga'])}"}
    served = world.client.http.get(f"/v1/proofs/{auditor['challenge']['id']}/bundle", headers=session)
    assert (tmp_path / "file3.json").read_bytes() == served.content


def test_the_wrong_trust_fails_and_the_hash_alone_is_not_enough(
    tmp_path: Path, auditor: dict[str, Any]
) -> None:
    out = tmp_path / "cp.json"
    wrong = "0" * 64
    status, text = invoke(
        "fetch",
        "checkpoint",
        "--out",
        str(out),
        "--genesis",
        str(tmp_path / "genesis.json"),
        "--genesis-hash",
        wrong,
    )
    assert status == exit_codes.REFUSED, text
    assert "pin_mismatch" in text
    assert not out.exists(), "nothing is fetched under a trust that does not hold"

    # A pin naming another service key: the file is written, and it does not verify.
    pin = json.loads((tmp_path / "olga.pin.json").read_text())
    pin["service"]["sign_public"] = "11" * 32
    (tmp_path / "other.pin.json").write_text(json.dumps(pin))
    status, text = invoke("fetch", "checkpoint", "--out", str(out), "--pin", str(tmp_path / "other.pin.json"))
    assert status == exit_codes.REFUSED, text
    assert "FAILED" in text
    assert "does not verify" in text
    assert "audit_verification_failed" in text
    assert out.exists()

    status, text = invoke("fetch", "checkpoint", "--out", str(out), "--genesis-hash", auditor["hash"])
    assert status == exit_codes.BAD_INPUT, text
    assert "--genesis genesis.json" in text

    status, text = invoke("fetch", "checkpoint", "--out", str(out))
    assert status == exit_codes.OK, text
    assert "not verified" in text

    status, text = invoke("fetch", "proofs", "pc_0123456789abcdef", "--out", str(out))
    assert status == exit_codes.NOT_FOUND, text


def test_fetch_and_its_verification_run_without_the_server_libraries(
    tmp_path: Path, auditor: dict[str, Any]
) -> None:
    for sub in ("checkpoint", "inclusion", "consistency", "proofs", "transcript"):
        result = run_blocked("fetch", sub, "--help")
        assert result.returncode == 0, result.stderr
    result = run_blocked(
        "fetch", "checkpoint", "--server", "http://127.0.0.1:9", "--out", str(tmp_path / "x.json")
    )
    assert result.returncode == exit_codes.UNREACHABLE, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    # The offline checks of every kind, on files the real server served, with the server's
    # stack blocked: what an auditor's `tandem[verify]` install runs after the download.
    files = {}
    for kind, args in (
        ("checkpoint", ["checkpoint"]),
        ("inclusion", ["inclusion", "1"]),
        ("consistency", ["consistency", "2", "4"]),
        ("proofs", ["proofs", auditor["challenge"]["id"]]),
        ("transcript", ["transcript", auditor["ceremony"]]),
    ):
        out = tmp_path / f"{kind}.json"
        status, text = invoke("fetch", *args, "--out", str(out))
        assert status == exit_codes.OK, text
        files[kind] = str(out)
    script = f"""
import sys, json
from pathlib import Path
BLOCK = set({list(SERVER_ONLY)!r})
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Blocker())
from tandem.client import public_files as pf
genesis = Path({str(tmp_path / "genesis.json")!r})
pin = pf.trust_from(genesis_hash={auditor["hash"]!r}, genesis_file=genesis, pin_file=None)
for kind, path in {files!r}.items():
    assert pf.verify(kind, Path(path).read_bytes(), pin), kind
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCK)
assert not loaded, loaded
print("verified", len({files!r}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified 5" in done.stdout
    # And the same checks refuse an edited checkpoint there too.
    doc = json.loads(Path(files["checkpoint"]).read_text())
    doc["checkpoint"]["tree_size"] += 1
    Path(files["checkpoint"]).write_bytes(canonical(doc))
    bad = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert bad.returncode != 0
    assert "BadSignatureError" in bad.stderr
