"""`tandem`: key ceremonies and co-signed releases for crypto-asset custody.

Managers propose; custodian representatives approve with a signature and a TOTP code;
auditors read and verify. Commands that change anything sign a Tandem action with your
keystore, so the server can never act in your name.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from tandem import humanize
from tandem.cli import common, errors_boundary, exit_codes, genesis_view
from tandem.cli.common import (
    ClaimTokenOpt,
    JsonAlreadyOpt,
    JsonOpt,
    KeystoreOpt,
    LimitOpt,
    ServerOpt,
    TotpFromKeystoreOpt,
    TotpOpt,
    console,
    load_member,
    read_json,
    show,
    whole_table,
    write_json,
)
from tandem.client import Client
from tandem.client import pin as client_pin
from tandem.client.members import draft_genesis, proposal_digest, sign_genesis
from tandem.client.pin import PinnedDeployment, pin_path
from tandem.client.views import ProposalView
from tandem.core.identity import (
    DEFAULT_SCRYPT_LOG2_N,
    IdentityCard,
    MemberSecrets,
    card_from_keystore,
    member_id_from_keystore,
)
from tandem.core.roles import Role, parse_role
from tandem.errors import Error, InputError, PinError, VerificationError
from tandem.localtime import pending_change_line

app = typer.Typer(
    help=__doc__,
    epilog=exit_codes.EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: paragraphs re-wrapped to the terminal, no "<bool>" beside flags, and
    # nothing drawn in boxes when piped.
    rich_markup_mode=None,
)
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
pin_app = typer.Typer(
    help="What your machine trusts: the genesis you signed or imported (and the service keys it "
    "names), and the key sets whose transcripts you countersigned or imported. Kept in "
    "<keystore stem>.pin.json beside your keystore.",
    no_args_is_help=True,
)
app.add_typer(id_app, name="id")
app.add_typer(pin_app, name="pin")
app.add_typer(genesis_app, name="genesis")
app.add_typer(totp_app, name="totp")
app.add_typer(member_app, name="member")
app.add_typer(proposal_app, name="proposal")
app.add_typer(audit_app, name="audit")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        import tandem

        try:
            number = version("tandem")
        except PackageNotFoundError:  # run from a checkout without installing
            number = tandem.__version__
        console.print(f"tandem {number}")
        raise typer.Exit(exit_codes.OK)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """`tandem`: key ceremonies and co-signed releases for crypto-asset custody."""


# --- server side ----------------------------------------------------------------------


@app.command()
def init(
    data_dir: Annotated[
        Path,
        typer.Option(envvar="TANDEM_DATA_DIR", help="Where the database and service key live."),
    ] = Path("tandem-data"),
    new_claim_token: Annotated[
        bool,
        typer.Option(help="Replace an unused claim token that was lost (before genesis only)."),
    ] = False,
) -> None:
    """(Operator) Create the service key, the database schema and the one-time claim token
    genesis must present. Safe to re-run."""
    from tandem.server_extra import require_server_extra

    require_server_extra("init")
    from sqlmodel import select

    from tandem.core.service_key import ServiceKey
    from tandem.services.claim import ClaimGate
    from tandem.settings import Settings
    from tandem.store.db import Database
    from tandem.store.models import Deployment

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
    with db.read() as session:
        deployed = session.exec(select(Deployment)).first() is not None
    db.dispose()
    console.print(f"database ready: {settings.resolved_database_url().split('@')[-1]}")
    show(key.public_json())
    from tandem.core.audit import key_id

    console.print(f"service key id: {key_id(key.sign_public)} (members compare it at `tandem genesis sign`)")
    claim_file = settings.resolved_claim_file()
    if deployed:
        console.print("this server has its deployment; no claim token is needed")
    elif ClaimGate.load(claim_file).issued and not new_claim_token:
        console.print(
            f"a claim token was issued already (only its hash is kept, in {claim_file}); "
            "`tandem init --new-claim-token` replaces a lost one"
        )
    else:
        _gate, token = ClaimGate.issue(claim_file)
        console.print(
            "claim token (shown once; give it to whoever submits genesis, by a channel you "
            "trust, and to nobody else):"
        )
        console.print(f"  {token}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8600,
) -> None:
    """(Operator) Run the HTTP API. Verifies the audit chain first; seals signing if it fails."""
    from tandem.server_extra import require_server_extra

    require_server_extra("serve")
    import uvicorn

    from tandem.api import create_app

    application = create_app()
    uvicorn.run(application, host=host, port=port, log_level="info")
    _exit_served(application)


def _exit_served(application: Any) -> NoReturn:
    """End the process once the server has shut down cleanly.

    Every commit is already on disk (synchronous commits) and the server lock ends with
    the process. What remains is tearing down a large interpreter module by module under a
    final garbage collection, which takes seconds on a loaded machine and protects nothing,
    so the database is closed, the logs flushed, and the process leaves at once."""
    import logging

    application.state.service.db.dispose()
    lock = application.state.server_lock
    if lock is not None:
        lock.release()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# --- identity ---------------------------------------------------------------------------


KeepSeedOpt = typer.Option(
    False,
    "--keep-seed-in-keystore",
    envvar="TANDEM_KEEP_TOTP_SEED",
    help="Keep the TOTP seed in the keystore too, so scripts can compute codes "
    "(--totp-from-keystore). The keystore then holds both factors.",
)
BOTH_FACTORS = (
    "warning: this keystore keeps your TOTP seed, so it holds both factors: whoever has the file "
    "and its passphrase can approve as you. Meant for scripts and demos, not for a person's keystore."
)


@id_app.command("create")
def id_create(
    name: Annotated[str, typer.Option(help="Your name as colleagues know it (one person, one role).")],
    role: Annotated[str, typer.Option(help="manager, custodian or auditor.")],
    out: Annotated[Path, typer.Option(help="Keystore file to write.")],
    scrypt_log2_n: Annotated[int, typer.Option(hidden=True)] = DEFAULT_SCRYPT_LOG2_N,
    keep_seed: bool = KeepSeedOpt,
) -> None:
    """Make your Ed25519 signing key and X25519 sealing key, encrypted with a passphrase.

    Your TOTP seed is made later, by `tandem totp enrol`, and lives in your authenticator
    app, not in this file (unless --keep-seed-in-keystore)."""
    if out.exists():
        raise InputError(f"{out} exists; refusing to overwrite a keystore")
    member = MemberSecrets.generate(name=name, role=parse_role(role))
    data = member.to_keystore(common.passphrase(confirm=True), log2_n=scrypt_log2_n, keep_totp_seed=keep_seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_bytes(data)
    card = member.card()
    console.print(f"keystore written: {out}")
    console.print(f"member id: {card.member_id}   fingerprint: {card.fingerprint}")
    if keep_seed:
        common.err_console.print(BOTH_FACTORS)
    console.print(
        f"next: `tandem id card {out} --out CARD.json` for whoever proposes you; once the "
        f"deployment exists, `tandem totp enrol -k {out}` sets up your authenticator app"
    )


@id_app.command("show")
def id_show(
    keystore: Annotated[Path, typer.Argument(help="Keystore file.")], as_json: bool = JsonAlreadyOpt
) -> None:
    """Print your public identity card (no passphrase needed)."""
    show(
        {
            **card_from_keystore(keystore.read_bytes()).to_json(),
            "member_id": member_id_from_keystore(keystore.read_bytes()),
        }
    )


@id_app.command("card")
def id_card(
    keystore: Annotated[Path, typer.Argument(help="Keystore file.")],
    out: Annotated[Path, typer.Option(help="Where to write the card JSON.")],
) -> None:
    """Write your public identity card to a file, to hand to whoever proposes you."""
    card = card_from_keystore(keystore.read_bytes())
    write_json(out, card.to_json())
    console.print(f"{card.name} ({card.role.value}) fingerprint {card.fingerprint} -> {out}")


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
    service_key_id: Annotated[
        str | None,
        typer.Option(
            help="The service key id `tandem init` printed on the server, as the operator read it out. "
            "The draft refuses a server that answers with another key."
        ),
    ] = None,
    server: str = ServerOpt,
) -> None:
    """Draft the genesis document naming the service key and the initial members.

    The service key comes from the server's answer; a server that is not the one the
    operator set up could name its own. Pass --service-key-id to have the draft check it,
    or compare the id it prints with the operator's before anyone signs."""
    from tandem.core.audit import key_id

    cl = Client(server)
    cards = [IdentityCard.from_json(read_json(p)) for p in card]
    service = cl.deployment()["service"]
    served_id = key_id(bytes.fromhex(service["sign_public"]))
    if service_key_id is not None and not hmac.compare_digest(served_id, service_key_id.strip()):
        raise VerificationError(
            f"the server answers with service key {served_id}, not {service_key_id.strip()} "
            "as the operator read out: this is not the server that was set up (nothing was written)"
        )
    doc = draft_genesis(
        deployment="dep_" + secrets.token_hex(8),
        entity=entity,
        created_at=int(time.time()),
        service=service,
        cards=cards,
        policy=read_json(policy) if policy else None,
        address_book=read_json(address_book) if address_book else None,
    )
    write_json(out, {"genesis": doc, "signatures": {}})
    genesis_view.print_genesis(doc)
    if service_key_id is None:
        console.print(
            f"service key {served_id} is what the server answered: compare it with the id `tandem init` "
            "printed before anyone signs (or pass --service-key-id to have it checked)"
        )
    else:
        console.print(f"service key {served_id} matches what the operator read out")
    console.print(f"drafted {out}: every member listed must now run `tandem genesis sign`")


