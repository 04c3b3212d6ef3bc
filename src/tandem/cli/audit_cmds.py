"""`tandem audit ...`: export, offline verification, inclusion and consistency proofs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tandem import humanize
from tandem.cli.common import (
    KeystoreOpt,
    ServerOpt,
    console,
    load_member,
    read_json,
    show,
    write_json,
)
from tandem.client import Client
from tandem.core import audit, merkle
from tandem.core.identity import MemberSecrets
from tandem.core.membership import LogState
from tandem.errors import ConfigurationError, InputError, RemoteError, VerificationError

if TYPE_CHECKING:
    # Server code is loaded only when --full runs it; a member's CLI never needs it.
    from tandem.services.audit import StoredVerifyReport


@contextlib.contextmanager
def progress_bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A callback taking "done so far": a rich progress bar on a terminal, nothing when
    the output is piped or captured."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)


def _export_lines(file: Path) -> Iterator[bytes]:
    """The export's lines as they are read, one at a time; blank lines carry nothing
    and are skipped, as they always were."""
    with file.open("rb") as handle:
        for line in handle:
            if line not in (b"\n", b""):
                yield line


def _tree_size(checkpoint: dict[str, object]) -> int | None:
    body = checkpoint.get("checkpoint")
    size = body.get("tree_size") if isinstance(body, dict) else None
    return size if isinstance(size, int) else None


def verify_export_file(
    file: Path, checkpoint: dict[str, object], key: bytes, *, genesis_hash: str | None = None
) -> tuple[audit.VerifyReport, int]:
    """Structure, chain, Merkle root and checkpoint; every actor signature against the
    membership in force at its point of the log; and every effect on membership, policy
    and address book recomputed from the member-signed proposals and approvals (an
    entry the service key wrote alone is refused, naming it). Reads the file line by
    line, so memory stays flat whatever its size."""
    state = LogState(genesis_hash_pin=genesis_hash)
    with progress_bar("verifying", _tree_size(checkpoint)) as report_progress:
        report = audit.verify_export(
            _export_lines(file), checkpoint, key, replay=state.observe_entry, progress=report_progress
        )
    if state.service_sign_public is not None and state.service_sign_public != key:
        raise VerificationError("the log's genesis names another service key than the one given")
    return report, state.signatures_verified


def download_export(cl: Client, member: MemberSecrets, target: Path) -> tuple[int, dict[str, object]]:
    """Stream the export into ``target`` as it arrives; return its size and the
    checkpoint that covers exactly it."""
    # A read first: the client reopens a lapsed session there, so the token is fresh.
    cl.get(member, "/v1/audit/checkpoint")
    headers = {"Authorization": f"Bearer {cl.session(member)}"}
    with cl.http.stream("GET", "/v1/audit/export", headers=headers) as response:
        if response.status_code >= 400:
            response.read()
            try:
                err = response.json()
            except ValueError:
                err = {}
            raise RemoteError(
                str(err.get("code", "http_error")),
                str(err.get("message", response.text[:200])),
                response.status_code,
            )
        size = int(response.headers["X-Tandem-Tree-Size"])
        written = 0
        with target.open("wb") as out, progress_bar("downloading", size) as advance:
            for chunk in response.iter_bytes():
                out.write(chunk)
                written += chunk.count(b"\n")
                advance(written)
    if written != size:
        raise InputError(f"the export ended after {written} of the {size} entries it announced")
    checkpoint: dict[str, object] = cl.get(member, "/v1/audit/checkpoint", tree_size=size)
    return size, checkpoint


def verify_server_database(data_dir: Path) -> StoredVerifyReport:
    """``tandem audit verify --full``: every row of the server's own database from
    entry 0, streamed, then the verified-up-to marker moved to the end."""
    from tandem.core.service_key import ServiceKey
    from tandem.services import Tandem
    from tandem.settings import Settings
    from tandem.store.db import Database

    settings = Settings(data_dir=data_dir)
    key_file = settings.resolved_key_file()
    if not key_file.exists():
        raise ConfigurationError(f"no service key at {key_file}: --full runs beside the server's data")
    key = ServiceKey.from_file_bytes(key_file.read_bytes())
    db = Database(settings.resolved_database_url())
    try:
        db.migrate()
        svc = Tandem(db, key, clock=lambda: int(time.time()))
        with progress_bar("verifying every entry", None) as advance:
            return svc.audit.verify_stored(full=True, progress=lambda done, _total: advance(done))
    finally:
        db.dispose()


def _entry_line(cl: Client, member: MemberSecrets, doc: dict[str, Any], cp: dict[str, Any]) -> str:
    """One entry as a person reads it: what, by whom (by name), when (local time)."""
    entry = doc["entry"]
    names = humanize.member_names(cl.get_all(member, "/v1/members"))
    return (
        f"entry {entry.get('index', '')}: {entry.get('kind')} by "
        f"{humanize.member(entry.get('actor'), names)} at {humanize.when(entry.get('time'))}; "
        f"checkpoint of {humanize.when(cp.get('time'))}"
    )


def export(
    out: Annotated[Path, typer.Option(help="Directory for audit.jsonl and checkpoint.json.")] = Path(
        "audit-export"
    ),
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Download the whole log (JSON Lines) and the signed checkpoint that covers it."""
    cl = Client(server)
    out.mkdir(parents=True, exist_ok=True)
    size, checkpoint = download_export(cl, load_member(keystore), out / "audit.jsonl")
    write_json(out / "checkpoint.json", checkpoint)
    write_json(out / "service-key.json", cl.deployment()["service"])
    console.print(f"{size} entries -> {out / 'audit.jsonl'}, checkpoint -> {out / 'checkpoint.json'}")


