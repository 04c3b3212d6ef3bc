"""THREATS 19: any edit, deletion, insertion or reordering of an exported audit log, and
a checkpoint signed by another key, fail verification naming the first bad entry —
through ``tandem.core.audit.verify_export``, the CLI's ``verify_export_file`` and the
``tandem audit verify`` command."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient
from tests.conftest import BACKENDS, FakeClock, claim_token_of, make_database, new_member
from typer.testing import CliRunner

from tandem.api import create_app
from tandem.cli.audit_cmds import verify_export_file
from tandem.cli.main import app as cli_app
from tandem.client import Client
from tandem.client.members import draft_genesis, sign_genesis
from tandem.core import audit
from tandem.core.canonical import canonical
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.errors import AuditVerificationError, RemoteError
from tandem.services import Tandem


class Exported(NamedTuple):
    lines: list[str]
    checkpoint: dict[str, Any]
    key: bytes
    service_key: ServiceKey
    deployment: str


@pytest.fixture(scope="module", params=BACKENDS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """A log with approvals, refusals and member changes, exported by the service; built
    once per module and backend (every test below only reads it)."""
    db = make_database(request.param, tmp_path_factory.mktemp("t19"))
    clock = FakeClock()
    svc = Tandem(db, ServiceKey.generate(), clock=clock)
    svc.audit.startup_check()
    people = {
        n: new_member(n, r)
        for n, r in [
            ("alice", Role.MANAGER),
            ("mark", Role.MANAGER),
            ("bob", Role.CUSTODIAN),
            ("cora", Role.CUSTODIAN),
            ("olga", Role.AUDITOR),
        ]
    }
    with TestClient(create_app(service=svc), raise_server_exceptions=False) as http:
        c = Client(http=http, clock=clock)
        doc = draft_genesis(
            deployment="dep_" + secrets.token_hex(8),
            entity="Example Fund SICAV",
            created_at=clock(),
            service=c.deployment()["service"],
            cards=[m.card() for m in people.values()],
        )
        c.members.submit_genesis(
            doc, dict(sign_genesis(m, doc) for m in people.values()), claim_token=claim_token_of(svc)
        )
        for m in people.values():
            c.members.enrol_totp(m)

        def code(name: str) -> str:
            clock.advance(30)
            return c.members.totp_code(people[name])

        prop = c.members.propose_add(people["alice"], new_member("nina", Role.CUSTODIAN).card())
        c.members.approve(people["bob"], prop["id"], totp=code("bob"))
        # The addition takes effect once its delay has passed (THREATS 35).
        clock.advance(86401)
        c.request(
            "POST",
            f"/v1/proposals/{prop['id']}/apply",
            json_body={"envelope": c.sign(people["alice"], "proposal.apply", {"proposal": prop["id"]})},
        )
        other = c.members.propose_add(people["bob"], new_member("nora", Role.AUDITOR).card())
        with pytest.raises(RemoteError):
            c.members.approve(people["cora"], other["id"], totp=code("cora"))  # same side: refused, audited
        c.members.reject(people["mark"], other["id"], reason="no")
    lines, checkpoint = svc.audit.export()
    assert len(lines) >= 15
    yield Exported(list(lines), checkpoint, svc.key.sign_public, svc.key, doc["deployment"])
    db.drop_schema()
    db.dispose()


def first_bad(lines: list[str], checkpoint: dict[str, Any], key: bytes) -> int | None:
    with pytest.raises(AuditVerificationError) as err:
        audit.verify_export(lines, checkpoint, key)
    assert err.value.code == "audit_verification_failed"
    if err.value.index is not None:
        assert err.value.details["first_bad_entry"] == err.value.index
        assert f"entry {err.value.index}" in err.value.message
    return err.value.index


def edit_line(line: str, change: Callable[[dict[str, Any]], None], *, rehash: bool = False) -> str:
    entry = json.loads(line)
    change(entry)
    if rehash:
        entry.pop("hash")
        entry["hash"] = audit.entry_hash(entry)
    return canonical(entry).decode()


def rehash_from(lines: list[str], start: int) -> list[str]:
    """What an attacker without the service key can do: recompute every later hash."""
    out = lines[:start]
    prev = json.loads(out[-1])["hash"] if out else audit.GENESIS_PREV
    for i, line in enumerate(lines[start:], start):
        entry = json.loads(line)
        entry["index"] = i
        entry["prev"] = prev
        entry.pop("hash")
        entry["hash"] = audit.entry_hash(entry)
        prev = entry["hash"]
        out.append(canonical(entry).decode())
    return out


def test_untouched_export_verifies(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    report = audit.verify_export(lines, checkpoint, key)
    assert report.entries == len(lines)


# --- edits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [0, 3, -1])
@pytest.mark.parametrize(
    "change",
    [
        lambda e: e["data"].__setitem__("injected", True),
        lambda e: e.__setitem__("outcome", "ok" if e["outcome"] == "refused" else "refused"),
        lambda e: e.__setitem__("time", e["time"] + 1),
        lambda e: e.__setitem__("actor", "mem_" + "0" * 20),
        lambda e: e.__setitem__("kind", "member.added"),
    ],
    ids=["data", "outcome", "time", "actor", "kind"],
)
def test_edited_entry_named(exported: Exported, where: int, change: Any) -> None:
    lines, checkpoint, key = exported[:3]
    i = where % len(lines)
    tampered = list(lines)
    tampered[i] = edit_line(lines[i], change)
    assert first_bad(tampered, checkpoint, key) == i


def test_byte_level_edit_named(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    i = 5
    tampered = list(lines)
    tampered[i] = lines[i].replace('"outcome":"', '"outcome": "', 1)  # non-canonical whitespace
    assert first_bad(tampered, checkpoint, key) == i
    tampered[i] = lines[i] + " "
    assert first_bad(tampered, checkpoint, key) == i


def test_edit_with_own_hash_recomputed_named_at_the_broken_link(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    i = 4
    tampered = list(lines)
    tampered[i] = edit_line(lines[i], lambda e: e["data"].__setitem__("x", 1), rehash=True)
    # Entry i is self-consistent now; entry i+1 no longer links to it.
    assert first_bad(tampered, checkpoint, key) == i + 1


def test_edit_with_whole_chain_rehashed_caught_by_the_signed_checkpoint(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    i = 4
    tampered = list(lines)
    tampered[i] = edit_line(lines[i], lambda e: e["data"].__setitem__("x", 1))
    tampered = rehash_from(tampered, i)
    assert first_bad(tampered, checkpoint, key) == len(lines) - 1


# --- deletions, insertions, reordering --------------------------------------------------------


@pytest.mark.parametrize("where", [0, 1, 6, -2])
def test_deleted_entry_named(exported: Exported, where: int) -> None:
    lines, checkpoint, key = exported[:3]
    i = where % len(lines)
    tampered = lines[:i] + lines[i + 1 :]
    assert first_bad(tampered, checkpoint, key) == i


def test_deleted_last_entry_named(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    assert first_bad(lines[:-1], checkpoint, key) == len(lines) - 1


def test_deleted_entry_with_later_entries_rehashed_named(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    i = 6
    tampered = rehash_from(lines[:i] + lines[i + 1 :], i)
    # Now one entry short of what the checkpoint covers.
    assert first_bad(tampered, checkpoint, key) == len(lines) - 1


@pytest.mark.parametrize("where", [0, 5, "end"])
def test_inserted_entry_named(exported: Exported, where: Any) -> None:
    lines, checkpoint, key = exported[:3]
    i = len(lines) if where == "end" else where
    forged = json.loads(lines[min(i, len(lines) - 1)])
    forged["data"] = {"forged": True}
    forged["kind"] = "member.added"
    forged["hash"] = "0" * 64
    tampered = [*lines[:i], canonical(forged).decode(), *lines[i:]]
    assert first_bad(tampered, checkpoint, key) == i


def test_inserted_entry_that_links_correctly_named(exported: Exported) -> None:
    """An inserted entry with the right prev and a valid hash, everything after re-hashed."""
    lines, checkpoint, key = exported[:3]
    i = 5
    template = json.loads(lines[i])
    template["kind"] = "member.added"
    template["data"] = {"forged": True}
    template["envelope"] = None
    tampered = rehash_from([*lines[:i], canonical(template).decode(), *lines[i:]], i)
    assert first_bad(tampered, checkpoint, key) == len(lines)


@pytest.mark.parametrize(("a", "b"), [(0, 1), (3, 4), (2, 9), (-2, -1)])
def test_reordered_entries_named(exported: Exported, a: int, b: int) -> None:
    lines, checkpoint, key = exported[:3]
    a, b = a % len(lines), b % len(lines)
    tampered = list(lines)
    tampered[a], tampered[b] = tampered[b], tampered[a]
    assert first_bad(tampered, checkpoint, key) == min(a, b)


def test_duplicated_entry_named(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    tampered = [*lines[:4], lines[3], *lines[4:]]
    assert first_bad(tampered, checkpoint, key) == 4


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_signed_by_another_key_refused(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    impostor = ServiceKey.generate()
    cp = checkpoint["checkpoint"]
    forged = audit.sign_checkpoint(
        impostor.sign_seed,
        deployment=cp["deployment"],
        tree_size=cp["tree_size"],
        root=cp["root"],
        last_hash=cp["last_hash"],
        time=cp["time"],
    )
    with pytest.raises(AuditVerificationError, match="another key"):
        audit.verify_export(lines, forged, key)
    # Claiming the real key id does not help: the signature is then wrong.
    forged["checkpoint"]["key_id"] = cp["key_id"]
    with pytest.raises(AuditVerificationError):
        audit.verify_export(lines, forged, key)


def test_checkpoint_fields_edited_refused(exported: Exported) -> None:
    lines, checkpoint, key = exported[:3]
    for field, value in [
        ("tree_size", checkpoint["checkpoint"]["tree_size"] - 1),
        ("root", "ab" * 32),
        ("last_hash", "cd" * 32),
        ("time", 1),
        ("deployment", "dep_other"),
    ]:
        doc = json.loads(json.dumps(checkpoint))
        doc["checkpoint"][field] = value
        with pytest.raises(AuditVerificationError):
            audit.verify_export(lines, doc, key)


def test_whole_log_rewritten_and_re_signed_by_another_key_refused(exported: Exported) -> None:
    """The attacker rewrites everything consistently and signs with a key of its own."""
    lines, checkpoint, key = exported[:3]
    tampered = list(lines)
    tampered[2] = edit_line(lines[2], lambda e: e["data"].__setitem__("x", 1))
    tampered = rehash_from(tampered, 2)
    acc = audit.MerkleAccumulator()
    for line in tampered:
        acc.append(bytes.fromhex(json.loads(line)["hash"]))
    impostor = ServiceKey.generate()
    forged = audit.sign_checkpoint(
        impostor.sign_seed,
        deployment=checkpoint["checkpoint"]["deployment"],
        tree_size=len(tampered),
        root=acc.root().hex(),
        last_hash=json.loads(tampered[-1])["hash"],
        time=1,
    )
    audit.verify_export(tampered, forged, impostor.sign_public)  # consistent under its own key...
    with pytest.raises(AuditVerificationError):
        audit.verify_export(tampered, forged, key)  # ...but not under the deployment's


def test_insider_with_the_service_key_cannot_forge_an_approval(exported: Exported, tmp_path: Path) -> None:
    """Even a re-hashed log re-signed with the real service key fails the offline check:
    every accepted action is re-verified against the signer's key at that point."""
    lines = exported.lines
    i = next(n for n, line in enumerate(lines) if json.loads(line)["kind"] == "proposal.approved")

    def change(e: dict[str, Any]) -> None:
        e["envelope"]["action"]["body"]["digest"] = "0" * 64

    tampered = rehash_from([*lines[:i], edit_line(lines[i], change), *lines[i + 1 :]], i)
    acc = audit.MerkleAccumulator()
    for line in tampered:
        acc.append(bytes.fromhex(json.loads(line)["hash"]))
    key = exported.service_key
    cp = audit.sign_checkpoint(
        key.sign_seed,
        deployment=exported.deployment,
        tree_size=len(tampered),
        root=acc.root().hex(),
        last_hash=json.loads(tampered[-1])["hash"],
        time=1,
    )
    audit.verify_export(tampered, cp, key.sign_public)  # structure alone cannot tell
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(tampered) + "\n", encoding="utf-8")
    with pytest.raises(AuditVerificationError) as err:
        verify_export_file(path, cp, key.sign_public)
    assert err.value.index == i


