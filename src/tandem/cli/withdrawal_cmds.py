"""`tandem withdraw|policy|addressbook|bundle ...` (`bundle offline-sign` on the air-gapped machine).

Commands that approve something decode and check it here, on the member's machine,
before signing: the server's decoded view is never what gets approved.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column

from tandem import humanize
from tandem.cli import common, exit_codes
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
    whole_table,
    write_json,
)
from tandem.client import Client
from tandem.client import withdrawal as cw
from tandem.client.views import WithdrawalView
from tandem.core.identity import IdentityCard, MemberSecrets
from tandem.core.roles import Role
from tandem.errors import (
    InputError,
    InvalidStateError,
    OperationKeyLostError,
    RemoteError,
    RoleNotAllowedError,
    VerificationError,
)

withdraw_app = typer.Typer(
    help="Co-signed withdrawals: request, review, approve, release.", no_args_is_help=True
)
policy_app = typer.Typer(help="The withdrawal policy: show, explain, propose, veto.", no_args_is_help=True)
book_app = typer.Typer(
    help="Allow-listed destinations (dual-controlled, with a delay).", no_args_is_help=True
)
bundle_app = typer.Typer(help="Offline signing: export a bundle, add shares, import.", no_args_is_help=True)


def _now() -> int:
    """The offline machine's clock (approvals and requests expire against it)."""
    return int(time.time())


ReasonOpt = typer.Option(None, "--reason", help="Why; recorded in the audit log.")


def _print_review(
    view: dict[str, Any],
    checked: cw.Review,
    names: Mapping[str, str],
    book: Mapping[tuple[str, ...], str],
) -> None:
    """The approval screen: what this machine decoded from the raw transaction, in the
    chain's units, with the destination's address-book label and the people by name."""
    console.print(_decoded_table(checked, str(view["intent"]["asset"]), book))
    if checked.decoded.get("chain") == "bitcoin":
        inputs = whole_table("input", "amount (read from its previous transaction)", show_header=True)
        for i in checked.decoded["inputs"]:
            inputs.add_row(f"{i['txid']}:{i['vout']}", humanize.amount(i["amount"], "BTC"))
        console.print(inputs)
    _print_request(view, names)
    _print_fee(checked.fee)
    console.print(
        f"fingerprint (compare with the requester by another channel): [bold]{checked.fingerprint}[/]"
    )


def _decoded_table(checked: cw.Review, asset: str, book: Mapping[tuple[str, ...], str]) -> Any:
    d = checked.decoded
    network = str(d["network"])

    def units(raw: Any) -> str:
        return humanize.amount(
            raw, asset, network=network, decimals=d.get("decimals"), symbol=d.get("symbol")
        )

    chain_id = f" (chain id {d['chain_id']})" if d.get("chain_id") else ""
    table = whole_table("field", "decoded here from the raw transaction", show_header=True)
    table.add_row("chain", f"{d['chain']} / {network}{chain_id}")
    table.add_row("from", str(d["from"]))
    table.add_row("to", humanize.destination(str(d["to"]), str(d["chain"]), network, book, asset))
    table.add_row("amount", units(d["amount"]))
    if d.get("token"):
        table.add_row("token contract", str(d["token"]))
    if checked.fee is not None:
        fee = humanize.amount(checked.fee["fee"], checked.fee["asset"], network=network)
        table.add_row("fee (worst case)", fee)
    if d.get("change"):
        table.add_row("change (back to the wallet)", units(d["change"]))
    solana: tuple[str, ...] = ("nonce_account", "destination_token_account", "creates_destination_account")
    solana += ("compute_unit_limit", "compute_unit_price", "priority_fee")
    for key in solana:
        if d.get(key) is not None:
            table.add_row(key.replace("_", " "), str(d[key]))
    return table


