"""The custodian's books: clients, the register of positions, reconciliation and
statements of position.

Terms used here:

* **client**: a person or fund whose crypto-assets the custodian holds. Its
  *segregation class* is ``segregated`` (its own wallets, key sets marked
  ``client:<id>``) or ``omnibus`` (a share of a wallet held for several clients).
* **register of positions**: per client, asset and wallet, the balance; every
  *movement* (deposit, withdrawal, fee, allocation) is an audit-log entry with its
  *evidence*: the transaction id and output or log index, and the block height.
* **allocation**: the attribution of (part of) an omnibus deposit to one client;
  a manager proposes it, a custodian approves it.
* **reconciliation**: the register's balance beside the chain's, per address and
  asset at a named block height; every difference is a *discrepancy* of a kind.
* **statement of position**: per client and period, the opening and closing
  balance of each asset, its value from the imported prices, and every transfer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tandem.cli.common import (
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
    totp_code,
    whole_table,
    write_json,
)
from tandem.client import Client
from tandem.errors import InputError

client_app = typer.Typer(
    help="Clients: id, name and segregation class (segregated: own `client:<id>` wallets; omnibus: a share "
    "of a wallet held for several clients, by approved allocations). Managers propose, custodians approve.",
    no_args_is_help=True,
)
allocation_app = typer.Typer(
    help="Allocations: attribute (part of) a deposit into an omnibus wallet to an omnibus client.",
    no_args_is_help=True,
)
register_app = typer.Typer(
    help="The register of positions: balances per client, asset and wallet; every movement with its "
    "evidence (txid, output or log index, block height).",
    no_args_is_help=True,
)
prices_app = typer.Typer(
    help="Prices that value statements (each names its source and method).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    from tandem.cli.ceremony_cmds import verify_app
    from tandem.cli.withdrawal_cmds import withdraw_app

    app.add_typer(client_app, name="client")
    app.add_typer(allocation_app, name="allocation")
    app.add_typer(register_app, name="register")
    app.add_typer(prices_app, name="prices")
    app.command("reconcile")(reconcile)
    app.command("statement")(statement)
    verify_app.command("reconciliation")(verify_reconciliation)
    verify_app.command("statement")(verify_statement)
    withdraw_app.command("broadcast")(withdraw_broadcast)
    withdraw_app.command("track")(withdraw_track)


# --- clients and allocations -----------------------------------------------------------


@client_app.command("propose")
def client_propose(
    client_id: Annotated[str, typer.Option("--id", help="The client's id (letters, digits, - and _).")],
    name: Annotated[str, typer.Option(help="The client's name as statements show it.")],
    segregation: Annotated[str, typer.Option(help="segregated or omnibus.")] = "segregated",
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager) Propose a client; a custodian approves it."""
    show(
        Client(server).books.propose_client(
            load_member(keystore), client_id=client_id, name=name, segregation=segregation
        )
    )