@genesis_app.command("sign")
def genesis_sign(
    file: Annotated[Path, typer.Argument(help="Genesis file from `tandem genesis draft`.")],
    keystore: Path = KeystoreOpt,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Sign without asking (scripts; you checked the file already).")
    ] = False,
) -> None:
    """Show what the genesis says (entity, members with role and fingerprint, service key,
    policy, address book), ask, then add your signature."""
    doc = read_json(file)
    member = load_member(keystore)
    if member.member_id not in {IdentityCard.from_json(c).member_id for c in doc["genesis"]["members"]}:
        raise InputError("you are not an initial member in this genesis file")
    mid, sig = sign_genesis(member, doc["genesis"])
    if doc["signatures"].get(mid) == sig:
        console.print("you already signed this genesis; nothing changed")
        _say_pinned(_pin_genesis(doc["genesis"], keystore))
        return
    genesis_view.print_genesis(doc["genesis"], doc["signatures"])
    if not yes and not typer.confirm(f"Sign this genesis as {member.name} ({member.role.value})?"):
        raise InputError("not signed: you declined; nothing was written")
    pin = _pin_genesis(doc["genesis"], keystore)
    doc["signatures"][mid] = sig
    write_json(file, doc)
    console.print(
        f"signed as {member.name}; {len(doc['signatures'])}/{len(doc['genesis']['members'])} signatures"
    )
    _say_pinned(pin)


