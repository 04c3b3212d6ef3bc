"""Proof-of-ownership commands (registered by tandem.cli.custody_cmds): ``tandem proof ...``
and the auditor's offline ``tandem verify proofs``."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tandem.cli import common
from tandem.cli.common import (
    JsonOpt,
    KeystoreOpt,
    LimitOpt,
    ServerOpt,
    TotpFromKeystoreOpt,
    TotpOpt,
    console,
    err_console,
    load_member,
    show,
    whole_table,
)
from tandem.cli.parallel import chunk_runner
from tandem.client import Client
from tandem.core import proofs as core
from tandem.errors import InputError

proof_app = typer.Typer(
    help="Proof of ownership: challenge, both sides contribute, every address signs.",
    no_args_is_help=True,
)


def _scope(
    all_: bool,
    keyset: str | None,
    segregation: str | None,
    address: list[str] | None,
    addresses_file: Path | None,
) -> dict[str, Any]:
    listed = list(address or [])
    if addresses_file is not None:
        listed += [a.address for a in core.parse_address_list(_read_text(addresses_file))]
    chosen = sum([all_, keyset is not None, segregation is not None, bool(listed)])
    if chosen != 1:
        raise InputError("give exactly one scope: --all, --keyset, --segregation or --address/--addresses")
    if keyset is not None:
        return {"kind": "keyset", "keyset": keyset}
    if segregation is not None:
        return {"kind": "segregation", "segregation": segregation}
    if listed:
        return {"kind": "addresses", "addresses": listed}
    return {"kind": "all"}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


def _show_view(view: dict[str, Any]) -> None:
    doc = view["challenge"]
    console.print(f"challenge [bold]{view['id']}[/]  status {view['status']}")
    console.print(f"nonce      {escape(view['nonce'])}")
    console.print(f"statement  {escape(doc['statement'])}")
    console.print(f"scope      {escape(json.dumps(doc['scope'], ensure_ascii=False))}")
    console.print(f"expires    {core.utc_time(doc['expires_at'])}")
    table = whole_table("key set", "operation", "contributed")
    for entry in view["keysets"]:
        op = entry["operation"]["statement"]["operation"] if entry.get("operation") else "-"
        table.add_row(entry["keyset"], op, ", ".join(entry["contributed"]) or "-")
    console.print(table)
    if view.get("bundle_hash"):
        console.print(f"bundle sha256 {view['bundle_hash']}")


@proof_app.command("challenge")
def proof_challenge(  # noqa: PLR0913, PLR0917 - typer maps parameters to options
    statement: Annotated[str, typer.Option(help="What the proof is for (kept in the bundle).")],
    all_: Annotated[bool, typer.Option("--all", help="Every address of the deployment.")] = False,
    keyset: Annotated[str | None, typer.Option(help="One key set's addresses.")] = None,
    segregation: Annotated[
        str | None, typer.Option(help="Addresses of one class: own, client-omnibus, client:<id>.")
    ] = None,
    address: Annotated[list[str] | None, typer.Option(help="An address (repeat).")] = None,
    addresses: Annotated[
        Path | None,
        typer.Option(help="File of addresses (one per line, or CSV with an address column)."),
    ] = None,
    nonce: Annotated[
        str | None,
        typer.Option(help="Your own nonce (e.g. a recent block hash); random when omitted."),
    ] = None,
    expires_in_hours: Annotated[int, typer.Option(help="Hours until the challenge lapses.")] = 168,
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Custodian or auditor) Issue a proof-of-ownership challenge."""
    cl = Client(server)
    scope = _scope(all_, keyset, segregation, address, addresses)
    view = cl.proofs.issue(
        load_member(keystore),
        statement=statement,
        scope=scope,
        nonce=nonce,
        expires_at=cl.clock() + expires_in_hours * 3600,
    )
    _show_view(view)
    console.print(f"next: a manager and a custodian run `tandem proof contribute {view['id']}`")


