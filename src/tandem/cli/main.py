"""`tandem`: key ceremonies and co-signed releases for crypto-asset custody.

Managers propose; custodian representatives approve with a signature and a TOTP code;
auditors read and verify. Commands that change anything sign a Tandem action with your
keystore, so the server can never act in your name.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated

import typer

from tandem.cli import common
from tandem.cli.common import (
    KeystoreOpt,
    ServerOpt,
    TotpFromKeystoreOpt,
    TotpOpt,
    console,
    load_member,
    read_json,
    run_cli,
    show,
    whole_table,
    write_json,
)
from tandem.client import Client
from tandem.core.identity import (
    DEFAULT_SCRYPT_LOG2_N,
    IdentityCard,
    MemberSecrets,
    card_from_keystore,
)
from tandem.core.roles import parse_role
from tandem.errors import ConfigurationError, InputError

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
id_app = typer.Typer(
    help="Your identity: signing and sealing keys in a passphrase-protected keystore.",
    no_args_is_help=True,
)
genesis_app = typer.Typer(
    help="Create a deployment: draft, every initial member signs, submit.", no_args_is_help=True
)
totp_app = typer.Typer(help="Your second factor (RFC 6238 TOTP).", no_args_is_help=True)
member_app = typer.Typer(help="Propose membership changes (the other side approves).", no_args_is_help=True)
proposal_app = typer.Typer(help="List, inspect, approve or reject pending proposals.", no_args_is_help=True)
audit_app = typer.Typer(help="Export and verify the tamper-evident audit log.", no_args_is_help=True)
app.add_typer(id_app, name="id")
app.add_typer(genesis_app, name="genesis")
app.add_typer(totp_app, name="totp")
app.add_typer(member_app, name="member")
app.add_typer(proposal_app, name="proposal")
app.add_typer(audit_app, name="audit")


# --- server side ----------------------------------------------------------------------


@app.command()
def init(
    data_dir: Annotated[
        Path,
        typer.Option(envvar="TANDEM_DATA_DIR", help="Where the database and service key live."),
    ] = Path("tandem-data"),
) -> None:
    """(Operator) Create the service key and the database schema. Safe to re-run."""

    def go() -> None:
        from tandem.core.service_key import ServiceKey
        from tandem.settings import Settings
        from tandem.store.db import Database

        settings = Settings(data_dir=data_dir)
        key_file = settings.resolved_key_file()
        data_dir.mkdir(parents=True, exist_ok=True)
        if key_file.exists():
            key = ServiceKey.from_file_bytes(key_file.read_bytes())
            console.print(f"service key exists: {key_file}")
        else:
            key = ServiceKey.generate()
            key_file.touch(mode=0o600)
            key_file.write_bytes(key.to_file_bytes())
            console.print(
                f"created service key: {key_file} (keep it beside, not inside, backups of the database)"
            )
        db = Database(settings.resolved_database_url())
        db.migrate()
        db.dispose()
        console.print(f"database ready: {settings.resolved_database_url().split('@')[-1]}")
        show(key.public_json())

    run_cli(go)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8600,
) -> None:
    """(Operator) Run the HTTP API. Verifies the audit chain first; seals signing if it fails."""

    def go() -> None:
        import uvicorn

        from tandem.api import create_app

        uvicorn.run(create_app(), host=host, port=port, log_level="info")

    run_cli(go)


# --- identity ---------------------------------------------------------------------------


@id_app.command("create")
def id_create(
    name: Annotated[str, typer.Option(help="Your name as colleagues know it (one person, one role).")],
    role: Annotated[str, typer.Option(help="manager, custodian or auditor.")],
    out: Annotated[Path, typer.Option(help="Keystore file to write.")],
    scrypt_log2_n: Annotated[int, typer.Option(hidden=True)] = DEFAULT_SCRYPT_LOG2_N,
) -> None:
    """Make your Ed25519 signing key, X25519 sealing key and TOTP seed, encrypted with a passphrase."""

    def go() -> None:
        if out.exists():
            raise InputError(f"{out} exists; refusing to overwrite a keystore")
        member = MemberSecrets.generate(name=name, role=parse_role(role))
        data = member.to_keystore(common.passphrase(confirm=True), log2_n=scrypt_log2_n)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch(mode=0o600)
        out.write_bytes(data)
        card = member.card()
        console.print(f"keystore written: {out}")
        console.print(f"member id: {card.member_id}   fingerprint: {card.fingerprint}")
        console.print("Add this to your authenticator app (shown once, on this screen only):")
        console.print(member.otpauth_uri())

    run_cli(go)


@id_app.command("show")
def id_show(keystore: Annotated[Path, typer.Argument(help="Keystore file.")]) -> None:
    """Print your public identity card (no passphrase needed)."""
    run_cli(
        lambda: show(
            {
                **card_from_keystore(keystore.read_bytes()).to_json(),
                "member_id": card_from_keystore(keystore.read_bytes()).member_id,
            }
        )
    )


@id_app.command("card")
def id_card(
    keystore: Annotated[Path, typer.Argument(help="Keystore file.")],
    out: Annotated[Path, typer.Option(help="Where to write the card JSON.")],
) -> None:
    """Write your public identity card to a file, to hand to whoever proposes you."""

    def go() -> None:
        card = card_from_keystore(keystore.read_bytes())
        write_json(out, card.to_json())
        console.print(f"{card.name} ({card.role.value}) fingerprint {card.fingerprint} -> {out}")

    run_cli(go)


# --- genesis ----------------------------------------------------------------------------


@genesis_app.command("draft")
def genesis_draft(  # noqa: PLR0917 - typer maps options to parameters
    entity: Annotated[str, typer.Option(help="Legal name of the fund or entity.")],
    card: Annotated[list[Path], typer.Option(help="Identity card JSON of an initial member (repeat).")],
    out: Annotated[Path, typer.Option(help="Genesis file to write.")],
    policy: Annotated[
        Path | None, typer.Option(help="Initial policy JSON (default: 1 custodian, allow-list only).")
    ] = None,
    address_book: Annotated[
        Path | None,
        typer.Option(help="Initial address book: JSON list of {chain, network, address, label[, asset]}."),
    ] = None,
    server: str = ServerOpt,
) -> None:
    """Draft the genesis document naming the service key and the initial members."""

    def go() -> None:
        cl = Client(server)
        cards = [IdentityCard.from_json(read_json(p)) for p in card]
        doc = Client.draft_genesis(
            deployment="dep_" + secrets.token_hex(8),
            entity=entity,
            created_at=int(time.time()),
            service=cl.deployment()["service"],
            cards=cards,
            policy=read_json(policy) if policy else None,
            address_book=read_json(address_book) if address_book else None,
        )
        write_json(out, {"genesis": doc, "signatures": {}})
        console.print(f"drafted {out}: every member listed must now run `tandem genesis sign`")

    run_cli(go)


@genesis_app.command("sign")
def genesis_sign(
    file: Annotated[Path, typer.Argument(help="Genesis file from `tandem genesis draft`.")],
    keystore: Path = KeystoreOpt,
) -> None:
    """Add your signature to a genesis file after checking what it says."""

    def go() -> None:
        doc = read_json(file)
        member = load_member(keystore)
        if member.member_id not in {IdentityCard.from_json(c).member_id for c in doc["genesis"]["members"]}:
            raise InputError("you are not an initial member in this genesis file")
        mid, sig = Client.sign_genesis(member, doc["genesis"])
        doc["signatures"][mid] = sig
        write_json(file, doc)
        console.print(
            f"signed as {member.name}; {len(doc['signatures'])}/{len(doc['genesis']['members'])} signatures"
        )

    run_cli(go)


@genesis_app.command("submit")
def genesis_submit(
    file: Annotated[Path, typer.Argument(help="Fully signed genesis file.")],
    server: str = ServerOpt,
) -> None:
    """Create the deployment from a fully signed genesis file."""

    def go() -> None:
        doc = read_json(file)
        show(Client(server).submit_genesis(doc["genesis"], doc["signatures"]))

    run_cli(go)


# --- TOTP -------------------------------------------------------------------------------


@totp_app.command("enrol")
def totp_enrol(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    old_totp: Annotated[str | None, typer.Option(help="Current code, when replacing a seed.")] = None,
) -> None:
    """Register your TOTP seed with the server, sealed to its key on this machine."""
    run_cli(lambda: show(Client(server).enrol_totp(load_member(keystore), old_code=old_totp)))


@totp_app.command("uri")
def totp_uri(keystore: Path = KeystoreOpt) -> None:
    """Show the otpauth:// URI again, to re-add the seed to an authenticator app."""
    run_cli(lambda: console.print(load_member(keystore).otpauth_uri()))


