"""Ceremony, key-set and offline-verification commands (registered by
tandem.cli.custody_cmds): ``tandem ceremony ...``, ``tandem keyset ...`` and
``tandem verify transcript``.

``verify_app`` is a module attribute so other command modules can add their own
offline checks to ``tandem verify``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column

from tandem import humanize
from tandem.cli import common
from tandem.cli.common import (
    JsonAlreadyOpt,
    JsonOpt,
    KeystoreOpt,
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
from tandem.client import ceremony as cc
from tandem.core import ceremony as core
from tandem.core import keygen
from tandem.core import keyset_export as export_core
from tandem.core.ceremony_def import parse_definition, validate_against
from tandem.core.roles import Role
from tandem.errors import Error, InputError

ceremony_app = typer.Typer(
    help="Key ceremonies: a manager proposes, custodians approve with TOTP, everyone reveals "
    "a contribution, and every participant countersigns the transcript.",
    no_args_is_help=True,
)
keyset_app = typer.Typer(
    help="Key sets: list and inspect them, export one to offline media, import it back.",
    no_args_is_help=True,
)
verify_app = typer.Typer(
    help="Offline verification for auditors: public data only, no server needed.",
    no_args_is_help=True,
)

StateDirOpt = typer.Option(
    None,
    "--state-dir",
    help="Where your contribution waits between approving/proposing and revealing "
    "(default: the keystore's folder). Keep it on the machine you committed from.",
)
IdArg = typer.Argument(help="Ceremony id (cer_...), as `tandem ceremony list` shows it.")


def register(app: typer.Typer) -> None:
    app.add_typer(ceremony_app, name="ceremony")
    app.add_typer(keyset_app, name="keyset")
    app.add_typer(verify_app, name="verify")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _store(keystore: Path, state_dir: Path | None) -> cc.ContributionStore:
    return cc.ContributionStore(state_dir or keystore.resolve().parent)


def _summary(view: dict[str, Any], names: Mapping[str, str] | None = None) -> None:
    """Members by name where ``names`` knows them (else by id), times in local time."""
    known = names or {}
    console.print(f"ceremony {view['id']} ({view['kind']}): [bold]{view['status']}[/]")
    proposer = humanize.member(view["proposer"], known)
    console.print(f"  proposer {proposer}, expires at {humanize.when(view['expires_at'])}")
    approvers = ", ".join(humanize.member(m, known) for m in view["approvals"])
    console.print(f"  approvals: {approvers or 'none yet'}")
    if view.get("revealed") is not None and view["kind"] == "keygen":
        console.print(f"  revealed: {len(view['revealed'])}/{len(view.get('commitments', {}))}")
    if view.get("keyset"):
        console.print(f"  key set: {view['keyset']}")
    if view.get("transcript_hash"):
        console.print(
            f"  transcript hash: {view['transcript_hash']} "
            f"(countersigned {len(view['countersigned'])}/{len(view['participants'])})"
        )
    if view.get("outcome"):
        console.print(f"  outcome: {view['outcome']}")


def _print_for_approval(view: dict[str, Any], names: Mapping[str, str] | None = None) -> None:
    """What an approver reads before its client signs: the definition and the digest
    computed here from it (never the server's digest)."""
    _summary(view, names)
    if view["kind"] != "import":
        # As JSON, so control characters in the definition are shown escaped.
        show(
            {
                "target_keyset": view["target_keyset"],
                "definition": view["definition"],
                "digest_computed_locally": cc.local_digest(view),
            }
        )


# --- ceremony --------------------------------------------------------------------------


@ceremony_app.command("validate")
def ceremony_validate(
    file: Annotated[
        Path, typer.Argument(help="Ceremony definition (TOML), e.g. ceremonies/bitcoin-cold.toml.")
    ],
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Also check the approvals against this deployment's members "
            "(needs --keystore to read the member list).",
        ),
    ] = None,
    keystore: Annotated[
        Path | None,
        typer.Option("--keystore", "-k", help="Your keystore, for reading the member list."),
    ] = None,
) -> None:
    """Check a definition file before proposing it. Every problem is listed with the field
    it is in. Works offline; with --server it also checks the deployment can meet the
    approvals."""
    definition = parse_definition(_read_text(file), source=str(file))
    if server is not None:
        if keystore is None:
            raise InputError("--server needs --keystore to read the member list")
        members = common.client(server).get_all(load_member(keystore), "/v1/members")
        counts = dict.fromkeys(Role, 0)
        for m in members:
            if m["status"] == "active":
                counts[Role(m["role"])] += 1
        validate_against(definition, counts)
    console.print(
        f"{file}: valid {definition.kind} ceremony {definition.name!r}, "
        f"definition hash {definition.definition_hash()}"
    )
    if definition.kind == "keygen":
        chains = ", ".join(f"{c.chain} {c.network}" for c in definition.chains)
        console.print(
            f"  {definition.count} {definition.curve} key(s) for {chains}; "
            f"segregation {definition.segregation}"
        )
    console.print(
        f"  approvals: {definition.approvals.custodian} custodian(s), "
        f"{definition.approvals.manager} further manager(s); expires after "
        f"{definition.expiry_seconds} s"
    )