def _print_request(view: Mapping[str, Any], names: Mapping[str, str]) -> None:
    required = view.get("required") or view["decision"].get("required") or {}
    needs = ", ".join(f"{n} {role}{'s' if n != 1 else ''}" for role, n in sorted(required.items()))
    console.print(
        f"request {view['id']} ({view['status']}; policy v{view['policy_version']}, rule "
        f"{view['decision'].get('rule')}: needs {needs or 'no'} approval)"
        + ("  escalated at release: waiting for the extra approvals" if view.get("escalated") else "")
    )
    requester = humanize.member(view.get("requester"), names)
    console.print(f"requested by {requester} at {humanize.when(view.get('created_at'))}")
    console.print(f"expires      {humanize.when(view.get('expires_at'))}")
    if view.get("time_lock_until"):
        console.print(f"time lock    until {humanize.when(view['time_lock_until'])}")
    for a in view.get("approvals", []):
        console.print(
            f"approved by  {humanize.member(a['member'], names)} ({a['role']}) at {humanize.when(a['at'])}"
        )


def _print_fee(fee: Mapping[str, Any] | None) -> None:
    if fee is None:
        return
    share = f", {fee['share']} of the amount" if fee["share"] is not None else " (paid in another asset)"
    tip = (
        f", priority {fee['priority_rate']} {fee.get('priority_unit', fee['rate_unit'])}"
        if fee["priority_rate"] is not None
        else ""
    )
    console.print(f"fee rate     {fee['rate']} {fee['rate_unit']}{tip}{share}")
    if fee["warning"] is not None:
        console.print(f"[bold red]warning:[/] {fee['warning']}")


# --- withdraw -------------------------------------------------------------------------------