@genesis_app.command("submit")
def genesis_submit(
    file: Annotated[Path, typer.Argument(help="Fully signed genesis file.")],
    server: str = ServerOpt,
    claim_token: str | None = ClaimTokenOpt,
) -> None:
    """Create the deployment from a fully signed genesis file, claiming the fresh server
    with the one-time token its operator's `tandem init` printed."""
    doc = read_json(file)
    show(Client(server).members.submit_genesis(doc["genesis"], doc["signatures"], claim_token=claim_token))


def _pin_genesis(genesis: dict[str, object], keystore: Path, expect: str | None = None) -> PinnedDeployment:
    """Pin ``genesis`` beside ``keystore``. A pin of another genesis that already holds key
    sets is never replaced silently."""
    path = pin_path(keystore)
    pin = PinnedDeployment.from_genesis(genesis, expect_hash=expect, path=path)
    if path.exists():
        held = PinnedDeployment.load(path)
        if held.genesis_hash == pin.genesis_hash:
            return held
        if held.keysets:
            raise PinError(
                f"{path} pins another deployment ({held.deployment}) with key sets; move it "
                "away first if this keystore really changes deployment"
            )
    pin.save()
    return pin


def _say_pinned(pin: PinnedDeployment) -> None:
    from tandem.core.audit import key_id

    console.print(f"pinned {pin.deployment} -> {pin.path}")
    console.print(f"  genesis hash   {pin.genesis_hash}")
    console.print(f"  service key    {key_id(pin.sign_public)}  (compare with what the operator read out)")