# --- through the CLI -----------------------------------------------------------------------------


def _write(tmp_path: Path, lines: list[str], checkpoint: dict[str, Any], key: bytes) -> Path:
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "checkpoint.json").write_text(json.dumps(checkpoint), encoding="utf-8")
    (tmp_path / "service-key.json").write_text(json.dumps({"sign_public": key.hex()}), encoding="utf-8")
    return path


TAMPERS: list[tuple[str, Callable[[list[str]], tuple[list[str], int]]]] = [
    ("edit", lambda ls: ([*ls[:3], edit_line(ls[3], lambda e: e.__setitem__("time", 0)), *ls[4:]], 3)),
    ("delete", lambda ls: ([*ls[:3], *ls[4:]], 3)),
    ("insert", lambda ls: ([*ls[:3], ls[7], *ls[3:]], 3)),
    ("reorder", lambda ls: ([*ls[:3], ls[4], ls[3], *ls[5:]], 3)),
    ("truncate", lambda ls: (ls[:-1], len(ls) - 1)),
]


@pytest.mark.parametrize(("name", "tamper"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_verify_export_file_names_first_bad_entry(
    exported: Exported, tmp_path: Path, name: str, tamper: Any
) -> None:
    lines, checkpoint, key = exported[:3]
    tampered, expected = tamper(lines)
    path = _write(tmp_path, tampered, checkpoint, key)
    with pytest.raises(AuditVerificationError) as err:
        verify_export_file(path, checkpoint, key)
    assert err.value.index == expected


def test_verify_export_file_accepts_the_genuine_export(exported: Exported, tmp_path: Path) -> None:
    lines, checkpoint, key = exported[:3]
    report, signed = verify_export_file(_write(tmp_path, lines, checkpoint, key), checkpoint, key)
    assert report.entries == len(lines)
    assert signed > 0


@pytest.mark.parametrize(("name", "tamper"), TAMPERS, ids=[t[0] for t in TAMPERS])
def test_cli_audit_verify_exits_non_zero_naming_the_entry(
    exported: Exported, tmp_path: Path, name: str, tamper: Any
) -> None:
    lines, checkpoint, key = exported[:3]
    tampered, expected = tamper(lines)
    path = _write(tmp_path, tampered, checkpoint, key)
    result = CliRunner().invoke(cli_app, ["audit", "verify", str(path), "--service-key", key.hex()])
    assert result.exit_code != 0
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert f"entry {expected}" in output
    ok = CliRunner().invoke(
        cli_app,
        ["audit", "verify", str(_write(tmp_path, lines, checkpoint, key)), "--service-key", key.hex()],
    )
    assert ok.exit_code == 0, ok.output


def test_cli_audit_verify_with_another_service_key_fails(exported: Exported, tmp_path: Path) -> None:
    lines, checkpoint, key = exported[:3]
    path = _write(tmp_path, lines, checkpoint, key)
    result = CliRunner().invoke(
        cli_app, ["audit", "verify", str(path), "--service-key", ServiceKey.generate().sign_public.hex()]
    )
    assert result.exit_code != 0