@withdraw_app.command("create")
def withdraw_create(
    intent: Annotated[Path, typer.Argument(help="Intent JSON (see docs/withdrawals.md).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager) Request a withdrawal; prints the fingerprint to read out to the approver."""
    w = Client(server).withdrawals.create(load_member(keystore), read_json(intent))
    show(
        {
            k: w[k]
            for k in (
                "id",
                "status",
                "fingerprint",
                "decoded",
                "decision",
                "expires_at",
                "time_lock_until",
            )
        }
    )


def _people_and_book(cl: Client, member: MemberSecrets) -> tuple[dict[str, str], dict[tuple[str, ...], str]]:
    """Names for member ids and labels for addresses, to print beside the raw values."""
    names = humanize.member_names(cl.get_all(member, "/v1/members"))
    book = humanize.labels(cl.policy.address_book(member))
    return names, book


def _amount(w: WithdrawalView) -> str:
    return humanize.amount(w.amount, w.asset, network=w.network, decimals=w.decimals, symbol=w.symbol)


@withdraw_app.command("list")
def withdraw_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    status: Annotated[
        str | None, typer.Option(help="pending, approved, released, lapsed, broadcast, confirmed...")
    ] = None,
    limit: int | None = LimitOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Withdrawal requests, oldest first: amounts in the chain's units, who asked, the
    destination's address-book label and local times (--json: the raw values)."""
    cl = Client(server)
    member = load_member(keystore)
    rows = cl.withdrawals.list(member, status=status, first=limit)
    if as_json:
        show(rows)
        return
    names, book = _people_and_book(cl, member)
    table = whole_table(
        "id", "status", "amount", "destination", "requested by", "created", "expires", "fingerprint"
    )
    for w in map(WithdrawalView.from_json, rows):
        table.add_row(
            w.id,
            w.status,
            f"{_amount(w)} on {w.chain}/{w.network}",
            humanize.destination(w.destination, w.chain, w.network, book, w.asset),
            humanize.member(w.requester, names),
            humanize.when(w.created_at),
            humanize.when(w.expires_at),
            w.fingerprint,
        )
    console.print(table)


def _signed_doc(view: dict[str, Any]) -> dict[str, Any]:
    return {k: view[k] for k in ("id", "chain", "network", "txid", "signed_tx")}


@withdraw_app.command("show")
def withdraw_show(
    withdrawal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    out: Annotated[
        Path | None,
        typer.Option(help="(Released) Write the signed transaction JSON here again, as release did."),
    ] = None,
    as_json: bool = JsonOpt,
) -> None:
    """Decode the raw unsigned transaction here, compare it with the intent, show the
    fingerprint; who asked and approved, and when. A released one shows its txid."""
    cl = Client(server)
    member = load_member(keystore)
    view = cl.withdrawals.get(member, withdrawal_id)
    checked = cw.review(view)
    w = WithdrawalView.from_json(view)
    if out is not None:
        if not w.signed_tx:
            raise InvalidStateError(
                f"{withdrawal_id} is {w.status}: there is no signed transaction to write yet"
            )
        write_json(out, _signed_doc(view))
    if as_json:
        show({**view, "fingerprint_computed_locally": checked.fingerprint})
        return
    _print_review(view, checked, *_people_and_book(cl, member))
    if view.get("txid"):
        console.print(f"txid         {view['txid']}  (released {humanize.when(view.get('released_at'))})")
        if out is not None:
            console.print(f"wrote {out}: the signed transaction again")
        else:
            console.print(
                f"  `tandem withdraw show {withdrawal_id} --out FILE` writes the signed transaction again"
            )


@withdraw_app.command("psbt")
def withdraw_psbt(
    withdrawal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the binary PSBT here (else base64 on stdout).")
    ] = None,
) -> None:
    """(Bitcoin) Export the unsigned transaction as a BIP-174 PSBT to inspect in a wallet.

    It is checked here first and carries each input's previous transaction."""
    view = Client(server).withdrawals.get(load_member(keystore), withdrawal_id)
    data = cw.withdrawal_psbt(view)
    if out is None:
        typer.echo(base64.b64encode(data).decode("ascii"))
    else:
        out.write_bytes(data)
        console.print(f"wrote {out} ({len(data)} bytes, fingerprint {view['fingerprint']})")


def _refuse_auditor(member: MemberSecrets, withdrawal_id: str) -> None:
    if member.role is Role.AUDITOR:
        raise RoleNotAllowedError(
            f"{member.name}'s keystore is an auditor's: auditors read and verify, they do not "
            "approve withdrawals. A custodian approves (and a manager, where the policy asks "
            f"for one); you can review it with `tandem withdraw show {withdrawal_id}`"
        )


def _reviewed(cl: Client, member: MemberSecrets, withdrawal_id: str) -> dict[str, Any]:
    """Fetch once, decode and check here, print the review: what is printed is the very
    object the approval is then built from."""
    view = cl.withdrawals.get(member, withdrawal_id)
    _print_review(view, cw.review(view), *_people_and_book(cl, member))
    return view


@withdraw_app.command("approve")
def withdraw_approve(
    withdrawal_id: Annotated[str, typer.Argument()],
    *,
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
    fingerprint: Annotated[
        str | None,
        typer.Option(help="The fingerprint the requester read out; refuse if it differs."),
    ] = None,
) -> None:
    """Approve: decode and check locally, then sign (id, intent hash, tx digest, policy version, expiry)."""
    cl = Client(server)
    member = load_member(keystore)
    _refuse_auditor(member, withdrawal_id)
    view = _reviewed(cl, member, withdrawal_id)
    _require_fingerprint(view, fingerprint)
    code = common.totp_code(cl, member, totp, totp_from_keystore)
    try:
        result = cl.withdrawals.approve(
            member, withdrawal_id, totp=code, expected_fingerprint=fingerprint, view=view
        )
    except RemoteError as exc:
        if exc.remote_code == OperationKeyLostError.code:
            raise typer.Exit(_recover_approval(exc, withdrawal_id, keystore)) from None
        raise
    waiting = " (it waits for more approvals)" if result["status"] == "pending" else ""
    console.print(f"your approval is recorded; the request is now {result['status']}{waiting}")


def _require_fingerprint(view: dict[str, Any], fingerprint: str | None) -> None:
    """Before any TOTP code is asked for: the fingerprint read out must be this request's."""
    if fingerprint is None:
        return
    computed = cw.review(view).fingerprint
    if fingerprint != computed:
        raise VerificationError(
            f"the fingerprint the requester read out ({fingerprint}) is not this request's ({computed}): "
            "do not approve; call the requester back on a number you already know and compare again"
        )


def _fingerprints(values: list[str] | None, ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        wid, sep, fp = value.partition("=")
        if not sep or not fp or wid not in ids:
            raise InputError(
                f"--fingerprint takes ID=FINGERPRINT for one of the requests named, not {value!r}"
            )
        out[wid] = fp.strip()
    return out


@withdraw_app.command("approve-batch")
def withdraw_approve_batch(
    withdrawal_ids: Annotated[list[str], typer.Argument(help="The requests to approve (wd_...).")],
    *,
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
    fingerprint: Annotated[
        list[str] | None,
        typer.Option(
            help="ID=FINGERPRINT as the requester read it out (repeat); refuse that one if it differs."
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Do not ask (scripts; you read every fingerprint back already)."),
    ] = False,
    as_json: bool = JsonOpt,
) -> None:
    """Approve several requests with one TOTP code: each is decoded, checked and shown here
    as `withdraw approve` shows it, you confirm you read each fingerprint back, then one
    code signs them all. Prints each request's result; exits 1 if any was refused."""
    ids = list(withdrawal_ids)
    if len(set(ids)) != len(ids):
        raise InputError("a request is named twice")
    expected = _fingerprints(fingerprint, ids)
    cl = Client(server)
    member = load_member(keystore)
    _refuse_auditor(member, ids[0])
    views = []
    for n, wid in enumerate(ids, 1):
        console.print(f"[bold]{n}/{len(ids)}[/]")
        views.append(_reviewed(cl, member, wid))
    if not yes and not typer.confirm(
        f"Approve these {len(ids)} requests? Only if you read each fingerprint back with its requester"
    ):
        raise InputError("nothing approved: you declined")
    code = common.totp_code(cl, member, totp, totp_from_keystore)
    answer = cl.withdrawals.approve_many(member, views, totp=code, expected_fingerprints=expected)
    if as_json:
        show(answer)
    else:
        table = whole_table(Column("request", no_wrap=True), "outcome", "status or reason", show_header=True)
        for r in answer["results"]:
            approved = r["outcome"] == "approved"
            table.add_row(
                r["withdrawal"],
                r["outcome"] if approved else f"[red]{r['outcome']}[/]",
                str(r.get("status")) if approved else escape(f"{r.get('message')} [{r.get('code')}]"),
            )
        console.print(table)
        console.print(f"{answer['approved']} approved, {answer['refused']} refused")
    if answer["refused"]:
        raise typer.Exit(exit_codes.REFUSED)


@withdraw_app.command("reject")
def withdraw_reject(
    withdrawal_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why; recorded in the audit log.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Reject a request."""
    show(Client(server).withdrawals.reject(load_member(keystore), withdrawal_id, reason=reason))


@withdraw_app.command("cancel")
def withdraw_cancel(
    withdrawal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    reason: str | None = ReasonOpt,
) -> None:
    """(Manager) Cancel a request."""
    show(Client(server).withdrawals.cancel(load_member(keystore), withdrawal_id, reason=reason))


@withdraw_app.command("veto")
def withdraw_veto(
    withdrawal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    reason: str | None = ReasonOpt,
) -> None:
    """(Custodian) Stop a time-locked withdrawal during its lock."""
    show(Client(server).withdrawals.veto(load_member(keystore), withdrawal_id, reason=reason))


@withdraw_app.command("contribute")
def withdraw_contribute(  # noqa: PLR0917 - typer maps parameters to options
    withdrawal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    renew: Annotated[bool, typer.Option(help="First ask for a new operation key (after a restart).")] = False,
    totp: str | None = TotpOpt,
    totp_from_keystore: bool = TotpFromKeystoreOpt,
) -> None:
    """Give your share again, resealed to the request's operation key (after the signer lost it).
    A custodian's share needs a TOTP code, as its approval did."""
    cl = Client(server)
    member = load_member(keystore)
    if renew:
        cl.withdrawals.renew_operation(member, withdrawal_id)
    code = None
    if member.role.value == "custodian":
        code = common.totp_code(cl, member, totp, totp_from_keystore)
    show(cl.withdrawals.contribute_share(member, withdrawal_id, totp=code))


@withdraw_app.command("release")
def withdraw_release(
    withdrawal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    retry_file: Annotated[
        Path | None,
        typer.Option(
            help="Keeps the signed request and its Idempotency-Key; run again with the same file to "
            "retry safely (the server answers the first result)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the signed transaction JSON here.")] = None,
) -> None:
    """Release an approved withdrawal: the server signs exactly once and returns the raw transaction."""
    cl = Client(server)
    member = load_member(keystore)
    if retry_file is not None and retry_file.exists():
        saved = read_json(retry_file)
        key, envelope = saved["idempotency_key"], saved["envelope"]
    else:
        key, envelope = secrets.token_hex(16), cl.withdrawals.release_envelope(member, withdrawal_id)
        if retry_file is not None:
            write_json(retry_file, {"idempotency_key": key, "envelope": envelope})
    try:
        result = cl.withdrawals.release(member, withdrawal_id, idempotency_key=key, envelope=envelope)
    except RemoteError as exc:
        if exc.remote_code == OperationKeyLostError.code:
            raise typer.Exit(_recover_release(exc, withdrawal_id, keystore, member)) from None
        raise
    doc = {
        "id": result["id"],
        "chain": result["chain"],
        "network": result["network"],
        "txid": result["txid"],
        "signed_tx": result["signed_tx"],
    }
    if out is not None:
        write_json(out, doc)
    show(doc)


def _recover_approval(exc: RemoteError, withdrawal_id: str, keystore: Path) -> int:
    """Nothing was approved: the share would have been sealed to a key the server lost."""
    from tandem.cli import errors_boundary

    errors_boundary.report(exc)
    err = common.err_console
    err.print("  Nothing was approved. The requester renews the operation key, then you approve again:")
    err.print(f"    tandem withdraw contribute {withdrawal_id} --renew -k MANAGER.keystore   (the manager)")
    err.print(f"    tandem withdraw approve {withdrawal_id} -k {keystore}")
    return exit_codes.CONFLICT


def _recover_release(exc: RemoteError, withdrawal_id: str, keystore: Path, member: MemberSecrets) -> int:
    """The approvals stand; only the one-time operation key is gone (a restart, or it was
    used). Say exactly what brings the request back to a release."""
    from tandem.cli import errors_boundary

    errors_boundary.report(exc)
    other = "custodian" if member.role is Role.MANAGER else "manager"
    err = common.err_console
    err.print(
        "  The approvals of this request still stand; the server lost its one-time operation "
        "key (it restarted, or the key was used), so both sides give their shares again. Run:"
    )
    err.print(f"    tandem withdraw contribute {withdrawal_id} --renew -k {keystore}")
    err.print(
        f"    tandem withdraw contribute {withdrawal_id} -k {other.upper()}.keystore   "
        f"(a {other}, on their machine{'; with a TOTP code' if other == 'custodian' else ''})"
    )
    err.print(f"    tandem withdraw release {withdrawal_id} -k {keystore}")
    return exit_codes.CONFLICT


@withdraw_app.command("broadcast-recorded")
def withdraw_broadcast_recorded(
    withdrawal_id: Annotated[str, typer.Argument()],
    txid: Annotated[str, typer.Option(help="The id of the transaction as broadcast (the released one).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Record that a released transaction was broadcast; the server checks the txid."""
    show(Client(server).withdrawals.record_broadcast(load_member(keystore), withdrawal_id, txid=txid))


@withdraw_app.command("confirm")
def withdraw_confirm(
    withdrawal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Record that a released transaction is confirmed on chain."""
    show(Client(server).withdrawals.confirm(load_member(keystore), withdrawal_id))


@withdraw_app.command("abandon")
def withdraw_abandon(
    withdrawal_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why it will never be broadcast; recorded in the audit log.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Record that a released transaction will never be broadcast (frees its nonce or outputs)."""
    show(Client(server).withdrawals.abandon(load_member(keystore), withdrawal_id, reason=reason))


# --- policy ---------------------------------------------------------------------------------


@policy_app.command("show")
def policy_show(  # noqa: PLR0913 - typer maps parameters to options
    *,
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    withdrawal: Annotated[str | None, typer.Option(help="Explain this request's decision.")] = None,
    wallet: Annotated[str | None, typer.Option(help="Facts: key-set id.")] = None,
    chain: Annotated[str | None, typer.Option(help="Facts: chain.")] = None,
    network: Annotated[str | None, typer.Option(help="Facts: network.")] = None,
    asset: Annotated[str | None, typer.Option(help="Facts: BTC, ETH or a token contract.")] = None,
    amount: Annotated[str | None, typer.Option(help="Facts: base units.")] = None,
    destination: Annotated[str | None, typer.Option(help="Facts: destination.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON (no explanation lines).")] = False,
) -> None:
    """The policy in force; with --withdrawal or facts, which rule applies and why."""
    cl = Client(server)
    member = load_member(keystore)
    facts = {
        "wallet": wallet,
        "chain": chain,
        "network": network,
        "asset": asset,
        "amount": amount,
        "destination": destination,
    }
    missing = [f"--{k}" for k, v in facts.items() if v is None]
    if withdrawal is None and len(missing) == len(facts):
        show(cl.policy.show(member))
        return
    if withdrawal is None and missing:
        # Said here in the command's own words, not as the API's query string.
        raise InputError(
            f"to explain a decision give --withdrawal ID, or every fact: {', '.join(missing)} missing"
        )
    params = {"withdrawal": withdrawal} if withdrawal else {k: v for k, v in facts.items() if v is not None}
    result = cl.policy.explain(member, **params)
    if not as_json:
        for line in result["decision"]["explanation"]:
            console.print(f"- {line}")
    show(result)


@policy_app.command("propose")
def policy_propose(
    file: Annotated[Path, typer.Argument(help="Policy JSON with version = current + 1 (docs/policy.md).")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager) Propose a new policy version; a custodian approves with `tandem proposal approve`."""
    show(Client(server).policy.propose(load_member(keystore), read_json(file)))


@policy_app.command("veto")
def policy_veto(
    proposal_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    reason: str | None = ReasonOpt,
) -> None:
    """(Custodian) Veto an approved policy or address-book change before it takes effect."""
    show(Client(server).policy.veto(load_member(keystore), proposal_id, reason=reason or ""))


# --- address book -----------------------------------------------------------------------------


@book_app.command("list")
def book_list(
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    as_json: bool = JsonOpt,
    limit: int | None = LimitOpt,
) -> None:
    """Every entry with its state (pending, active, removed, vetoed) and when it takes or
    took effect, in local time (--json: the raw values); --limit for the first N only."""
    entries = Client(server).policy.address_book(load_member(keystore), first=limit)
    if as_json:
        show(entries)
        return
    table = whole_table("id", "status", "chain", "address", "asset", "label", "effective")
    for e in entries:
        table.add_row(
            e["id"],
            e["status"],
            f"{e['chain']}/{e['network']}",
            e["address"],
            e["asset"] or "any",
            e["label"],
            humanize.when(e["effective_at"]),
        )
    console.print(table)


@book_app.command("propose-add")
def book_add(
    *,
    chain: Annotated[str, typer.Option(help="bitcoin, ethereum or solana.")],
    network: Annotated[str, typer.Option(help="testnet, mainnet, sepolia...")],
    address: Annotated[str, typer.Option(help="The destination.")],
    label: Annotated[str, typer.Option(help="What it is, for people.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
    asset: Annotated[
        str | None,
        typer.Option(help="Limit to BTC/ETH or an ERC-20 contract (which also allow-lists that token)."),
    ] = None,
) -> None:
    """(Manager) Propose a destination; a custodian approves; it applies after the delay."""
    show(
        Client(server).policy.propose_address(
            load_member(keystore),
            chain=chain,
            network=network,
            address=address,
            label=label,
            asset=asset,
        )
    )


@book_app.command("propose-remove")
def book_remove(
    entry_id: Annotated[str, typer.Argument()],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """(Manager) Propose removing a destination."""
    show(Client(server).policy.propose_address_removal(load_member(keystore), entry_id))


# Proposals are named alike: member propose-add|propose-remove, addressbook propose-add|
# propose-remove; the old names stay as hidden aliases.
book_app.command("add", hidden=True)(book_add)
book_app.command("remove", hidden=True)(book_remove)


# --- offline bundles --------------------------------------------------------------------------


@bundle_app.command("export")
def bundle_export(
    withdrawal_id: Annotated[str, typer.Argument()],
    signer_card: Annotated[Path, typer.Option(help="The offline signer's identity card (tandem id card).")],
    out: Annotated[Path, typer.Option(help="Bundle file to write.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Export an approved request for the offline signer, with your share resealed to it.
    A member of the other side then runs `tandem bundle add-share`."""
    card = IdentityCard.from_json(read_json(signer_card))
    bundle = Client(server).withdrawals.export_bundle(load_member(keystore), withdrawal_id, card)
    write_json(out, bundle)
    console.print(f"bundle -> {out} (shares: {', '.join(sorted(bundle['shares']))})")


@bundle_app.command("add-share")
def bundle_add_share(
    file: Annotated[Path, typer.Argument(help="Bundle from `tandem bundle export`.")],
    keystore: Path = KeystoreOpt,
) -> None:
    """Verify the bundle offline and add your side's share, resealed to the offline signer."""
    bundle = cw.add_share(read_json(file), load_member(keystore), now=_now())
    write_json(file, bundle)
    console.print(f"added; shares: {', '.join(sorted(bundle['shares']))}")


@bundle_app.command("import")
def bundle_import(
    result: Annotated[Path, typer.Argument(help="Result file from `tandem bundle offline-sign`.")],
    keystore: Path = KeystoreOpt,
    server: str = ServerOpt,
) -> None:
    """Record an offline-signed transaction (the server re-verifies it first)."""
    show(Client(server).withdrawals.import_result(load_member(keystore), read_json(result)))


def offline_sign_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle with both shares.")],
    signer_key: Annotated[
        Path,
        typer.Option(
            help="The offline signer's keystore (made with `tandem id create`); "
            "its X25519 key opens the shares."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Result file to write.")],
    genesis_hash: Annotated[
        str | None,
        typer.Option(help="Pin the deployment's genesis hash, obtained independently."),
    ] = None,
) -> None:
    """No server, no database: re-verify genesis, membership, every signature, the policy
    decision, quorum and both digests; only then sign."""
    doc = read_json(bundle)
    if not isinstance(doc, dict):
        raise InputError("not a bundle")
    result = cw.offline_sign(doc, load_member(signer_key), now=_now(), genesis_hash=genesis_hash)
    write_json(out, result)
    console.print(f"[green]signed[/] {result['withdrawal']} txid {result['txid']} -> {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(withdraw_app, name="withdraw")
    app.add_typer(policy_app, name="policy")
    app.add_typer(book_app, name="addressbook")
    app.add_typer(bundle_app, name="bundle")
    # Offline signing sits with the other bundle steps; the old top-level name still works.
    bundle_app.command("offline-sign")(offline_sign_cmd)
    app.command("offline-sign", hidden=True)(offline_sign_cmd)