# --- pin ---------------------------------------------------------------------------------


@pin_app.command("genesis")
def pin_genesis(
    file: Annotated[Path, typer.Argument(help="The signed genesis file of the deployment.")],
    expect: Annotated[
        str,
        typer.Option(
            "--expect",
            help="The genesis hash, as a member or the operator told you by another channel "
            "(never copied from a server response alone).",
        ),
    ],
    keystore: Annotated[Path, typer.Option("--keystore", "-k", envvar="TANDEM_KEYSTORE")],
) -> None:
    """A member who joined after genesis pins it: signatures checked, hash must be --expect."""
    from tandem.core.membership import check_genesis

    doc = read_json(file)
    genesis = doc.get("genesis", doc) if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and "signatures" in doc:
        check_genesis(genesis, doc["signatures"])
    else:
        raise InputError("give the signed genesis file ({genesis, signatures})")
    _say_pinned(_pin_genesis(genesis, keystore, expect=expect))


@pin_app.command("keyset")
def pin_keyset(
    transcript: Annotated[Path, typer.Argument(help="The key set's complete ceremony transcript.")],
    expect: Annotated[
        str,
        typer.Option("--expect", help="Its transcript hash, as a participant told you by another channel."),
    ],
    keystore: Annotated[Path, typer.Option("--keystore", "-k", envvar="TANDEM_KEYSTORE")],
) -> None:
    """Pin a key set you did not countersign (you joined later, or missed a reshare).

    The transcript must verify offline, be complete, and hash to --expect."""
    import hmac

    from tandem.core import ceremony as ceremony_core

    doc = read_json(transcript)
    report = ceremony_core.verify_transcript(doc)
    report.require(complete=True)
    if not hmac.compare_digest(str(report.transcript_hash), expect.strip().lower()):
        raise PinError(f"the transcript hashes to {report.transcript_hash}, not to --expect")
    pin = PinnedDeployment.load(pin_path(keystore))
    pinned = pin.add_transcript(doc)
    console.print(f"pinned key set {pinned.keyset} generation {pinned.generation} -> {pin.path}")


@pin_app.command("show")
def pin_show(
    keystore: Annotated[Path, typer.Option("--keystore", "-k", envvar="TANDEM_KEYSTORE")],
    as_json: bool = JsonAlreadyOpt,
) -> None:
    """Print what this keystore's pin trusts."""
    show(PinnedDeployment.load(pin_path(keystore)).to_json())


# --- TOTP -------------------------------------------------------------------------------