def verify(  # noqa: PLR0917 - typer maps options to parameters
    file: Annotated[Path | None, typer.Argument(help="audit.jsonl from `tandem audit export`.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint JSON (default: beside the file).")
    ] = None,
    service_key: Annotated[
        str | None,
        typer.Option(
            help="Service signing public key (hex), obtained independently of the export. "
            "Default: service-key.json beside the file."
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="(Operator) Re-verify the server's own database from entry 0 instead of "
            "an export: the check that finds a row before the start-up marker edited in "
            "place. Moves the marker on success.",
        ),
    ] = False,
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="TANDEM_DATA_DIR",
            help="With --full: the server's data directory (TANDEM_DATABASE_URL overrides "
            "the database in it).",
        ),
    ] = Path("tandem-data"),
    genesis_hash: Annotated[
        str | None,
        typer.Option(help="The genesis hash you pinned; the log must start from that genesis."),
    ] = None,
) -> None:
    """Verify an export offline: hash chain, every actor signature, every membership,
    policy and address-book effect against its signed proposal and approvals, Merkle
    root, signed checkpoint. Names the first bad entry and exits non-zero on any
    problem. With --full, verify the server's own database instead."""
    if full:
        stored = verify_server_database(data_dir)
        console.print(
            f"[green]OK[/] {stored.entries} entries in the database; root {stored.root}; "
            f"verified-up-to marker {'moved to' if stored.marker_written else 'left at'} "
            f"{stored.entries}"
        )
        return
    if file is None:
        raise InputError("name the export to verify (audit.jsonl), or pass --full")
    cp = read_json(checkpoint or file.parent / "checkpoint.json")
    key_hex = service_key or read_json(file.parent / "service-key.json")["sign_public"]
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise InputError("--service-key must be hex") from None
    report, signed = verify_export_file(file, cp, key, genesis_hash=genesis_hash)
    console.print(
        f"[green]OK[/] {report.entries} entries; root {report.root}; "
        f"{signed} actor signatures re-verified; checkpoint signed by the service key {audit.key_id(key)}"
    )


def members(
    genesis_hash: Annotated[
        str, typer.Option(help="The genesis hash you pinned when you joined the deployment.")
    ],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """The members as the log justifies them (from your pinned genesis, through
    member-signed proposals and approvals), checked against the server's list; a
    member or key the log does not justify is refused, naming it."""

    rows = Client(server).audit.trusted_members(load_member(keystore), genesis_hash_pin=genesis_hash)
    for m in sorted(rows, key=lambda r: (r.role.value, r.name)):
        console.print(f"{m.id}  {m.role.value:<9}  {m.name}")
    console.print(f"[green]OK[/] {len(rows)} members, each justified by the log")


def inclusion(
    index: Annotated[int, typer.Argument(help="Entry index.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    tree_size: Annotated[int | None, typer.Option(help="Tree size (default: latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON (no summary lines).")] = False,
) -> None:
    """Fetch and check an RFC 6962 inclusion proof of one entry in a signed checkpoint."""
    cl = Client(server)
    member = load_member(keystore)
    params = {"tree_size": tree_size} if tree_size else {}
    doc = cl.get(member, f"/v1/audit/inclusion/{index}", **params)
    cp = audit.verify_checkpoint(doc["checkpoint"], bytes.fromhex(cl.deployment()["service"]["sign_public"]))
    merkle.verify_inclusion(
        bytes.fromhex(doc["entry"]["hash"]),
        index,
        doc["tree_size"],
        [bytes.fromhex(p) for p in doc["proof"]],
        bytes.fromhex(cp["root"]),
    )
    show(doc)
    if as_json:
        return
    console.print(_entry_line(cl, member, doc, cp))
    console.print(f"[green]OK[/] entry {index} is in the signed tree of size {doc['tree_size']}")


def consistency(
    old: Annotated[int, typer.Argument(help="Older tree size.")],
    new: Annotated[int, typer.Argument(help="Newer tree size.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Prove the log of size NEW extends the log of size OLD without rewriting it."""
    cl = Client(server)
    doc = cl.get(load_member(keystore), "/v1/audit/consistency", old=old, new=new)
    key = bytes.fromhex(cl.deployment()["service"]["sign_public"])
    a = audit.verify_checkpoint(doc["old_checkpoint"], key)
    b = audit.verify_checkpoint(doc["new_checkpoint"], key)
    merkle.verify_consistency(
        old,
        new,
        bytes.fromhex(a["root"]),
        bytes.fromhex(b["root"]),
        [bytes.fromhex(p) for p in doc["proof"]],
    )
    console.print(f"[green]OK[/] tree {new} is an append-only extension of tree {old}")


def register(audit_app: typer.Typer) -> None:
    """The audit commands on ``tandem audit``; offline verification also as ``tandem verify audit``."""
    from tandem.cli.ceremony_cmds import verify_app

    audit_app.command("export")(export)
    # `tandem verify audit` beside the other offline checks; `audit verify` stays, hidden.
    audit_app.command("verify", hidden=True)(verify)
    verify_app.command("audit")(verify)
    audit_app.command("members")(members)
    audit_app.command("inclusion")(inclusion)
    audit_app.command("consistency")(consistency)