@totp_app.command("unlock")
def totp_unlock(
    member_id: Annotated[str, typer.Argument(help="Member whose second factor is locked.")],
    data_dir: Annotated[Path, typer.Option(envvar="TANDEM_DATA_DIR")] = Path("tandem-data"),
) -> None:
    """(Operator) Clear a TOTP lock-out after confirming the person by another channel."""

    def go() -> None:
        from tandem.api.app import build_service
        from tandem.settings import Settings

        build_service(Settings(data_dir=data_dir)).unlock_totp(member_id)
        console.print(f"unlocked {member_id} (recorded in the audit log)")

    run_cli(go)


# --- membership -------------------------------------------------------------------------


@member_app.command("list")
def member_list(keystore: Path = KeystoreOpt, server: str = ServerOpt) -> None:
    """Every member, role and status."""

    def go() -> None:
        cl = Client(server)
        rows = cl.get(load_member(keystore), "/v1/members")
        table = whole_table("id", "name", "role", "status", "TOTP")
        for m in rows:
            table.add_row(m["id"], m["name"], m["role"], m["status"], "yes" if m["totp_enrolled"] else "no")
        console.print(table)

    run_cli(go)


@member_app.command("propose-add")
def member_propose_add(
    card: Annotated[Path, typer.Argument(help="The new member's identity card (tandem id card).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Propose a new member; someone from the other side must approve."""
    run_cli(
        lambda: show(
            Client(server).propose_add(load_member(keystore), IdentityCard.from_json(read_json(card)))
        )
    )


@member_app.command("propose-remove")
def member_propose_remove(
    member_id: Annotated[str, typer.Argument(help="Member id to remove.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Propose removing a member. Key sets with its shares will need a reshare."""
    run_cli(lambda: show(Client(server).propose_remove(load_member(keystore), member_id)))


@member_app.command("propose-rekey")
def member_propose_rekey(
    member_id: Annotated[str, typer.Argument(help="Member whose keys change.")],
    card: Annotated[Path, typer.Argument(help="The member's new identity card.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Propose replacing a member's keys (same name and role)."""
    run_cli(
        lambda: show(
            Client(server).propose_rekey(
                load_member(keystore), member_id, IdentityCard.from_json(read_json(card))
            )
        )
    )


@proposal_app.command("list")
def proposal_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    status: Annotated[str | None, typer.Option(help="pending, applied, rejected...")] = None,
) -> None:
    """Proposals awaiting or past decision."""

    def go() -> None:
        cl = Client(server)
        params = {"status": status} if status else {}
        rows = cl.get(load_member(keystore), "/v1/proposals", **params)
        table = whole_table("id", "kind", "status", "proposer", "approvals")
        for p in rows:
            table.add_row(p["id"], p["kind"], p["status"], p["proposer"], str(len(p["approvals"])))
        console.print(table)

    run_cli(go)


@proposal_app.command("show")
def proposal_show(
    proposal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Show one proposal with the digest your client computes itself."""

    def go() -> None:
        cl = Client(server)
        p = cl.get(load_member(keystore), f"/v1/proposals/{proposal_id}")
        p["digest_computed_locally"] = cl.proposal_digest(p)
        show(p)

    run_cli(go)


@proposal_app.command("approve")
def proposal_approve(
    proposal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
) -> None:
    """Approve a proposal: signs its digest (computed here) and sends your TOTP code."""

    def go() -> None:
        cl = Client(server)
        member = load_member(keystore)
        # One fetch: what is printed is the very proposal whose digest is signed.
        proposal = cl.get(member, f"/v1/proposals/{proposal_id}")
        show({**proposal, "digest_computed_locally": cl.proposal_digest(proposal)})
        code = common.totp_code(cl, member, totp, totp_from_keystore)
        show(cl.approve_proposal(member, proposal_id, totp=code, proposal=proposal))

    run_cli(go)


@proposal_app.command("reject")
def proposal_reject(
    proposal_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Reject a proposal."""
    run_cli(lambda: show(Client(server).reject_proposal(load_member(keystore), proposal_id, reason=reason)))


from tandem.cli import audit_cmds, custody_cmds  # noqa: E402  (command groups in their own modules)

audit_cmds.register(audit_app)
custody_cmds.register(app)


def main() -> None:
    try:
        app()
    except ConfigurationError as exc:
        common.err_console.print(f"[bold red]error:[/] {exc.diagnostics()}")
        raise SystemExit(2) from None