@totp_app.command("enrol")
def totp_enrol(  # noqa: PLR0917 - typer maps options to parameters
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    old_totp: Annotated[
        str | None, typer.Option(help="A current code of the seed being replaced (re-enrolment).")
    ] = None,
    totp: Annotated[
        str | None,
        typer.Option(
            "--totp",
            envvar="TANDEM_TOTP",
            help="The code your authenticator shows for the new seed; asked for when omitted.",
        ),
    ] = None,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
    keep_seed: bool = KeepSeedOpt,
) -> None:
    """Set up your second factor: a new TOTP seed, shown as a QR code and an otpauth:// URI
    for your authenticator app, confirmed with the code the app then shows, and registered
    with the server sealed to its key on this machine. Run it again with --old-totp to move
    to a new authenticator."""
    import pyotp

    cl = Client(server)
    member, secret = common.open_keystore(keystore)
    client_pin.remember_keystore(member.member_id, keystore)
    cl.pinned(member)  # refuse before showing a seed if this machine has no genesis pin
    kept = member.holds_totp_seed and old_totp is None
    seed = member.totp_secret if kept else pyotp.random_base32(32)
    enrolling = member.with_totp_seed(seed)
    if totp_from_keystore:
        if not (kept or keep_seed):
            raise InputError(
                "--totp-from-keystore needs a keystore that keeps its seed (--keep-seed-in-keystore)"
            )
        code = cl.members.totp_code(enrolling)
    else:
        common.show_totp_seed(enrolling)
        code = common.totp_code(cl, enrolling, totp, False)
    result = cl.members.enrol_totp(member, old_code=old_totp, secret=seed, confirm_code=code)
    keeps = kept or keep_seed
    if (keeps and member.totp_secret != seed) or (not keeps and member.holds_totp_seed):
        # The keystore follows the enrolled seed: the new one if asked, none otherwise.
        common.rewrite_keystore(keystore, enrolling, secret, keep_totp_seed=keeps)
    if keeps:
        common.err_console.print(BOTH_FACTORS)
    show(result)
    console.print(
        "enrolled: approvals now need the code your authenticator shows. To move to a new "
        f"phone or replace the seed: `tandem totp enrol -k {keystore} --old-totp CODE` with a "
        "code of the current one (keep the old authenticator until the new one is enrolled)"
    )


@totp_app.command("uri")
def totp_uri(keystore: Path = KeystoreOpt) -> None:
    """Show the otpauth:// URI again (only for a keystore that keeps its seed)."""
    member = load_member(keystore)
    if not member.holds_totp_seed:
        raise InputError(
            "this keystore does not keep your TOTP seed; it lives in your authenticator app "
            f"only. To set up another authenticator: `tandem totp enrol -k {keystore} --old-totp CODE`"
        )
    common.show_totp_seed(member)


@totp_app.command("unlock")
def totp_unlock(
    member_id: Annotated[str, typer.Argument(help="Member whose second factor is locked.")],
    data_dir: Annotated[Path, typer.Option(envvar="TANDEM_DATA_DIR")] = Path("tandem-data"),
) -> None:
    """(Operator) Clear a TOTP lock-out after confirming the person by another channel."""
    from tandem.api.app import build_service
    from tandem.settings import Settings

    build_service(Settings(data_dir=data_dir)).members.unlock_totp(member_id)
    console.print(f"unlocked {member_id} (recorded in the audit log)")


# --- membership -------------------------------------------------------------------------


@member_app.command("list")
def member_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    genesis_hash: Annotated[
        str | None,
        typer.Option(
            help="Your pinned genesis hash: check the server's list against the members the "
            "log justifies from that genesis, and refuse any difference."
        ),
    ] = None,
    as_json: bool = JsonOpt,
) -> None:
    """Every member, role and status."""
    cl = Client(server)
    member = load_member(keystore)
    rows = cl.get_all(member, "/v1/members")
    if genesis_hash is not None:
        from tandem.client import log as client_log

        state = cl.audit.log_state(member, genesis_hash_pin=genesis_hash)
        client_log.check_member_list(state, rows)
    if as_json:
        show(rows)
        return
    table = whole_table("id", "name", "role", "status", "TOTP")
    for m in rows:
        table.add_row(m["id"], m["name"], m["role"], m["status"], "yes" if m["totp_enrolled"] else "no")
    console.print(table)