@ceremony_app.command("propose")
def ceremony_propose(
    file: Annotated[Path, typer.Argument(help="Ceremony definition (TOML) to run.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    target_keyset: Annotated[
        str | None,
        typer.Option(help="For a reshare: the key set whose data key is rotated."),
    ] = None,
    state_dir: Path | None = StateDirOpt,
) -> None:
    """(Manager) Propose a ceremony. For a keygen your client draws a contribution, sends
    only its commitment, and keeps the contribution for `tandem ceremony reveal`. For a
    reshare it re-seals your share of the key set to a one-time operation key."""
    member = load_member(keystore)
    text = _read_text(file)
    definition = parse_definition(text, source=str(file))
    ceremony_id = cc.new_ceremony_id()
    contribution = None
    store = _store(keystore, state_dir)
    if definition.kind == "keygen":
        contribution = keygen.make_contribution()
        store.save(ceremony_id, member.member_id, contribution)
    try:
        view = common.client(server).ceremonies.propose(
            member,
            text,
            ceremony_id=ceremony_id,
            contribution=contribution,
            target_keyset=target_keyset,
        )
    except Error:
        # Refused (here or by the server): no commitment exists, so forget the contribution.
        # (On a transport failure it is kept: the server may have the commitment.)
        store.forget(ceremony_id, member.member_id)
        raise
    _summary(view)
    console.print("next: custodian(s) run `tandem ceremony approve " + view["id"] + "`")


@ceremony_app.command("approve")
def ceremony_approve(  # noqa: PLR0917 - typer maps parameters to options
    ceremony_id: Annotated[str, IdArg],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
    state_dir: Path | None = StateDirOpt,
) -> None:
    """(Custodian) Approve a ceremony. Your client re-reads the definition, recomputes what
    you sign, and commits to your own contribution (or re-seals your share, for a
    reshare). Run `tandem ceremony show` first to read what you approve."""
    cl = common.client(server)
    member = load_member(keystore)
    # One fetch: what is printed is the very object the approval is computed from.
    view = cl.ceremonies.get(member, ceremony_id)
    _print_for_approval(view, humanize.member_names(cl.get_all(member, "/v1/members")))
    contribution = None
    if view["kind"] == "keygen":
        contribution = keygen.make_contribution()
    code = common.totp_code(cl, member, totp, totp_from_keystore)
    store = _store(keystore, state_dir)
    if contribution is not None:
        store.save(ceremony_id, member.member_id, contribution)
    try:
        result = cl.ceremonies.approve(member, ceremony_id, totp=code, contribution=contribution, view=view)
    except Error:
        if contribution is not None:
            store.forget(ceremony_id, member.member_id)
        raise
    _summary(result)


@ceremony_app.command("reject")
def ceremony_reject(
    ceremony_id: Annotated[str, IdArg],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Custodian) Stop a ceremony before any key is made."""
    _summary(common.client(server).ceremonies.reject(load_member(keystore), ceremony_id, reason=reason))


@ceremony_app.command("cancel")
def ceremony_abort(
    ceremony_id: Annotated[str, IdArg],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")] = "",
) -> None:
    """(Proposer) Withdraw your ceremony before any key is made."""
    _summary(common.client(server).ceremonies.abort(load_member(keystore), ceremony_id, reason=reason))


# One verb for calling a request off: `cancel`, as for withdrawals; `abort` stays, hidden.
ceremony_app.command("abort", hidden=True)(ceremony_abort)


@ceremony_app.command("reveal")
def ceremony_reveal(
    ceremony_id: Annotated[str, IdArg],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    state_dir: Path | None = StateDirOpt,
) -> None:
    """Reveal the contribution you committed to, once every approval is in. The last
    reveal makes the keys."""
    member = load_member(keystore)
    store = _store(keystore, state_dir)
    contribution = store.load(ceremony_id, member.member_id)
    view = common.client(server).ceremonies.reveal(member, ceremony_id, contribution)
    store.forget(ceremony_id, member.member_id)
    _summary(view)
    if view["status"] == "executed":
        console.print(
            "keys made: every participant now runs `tandem ceremony countersign " + ceremony_id + "`"
        )


@ceremony_app.command("countersign")
def ceremony_countersign(
    ceremony_id: Annotated[str, IdArg],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Verify the transcript on this machine (signatures, commitments, addresses, birth
    proofs) and countersign the hash computed here."""
    _summary(common.client(server).ceremonies.countersign(load_member(keystore), ceremony_id))


@ceremony_app.command("show")
def ceremony_show(
    ceremony_id: Annotated[str, IdArg],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show a ceremony: who proposed and approved it (by name) and when, in local time,
    its definition and the digest your client computes itself (--json: the raw answer)."""
    cl = common.client(server)
    member = load_member(keystore)
    view = cl.ceremonies.get(member, ceremony_id)
    if as_json:
        if view["kind"] != "import":
            view["digest_computed_locally"] = cc.local_digest(view)
        view.pop("actions", None)
        show(view)
        return
    _print_for_approval(view, humanize.member_names(cl.get_all(member, "/v1/members")))


@ceremony_app.command("list")
def ceremony_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    status: Annotated[
        str | None,
        typer.Option(help="proposed, revealing, executed, complete, rejected, aborted, expired"),
    ] = None,
    limit: int | None = common.LimitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Ceremonies and imports, oldest first (--json: the raw values)."""
    cl = common.client(server)
    member = load_member(keystore)
    rows = cl.ceremonies.list(member, status, first=limit)
    if as_json:
        show(rows)
        return
    names = humanize.member_names(cl.get_all(member, "/v1/members"))
    table = whole_table(
        Column("id", no_wrap=True),
        "kind",
        "status",
        "proposer",
        "approvals",
        Column("key set", no_wrap=True),
    )
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["status"],
            humanize.member(r["proposer"], names),
            str(len(r["approvals"])),
            r["keyset"] or "",
        )
    console.print(table)


@ceremony_app.command("transcript")
def ceremony_transcript(
    ceremony_id: Annotated[str, IdArg],
    out: Annotated[Path, typer.Option(help="File to write the transcript JSON to.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Save a ceremony's transcript for offline verification (`tandem verify transcript`)."""
    doc = common.client(server).ceremonies.transcript(load_member(keystore), ceremony_id)
    write_json(out, doc)
    console.print(f"transcript of {ceremony_id} -> {out} (hash {core.transcript_hash(doc)})")


# --- verify ----------------------------------------------------------------------------


@verify_app.command("transcript")
def verify_transcript(
    file: Annotated[Path, typer.Argument(help="Transcript JSON (tandem ceremony transcript).")],
    allow_incomplete: Annotated[
        bool, typer.Option(help="Accept a transcript still waiting for countersignatures.")
    ] = False,
) -> None:
    """Verify a ceremony transcript offline: every signed action, commitments against
    reveals, every address against its public key, birth proofs in each chain's own
    format, and the countersignatures. Exits non-zero on any problem."""
    report = core.verify_transcript(read_json(file))
    for line in report.checked:
        console.print(f"  ok: {line}")
    for problem in report.problems:
        console.print(f"  [red]problem:[/] {problem}")
    if report.missing_countersignatures:
        console.print("  not yet countersigned by: " + ", ".join(report.missing_countersignatures))
    report.require(complete=not allow_incomplete)
    console.print(f"[green]transcript verifies[/]: ceremony {report.ceremony}, hash {report.transcript_hash}")


# --- key sets --------------------------------------------------------------------------


@keyset_app.command("list")
def keyset_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    limit: int | None = common.LimitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Every key set with its status (active, reshare_required, retired) and addresses."""
    rows = common.client(server).keysets.list(load_member(keystore), first=limit)
    if as_json:
        show(rows)
        return
    table = whole_table(
        Column("id", no_wrap=True),
        "status",
        "curve",
        "segregation",
        "gen",
        Column("addresses", overflow="fold"),
    )
    for r in rows:
        table.add_row(
            r["id"],
            r["status"],
            r["curve"],
            r["segregation"],
            str(r["generation"]),
            "\n".join(f"{a['chain']}/{a['network']} {a['address']}" for a in r["addresses"]),
        )
    console.print(table)


@keyset_app.command("show")
def keyset_show(
    keyset_id: Annotated[str, typer.Argument(help="Key set id (ks_...).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    sealed: Annotated[bool, typer.Option(help="Also print the sealed record.")] = False,
    as_json: bool = JsonAlreadyOpt,
) -> None:
    """Public keys, addresses, birth proofs and who holds shares of a key set."""
    view = common.client(server).keysets.get(load_member(keystore), keyset_id)
    if not sealed:
        view.pop("sealed", None)
    show(view)


@keyset_app.command("export")
def keyset_export(
    keyset_id: Annotated[str, typer.Argument(help="Key set id (ks_...).")],
    out: Annotated[Path, typer.Option(help="File to write (for offline media).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Export a key set for offline media: its encrypted keys and sealed shares plus public
    data. Opening it still needs a manager and a custodian. Recorded in the audit log."""
    doc = common.client(server).keysets.export(load_member(keystore), keyset_id)
    if out.exists():
        raise InputError(f"{out} exists; refusing to overwrite")
    write_json(out, doc)
    console.print(f"exported {keyset_id} -> {out} (export hash {export_core.export_hash(doc)})")


@keyset_app.command("import")
def keyset_import(
    file: Annotated[Path, typer.Argument(help="Export file (tandem keyset export).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager) Propose restoring an exported key set. Your share is re-sealed to a
    one-time import key; a custodian finishes with `tandem keyset approve-import`."""
    view = common.client(server).keysets.propose_import(load_member(keystore), read_json(file))
    console.print(
        f"import {view['id']} of key set {view['target_keyset']} proposed; export hash {view['export_hash']}"
    )
    console.print(f"next: a custodian runs `tandem keyset approve-import {view['id']} {file}`")


@keyset_app.command("approve-import")
def keyset_approve_import(  # noqa: PLR0917 - typer maps parameters to options
    import_id: Annotated[str, typer.Argument(help="Import id (imp_...).")],
    file: Annotated[Path, typer.Argument(help="Your own copy of the export file.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
) -> None:
    """(Custodian) Finish an import: checks the pending import is of your file, re-seals
    your share to the import key, and the signer checks both shares open the key set."""
    cl = common.client(server)
    member = load_member(keystore)
    code = common.totp_code(cl, member, totp, totp_from_keystore)
    view = cl.keysets.approve_import(member, import_id, export=read_json(file), totp=code)
    console.print(f"import {view['id']}: {view['status']}; key set {view['keyset']} restored")