@proof_app.command("contribute")
def proof_contribute(
    challenge_id: Annotated[str, typer.Argument(help="Challenge id (pc_...).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
) -> None:
    """(Manager or custodian) Re-seal your share to the challenge's operation keys. The
    second side's contribution makes the service sign every address in scope."""
    cl = Client(server)
    member = load_member(keystore)
    # One fetch: the shares go to the key sets and operations printed here.
    view = cl.proofs.get(member, challenge_id)
    _show_view(view)
    code = None
    if member.role.value == "custodian":
        code = common.totp_code(cl, member, totp, totp_from_keystore)
    _show_view(cl.proofs.contribute(member, challenge_id, totp=code, view=view))


@proof_app.command("renew")
def proof_renew(
    challenge_id: Annotated[str, typer.Argument(help="Challenge id (pc_...).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """New operation keys for an open challenge (after a server restart); both sides
    then contribute again."""
    _show_view(Client(server).proofs.renew_operations(load_member(keystore), challenge_id))


@proof_app.command("show")
def proof_show(
    challenge_id: Annotated[str, typer.Argument(help="Challenge id (pc_...).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A challenge, its key sets and who has contributed (--json: the raw values)."""
    view = Client(server).proofs.get(load_member(keystore), challenge_id)
    if as_json:
        show(view)
    else:
        _show_view(view)


@proof_app.command("list")
def proof_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    status: Annotated[str | None, typer.Option(help="open, signed, expired")] = None,
    limit: int | None = LimitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Every challenge and its status, oldest first (--json: the raw values)."""
    rows = Client(server).proofs.list(load_member(keystore), status=status, first=limit)
    if as_json:
        show(rows)
        return
    table = whole_table("id", "nonce", "status", "expires", "bundle sha256")
    for r in rows:
        table.add_row(
            r["id"],
            r["nonce"],
            r["status"],
            core.utc_time(r["expires_at"]),
            r["bundle_hash"] or "-",
        )
    console.print(table)


@proof_app.command("bundle")
def proof_bundle(
    challenge_id: Annotated[str, typer.Argument(help="Challenge id (pc_...).")],
    out: Annotated[Path, typer.Option(help="Bundle file to write (canonical JSON).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Download the signed bundle; `sha256sum` of the file equals the hash in the audit log."""
    data, bundle = Client(server).proofs.bundle(load_member(keystore), challenge_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    console.print(f"{len(bundle['proofs'])} proofs -> {out}")
    console.print(f"sha256 {core.bundle_hash(bundle)}")
    console.print(f"verify: tandem verify proofs {out} --challenge {bundle['challenge']['nonce']}")


def verify_proofs(  # noqa: PLR0917 - typer maps parameters to options
    bundle_file: Annotated[Path, typer.Argument(help="Bundle file from `tandem proof bundle`.")],
    challenge: Annotated[str, typer.Option(help="The challenge nonce you issued.")],
    addresses: Annotated[
        Path | None,
        typer.Option(
            help="Addresses that must each have a valid proof: one per line, or CSV with an "
            "'address' column (and optionally 'segregation')."
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write a JSON report here.")] = None,
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes (default: all cores for large bundles)."),
    ] = None,
    entity: Annotated[str | None, typer.Option(help="Require the bundle to name this legal entity.")] = None,
    service_key: Annotated[
        str | None,
        typer.Option(
            help="Service signing public key (hex, from the genesis document) to check the "
            "audit checkpoint's signature."
        ),
    ] = None,
) -> None:
    """Verify a proof-of-ownership bundle offline: every signature in its chain's own
    format, the nonce, the expiry, the message text, the address list and that own and
    client addresses are disjoint. Exits 1 naming each failing address."""
    try:
        data = bundle_file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {bundle_file}: {exc.strerror}") from None
    bundle = core.parse_bundle(data)
    listed = core.parse_address_list(_read_text(addresses)) if addresses is not None else None
    key = None
    if service_key is not None:
        try:
            key = bytes.fromhex(service_key)
        except ValueError:
            raise InputError("--service-key must be hex") from None
    started = time.monotonic()
    with Progress(
        TextColumn("verifying proofs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=len(bundle["proofs"]))
        result = core.verify_bundle(
            bundle,
            nonce=challenge,
            addresses=listed,
            entity=entity,
            service_public_key=key,
            run_chunks=chunk_runner(jobs, len(bundle["proofs"])),
            progress=lambda done, total: bar.update(task, completed=done),
        )
    elapsed = time.monotonic() - started
    _print_report(result, elapsed)
    if report is not None:
        doc = result.to_json()
        doc["file_sha256"] = hashlib.sha256(data).hexdigest()
        doc["seconds"] = round(elapsed, 3)
        common.write_json(report, doc)
        console.print(f"report -> {report}")
    if not result.ok:
        raise typer.Exit(1)


def _print_report(result: core.ProofReport, elapsed: float) -> None:
    console.print(f"entity     {escape(result.entity)}")
    console.print(f"challenge  {escape(result.nonce)}   signed {core.utc_time(result.signed_at)}")
    console.print(f"statement  {escape(result.statement)}")
    console.print(f"bundle     sha256 {result.bundle_hash}")
    table = whole_table("chain", "network", "format", "verified", "failed", title="Proofs")
    for s in result.summary:
        table.add_row(
            escape(s.chain),
            escape(s.network),
            escape(s.format),
            str(s.verified),
            f"[red]{s.failed}[/]" if s.failed else "0",
        )
    table.add_row("[bold]total[/]", "", "", str(result.verified), str(result.proofs - result.verified))
    console.print(table)
    if result.segregation_counts:
        console.print(
            "segregation " + ", ".join(f"{k}: {v}" for k, v in sorted(result.segregation_counts.items()))
        )
    if result.listed is not None:
        console.print(f"address list: {result.listed} addresses")
    rate = result.proofs / elapsed if elapsed > 0 else 0.0
    console.print(f"{result.proofs} proofs in {elapsed:.2f} s ({rate:,.0f}/s)")
    if result.ok:
        console.print("[bold green]OK[/]: every proof verifies")
        return
    err_console.print(f"[bold red]FAILED[/]: {len(result.failures)} problem(s)")
    for failure in result.failures:
        err_console.print(f"  {failure}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(proof_app, name="proof")
    from tandem.cli import ceremony_cmds

    verify_app = getattr(ceremony_cmds, "verify_app", None)
    if verify_app is None:
        # The ceremony commands own the `verify` group; until they define it, make it here.
        verify_app = typer.Typer(help="Offline verification for auditors.", no_args_is_help=True)
        app.add_typer(verify_app, name="verify")
    verify_app.command("proofs")(verify_proofs)