@member_app.command("propose-add")
def member_propose_add(
    card: Annotated[Path, typer.Argument(help="The new member's identity card (tandem id card).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Propose a new member; someone from the other side must approve."""
    show(Client(server).members.propose_add(load_member(keystore), IdentityCard.from_json(read_json(card))))


@member_app.command("propose-remove")
def member_propose_remove(
    member_id: Annotated[str, typer.Argument(help="Member id to remove.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Propose removing a member. Key sets with its shares will need a reshare."""
    show(Client(server).members.propose_remove(load_member(keystore), member_id))


@member_app.command("propose-rekey")
def member_propose_rekey(
    member_id: Annotated[str, typer.Argument(help="Member whose keys change.")],
    card: Annotated[Path, typer.Argument(help="The member's new identity card.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Propose replacing a member's keys (same name and role)."""
    show(
        Client(server).members.propose_rekey(
            load_member(keystore), member_id, IdentityCard.from_json(read_json(card))
        )
    )


@member_app.command("rotate-key")
def member_rotate_key(
    out: Annotated[Path, typer.Option(help="Where to write the new keystore.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    scrypt_log2_n: Annotated[int, typer.Option(hidden=True)] = DEFAULT_SCRYPT_LOG2_N,
) -> None:
    """Make new keys for yourself and propose the rotation. The other side approves it and
    it takes effect after the membership delay; from then on only the new keystore signs,
    under your unchanged member id (keep the old one until then, then destroy it)."""
    import shutil

    if out.exists():
        raise InputError(f"{out} exists; refusing to overwrite a keystore")
    member, _ = common.open_keystore(keystore)
    client_pin.remember_keystore(member.member_id, keystore)
    if member.role not in (Role.MANAGER, Role.CUSTODIAN):
        raise InputError(
            "an auditor's rotation is proposed by a manager or custodian: give them the new "
            "card (`tandem id card`) for `tandem member propose-rekey`"
        )
    new = member.rotated()
    keep = member.holds_totp_seed
    console.print(f"new keystore for {member.name} ({member.member_id}): choose its passphrase")
    data = new.to_keystore(common.passphrase(confirm=True), log2_n=scrypt_log2_n, keep_totp_seed=keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_bytes(data)
    old_pin, new_pin = client_pin.pin_path(keystore), client_pin.pin_path(out)
    if old_pin.exists() and not new_pin.exists():
        # The genesis pin is the member's, not the key's: the new keystore keeps it.
        shutil.copyfile(old_pin, new_pin)
    try:
        proposal = Client(server).members.propose_rekey(member, member.member_id, new.card())
    except Error:
        out.unlink()
        new_pin.unlink(missing_ok=True)
        raise
    show(proposal)
    console.print(
        f"new keystore: {out} (fingerprint {new.card().fingerprint}); rotation proposed as "
        f"{proposal['id']}. Until it takes effect sign with {keystore}; afterwards only "
        f"with {out}: the old key is refused (key_rotated)"
    )


@proposal_app.command("list")
def proposal_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    status: Annotated[str | None, typer.Option(help="pending, applied, rejected...")] = None,
    limit: int | None = LimitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Proposals awaiting or past decision: who proposed (by name), approvals, and local
    times (--json: the raw values)."""
    cl = Client(server)
    member = load_member(keystore)
    rows = cl.members.proposals(member, status=status, first=limit)
    if as_json:
        show(rows)
        return
    names = humanize.member_names(cl.get_all(member, "/v1/members"))
    table = whole_table("id", "kind", "status", "proposer", "approvals", "created", "expires")
    for p in map(ProposalView.from_json, rows):
        table.add_row(
            p.id,
            p.kind,
            p.status,
            humanize.member(p.proposer, names),
            _approvals_text(p, names),
            humanize.when(p.created_at),
            humanize.when(p.expires_at),
        )
    console.print(table)


def _approvals_text(p: ProposalView, names: dict[str, str]) -> str:
    """``bob; 1 of 2 (2 custodian)``: who approved, and what the policy in force asks for."""
    who = ", ".join(names.get(a.member) or a.member for a in p.approvals) or "none yet"
    needs = _needs(p)
    return f"{who}; {needs}" if needs else who


def _needs(p: ProposalView) -> str | None:
    """``1 of 2 (2 custodian)``, or None where the server does not say."""
    if not p.required:
        return None
    per_role = ", ".join(f"{n} {role}" for role, n in sorted(p.required.items()))
    return f"{len(p.approvals)} of {sum(p.required.values())} ({per_role})"


@proposal_app.command("show")
def proposal_show(
    proposal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show one proposal: what it changes, who proposed and approved it (by name), its
    times in local time, and the digest your client computes itself, which an approval
    signs (--json: the raw values)."""
    cl = Client(server)
    member = load_member(keystore)
    doc = cl.members.proposal(member, proposal_id)
    digest = proposal_digest(doc)
    if as_json:
        show({**doc, "digest_computed_locally": digest})
        return
    p = ProposalView.from_json(doc)
    names = humanize.member_names(cl.get_all(member, "/v1/members"))
    console.print(f"proposal     {p.id}: {humanize.proposal_kind(p.kind)} ({p.kind}); {p.status}")
    console.print(f"proposed by  {humanize.member(p.proposer, names)} at {humanize.when(p.created_at)}")
    if p.expires_at is not None:
        console.print(f"expires      {humanize.when(p.expires_at)}")
    for a in p.approvals:
        console.print(f"approved by  {humanize.member(a.member, names)} ({a.role}) at {humanize.when(a.at)}")
    if not p.approvals:
        console.print("approved by  nobody yet (an approval comes from the side that did not propose it)")
    needs = _needs(p)
    if needs:
        console.print(f"approvals    {needs}")
    if p.effective_at is not None:
        console.print(f"takes effect {humanize.when(p.effective_at)}")
    console.print(f"digest       {digest} (computed here; what an approval signs)")
    console.print("what it changes, exactly as signed:")
    console.print_json(data=dict(p.body))


@proposal_app.command("approve")
def proposal_approve(
    proposal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
) -> None:
    """Approve a proposal: signs its digest (computed here) and sends your TOTP code."""
    cl = Client(server)
    member = load_member(keystore)
    # One fetch: what is printed is the very proposal whose digest is signed.
    proposal = cl.members.proposal(member, proposal_id)
    show({**proposal, "digest_computed_locally": proposal_digest(proposal)})
    code = common.totp_code(cl, member, totp, totp_from_keystore)
    result = cl.members.approve(member, proposal_id, totp=code, proposal=proposal)
    show(result)
    if "pending_change" in result:
        console.print(pending_change_line(result["pending_change"], proposal_id))


@proposal_app.command("reject")
def proposal_reject(
    proposal_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Reject a proposal."""
    show(Client(server).members.reject(load_member(keystore), proposal_id, reason=reason))


@proposal_app.command("veto")
def proposal_veto(
    proposal_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")] = "",
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Stop an approved membership change during its delay (managers and custodians)."""

    show(Client(server).members.veto(load_member(keystore), proposal_id, reason=reason))


@proposal_app.command("apply")
def proposal_apply(
    proposal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Carry out an approved membership change once its delay has passed."""

    show(Client(server).members.apply(load_member(keystore), proposal_id))


from tandem.cli import audit_cmds, custody_cmds  # noqa: E402  (command groups in their own modules)

audit_cmds.register(audit_app)
custody_cmds.register(app)
__import__("tandem.cli.console_cmds", fromlist=["register"]).register(app)
from tandem.cli import books_cmds  # noqa: E402

books_cmds.register(app)
from tandem.cli import queue_cmds  # noqa: E402

queue_cmds.register(app)
from tandem.cli import fetch_cmds  # noqa: E402

fetch_cmds.register(app)


# Every command runs inside the one error boundary (tandem.cli.errors_boundary).
errors_boundary.guard_all(app)


def main() -> None:
    """The console script. The boundary is inside every command; what is raised before one
    runs (an import, a parameter callback) goes through the same boundary here."""
    try:
        app()
    except Exception as exc:  # the last line: no traceback reaches a person
        raise SystemExit(errors_boundary.settle(exc)) from None