@client_app.command("approve")
def client_approve(
    proposal: Annotated[str, typer.Argument(help="The proposal id (see `tandem register proposals`).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
) -> None:
    """(Custodian) Approve a client or allocation proposal, with your TOTP code."""
    cl, me = Client(server), load_member(keystore)
    show(cl.books.approve(me, proposal, totp=totp_code(cl, me, totp, totp_from_keystore)))


@client_app.command("list")
def client_list(keystore: Path = KeystoreOpt, server: str = ServerOpt, as_json: bool = JsonOpt) -> None:
    """Clients with their segregation class and the wallets that belong to them."""
    rows = Client(server).get_all(load_member(keystore), "/v1/books/clients")
    if as_json:
        show(rows)
        return
    table = whole_table("id", "name", "segregation", "wallets")
    for c in rows:
        table.add_row(c["id"], c["name"], c["segregation"], ", ".join(c["wallets"]))
    console.print(table)


@allocation_app.command("propose")
def allocation_propose(
    deposit: Annotated[
        str, typer.Option(help="The deposit's movement id (see `tandem register movements`).")
    ],
    client_id: Annotated[str, typer.Option("--client", help="The omnibus client it belongs to.")],
    amount: Annotated[str, typer.Option(help="Base units (wei, sats) attributed.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager) Propose attributing (part of) an omnibus deposit to a client."""
    show(
        Client(server).books.propose_allocation(
            load_member(keystore), deposit=deposit, client_id=client_id, amount=amount
        )
    )


allocation_app.command("approve")(client_approve)


# --- the register ----------------------------------------------------------------------


@register_app.command("positions")
def register_positions(
    client_id: Annotated[str | None, typer.Option("--client", help="Only this client.")] = None,
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Balances per client, chain, asset, wallet and address, in base units."""
    table = whole_table("client", "chain", "asset", "wallet", "address", "balance")
    params: dict[str, Any] = {"client": client_id} if client_id else {}
    for p in Client(server).get_all(load_member(keystore), "/v1/books/positions", **params):
        table.add_row(
            p["client"],
            f"{p['chain']}/{p['network']}",
            p["asset"],
            p["wallet"],
            p["address"],
            p["balance"],
        )
    console.print(table)


@register_app.command("movements")
def register_movements(
    client_id: Annotated[str | None, typer.Option("--client", help="Only this client.")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="With --list-jobs: only the newest N.")
    ] = None,
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Every movement with its evidence (txid, output or log index, block height), in
    the order recorded, as JSON; --limit for the first N only."""
    params = {"client": client_id} if client_id else {}
    show(Client(server).get_all(load_member(keystore), "/v1/books/movements", first=limit, **params))


@register_app.command("proposals")
def register_proposals(keystore: Path = KeystoreOpt, server: str = ServerOpt) -> None:
    """Client and allocation proposals waiting for a custodian."""
    show(Client(server).books.open_proposals(load_member(keystore)))


@register_app.command("scan")
def register_scan(keystore: Path = KeystoreOpt, server: str = ServerOpt) -> None:
    """(Manager or custodian) Record the deposits the server's chain backends show."""
    show(Client(server).books.scan(load_member(keystore)))


# --- reconciliation --------------------------------------------------------------------


def reconcile(  # noqa: PLR0917 - typer options
    snapshot: Annotated[
        Path | None,
        typer.Option(help="An offline chain snapshot (JSON) instead of the server's chain backends."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the signed report (with its snapshot) here.")
    ] = None,
    job: Annotated[
        str | None,
        typer.Option(
            help="Follow a background reconciliation already started (its id, rj_...) instead of "
            "starting one; an interrupted job (the server stopped) is said so, and is started again "
            "without this option."
        ),
    ] = None,
    list_jobs: Annotated[
        bool,
        typer.Option(
            "--list-jobs", help="List the background reconciliations, newest first, and their state."
        ),
    ] = False,
    limit: int | None = LimitOpt,
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager or custodian) Reconcile: per address and asset, at the block height read, the register's
    balance beside the chain's. Discrepancies: unexpected_inflow (the chain holds more),
    outflow_without_withdrawal (less, and no withdrawal explains it), withdrawal_not_confirmed (less by what
    released withdrawals take), amount_mismatch (less, by more than they take), unknown_token (a token the
    register never recorded). The report is signed with the service key and its hash logged."""
    from tandem.core import reconcile as rcore

    if list_jobs:
        show(Client(server).books.reconciliation_jobs(load_member(keystore), first=limit))
        return
    if snapshot is not None:
        signed = Client(server).books.reconcile(load_member(keystore), snapshot=read_json(snapshot))
    else:
        shown: list[tuple[int, int | None]] = []

        def progress(done: int, total: int | None) -> None:
            if total and (done, total) not in shown:
                shown.append((done, total))
                typer.echo(f"reading the chains: {done}/{total} addresses", err=True)

        # A background job on the server: many addresses take longer than one request.
        client, member = Client(server), load_member(keystore)
        if job is not None:
            started = client.books.reconciliation_job(member, job)
            signed = client.books.follow_job(member, started, progress=progress)
        else:
            signed = client.books.reconcile_with_progress(member, progress=progress)
    if out is not None:
        write_json(out, signed)
    console.print(rcore.table(signed["report"], _in_coins), markup=False)
    if signed["report"]["discrepancies"]:
        raise typer.Exit(1)


def _in_coins(value: str, asset: str, network: str) -> str:
    """A report's base units as a person reads them, e.g. ``0.5 ETH (500,000,... wei)``."""
    from tandem import humanize

    return humanize.amount(value, asset, network=network)


def verify_reconciliation(
    report: Annotated[Path, typer.Argument(help="The signed report from `tandem reconcile --out`.")],
    register_export: Annotated[
        Path, typer.Option("--register", help="audit.jsonl from `tandem audit export`.")
    ],
    snapshot: Annotated[Path, typer.Option(help="The chain snapshot (JSON) the report was made from.")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint JSON (default: beside the export).")
    ] = None,
    service_key: Annotated[
        str | None, typer.Option(help="Service signing public key (hex), obtained independently.")
    ] = None,
) -> None:
    """Re-run a reconciliation offline: verify the export whole, rebuild the register from it (a register
    entry no rule justifies is refused, naming it), compare with the snapshot, and require the very report
    that was signed and logged."""
    from tandem.core import reconcile as rcore

    cp = read_json(checkpoint or register_export.parent / "checkpoint.json")
    key_hex = service_key or read_json(register_export.parent / "service-key.json")["sign_public"]
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise InputError("--service-key must be hex") from None
    reading = _read_export(register_export, cp, key)
    again = rcore.verify_report(read_json(report), reading, read_json(snapshot))
    console.print(rcore.table(again, _in_coins), markup=False)
    console.print(
        f"[green]OK[/] same verdict: {again['verdict']}; report {rcore.report_hash(again)} is logged"
    )


# --- prices and statements -------------------------------------------------------------


@prices_app.command("import")
def prices_import(
    file: Annotated[
        Path, typer.Argument(help="CSV (asset,price,currency,time,source,method[,decimals]) or JSON.")
    ],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager or custodian) Import prices: per asset a price per whole unit, its currency, time, source
    and method (e.g. 'closing price, last trade before period end')."""
    from tandem.core.statement import prices_from_csv

    text = file.read_text(encoding="utf-8")
    rows: Any = prices_from_csv(text) if file.suffix.lower() == ".csv" else json.loads(text)
    show(Client(server).books.import_prices(load_member(keystore), rows))


def statement(  # noqa: PLR0917 - typer maps options to parameters
    period: Annotated[str, typer.Option(help="2026-Q3 (a quarter) or 2026-07 (a month), UTC.")],
    client_id: Annotated[str | None, typer.Option("--client", help="One client.")] = None,
    all_clients: Annotated[bool, typer.Option("--all-clients", help="Every client, a page each.")] = False,
    custodian: Annotated[str, typer.Option(help="The custodian's name for the heading.")] = "Custodian",
    out: Annotated[Path, typer.Option(help="Folder for statement.pdf, .json and .csv.")] = Path("statements"),
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager or custodian) Statements of position: per client and period, each asset's opening and
    closing balance (base units), value at the imported price (naming its source and method), and every
    transfer with its txid and date. Writes PDF, JSON and CSV; their hashes go into the audit log. A
    statement on request, for any period, is the same command."""
    if bool(client_id) == all_clients:
        raise typer.BadParameter("give --client ID or --all-clients")

    bundle = Client(server).books.statements(
        load_member(keystore), period=period, client_id=client_id, custodian=custodian
    )
    stem = f"statement-{period}-{client_id or 'all'}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.pdf").write_bytes(bytes.fromhex(bundle["pdf_hex"]))
    write_json(out / f"{stem}.json", bundle["statements"])
    (out / f"{stem}.csv").write_text(bundle["csv"], encoding="utf-8")
    console.print(
        f"wrote {stem}.pdf, {stem}.json and {stem}.csv in {out}; "
        f"PDF SHA-256 {bundle['pdf_sha256']} (recorded in the audit log)"
    )


def verify_statement(
    pdf: Annotated[Path, typer.Argument(help="A statement PDF (or its JSON).")],
    register_export: Annotated[
        Path, typer.Option("--register", help="audit.jsonl from `tandem audit export`.")
    ],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint JSON (default: beside the export).")
    ] = None,
    service_key: Annotated[str | None, typer.Option(help="Service signing public key (hex).")] = None,
) -> None:
    """Check a statement PDF (or its JSON) against the verified audit log: its hash must be one the log
    recorded."""
    from tandem.core.statement import find_issued

    cp = read_json(checkpoint or register_export.parent / "checkpoint.json")
    key = bytes.fromhex(service_key or read_json(register_export.parent / "service-key.json")["sign_public"])
    reading = _read_export(register_export, cp, key)
    entry = find_issued(pdf.read_bytes(), reading.statements)
    console.print(
        f"[green]OK[/] statement for {entry['data']['period']} "
        f"({', '.join(entry['data']['clients'])}) issued at entry {entry['index']}"
    )


# --- broadcast and tracking ------------------------------------------------------------


def withdraw_broadcast(
    withdrawal_id: Annotated[str, typer.Argument(help="A released withdrawal.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Send a released transaction through the server's chain backend and record the broadcast (txid)."""
    show(Client(server).books.broadcast(load_member(keystore), withdrawal_id))


def withdraw_track(
    withdrawal_id: Annotated[str, typer.Argument(help="A broadcast withdrawal.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Ask the chain what became of a broadcast withdrawal.

    confirmed: its block height and confirmations are recorded and the register moves;
    pending: the node holds it, nothing changes; dropped: the node no longer knows it, so
    it is recorded as released again (an audit entry) and `withdraw broadcast` sends the
    same signed bytes again."""
    show(Client(server).books.track(load_member(keystore), withdrawal_id))


def _read_export(path: Path, checkpoint: Any, key: bytes) -> Any:
    """The export verified whole, with progress shown for a large log."""
    from tandem.cli.audit_cmds import progress_bar
    from tandem.core import reconcile as rcore

    body = checkpoint.get("checkpoint") if isinstance(checkpoint, dict) else None
    size = body.get("tree_size") if isinstance(body, dict) else None
    with path.open("rb") as fh, progress_bar("verifying the register", size) as advance:
        return rcore.read_export((line for line in fh if line.strip()), checkpoint, key, progress=advance)
