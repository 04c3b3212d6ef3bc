"""Shared CLI plumbing: the one place errors become messages and exit codes."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Column, Table

from tandem import client_pin
from tandem.cli import errors_boundary
from tandem.client import DEFAULT_SERVER, Client
from tandem.core.canonical import loads_strict
from tandem.core.identity import MemberSecrets
from tandem.errors import KeystoreError

# soft_wrap: lines are never broken by rich itself, so hashes, ids and paths stay whole
# for copy-paste and scripts whatever the terminal width (a pipe counts as 80 columns).
console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def whole_table(*columns: str | Column, **kwargs: Any) -> Table:
    """A table whose cells are never cut short: an address, hash or id that does not fit
    is folded onto the next line, never replaced by an ellipsis. What an approver or an
    auditor reads must be the whole value, whatever the terminal width."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    for c in cols:
        c.overflow = "fold"
    return Table(*cols, **kwargs)


ServerOpt = typer.Option(DEFAULT_SERVER, "--server", envvar="TANDEM_SERVER", help="Tandem server URL.")
KeystoreOpt = typer.Option(
    ...,
    "--keystore",
    "-k",
    envvar="TANDEM_KEYSTORE",
    help="Your keystore file (made by `tandem id create`). The passphrase is asked for, "
    "or read from TANDEM_PASSPHRASE in scripts.",
)
ClaimTokenOpt = typer.Option(
    None,
    "--claim-token",
    envvar="TANDEM_CLAIM_TOKEN",
    help="The one-time claim token `tandem init` printed to the operator.",
    show_envvar=True,
)
TotpOpt = typer.Option(
    None,
    "--totp",
    envvar="TANDEM_TOTP",
    help="Your current 6-digit code; asked for when omitted (scripts may set TANDEM_TOTP).",
)
TotpFromKeystoreOpt = typer.Option(
    False,
    "--totp-from-keystore",
    help="Compute the code from the seed in your keystore (scripts and demos; a real member "
    "types the code from an authenticator app).",
)


def run_cli(fn: Callable[[], Any]) -> None:
    """Call ``fn`` inside the CLI's one error boundary: a Tandem Error becomes its message,
    code and hint on stderr and the exit status of its kind (see tandem.cli.exit_codes);
    anything else becomes a one-line internal error, never a traceback."""
    errors_boundary.call(fn)


def passphrase(*, confirm: bool = False) -> str:
    env = os.environ.get("TANDEM_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        raise KeystoreError("no passphrase: set TANDEM_PASSPHRASE or run in a terminal")
    first = getpass.getpass("Keystore passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise KeystoreError("passphrases do not match")
    return first


def load_member(path: Path) -> MemberSecrets:
    """Open the keystore; its genesis pin (``<stem>.pin.json`` beside it) becomes what
    every client call of this command trusts for that member."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from None
    member = MemberSecrets.from_keystore(data, passphrase())
    client_pin.remember_keystore(member.member_id, path)
    return member


def client(server: str) -> Client:
    return Client(server)


def totp_code(cl: Client, member: MemberSecrets, totp: str | None, from_keystore: bool) -> str:
    if totp:
        return totp
    if from_keystore:
        return cl.totp_code(member)
    return str(typer.prompt("TOTP code from your authenticator", hide_input=False))


def read_json(path: Path) -> Any:
    try:
        return loads_strict(path.read_bytes())
    except OSError as exc:
        raise KeystoreError(f"cannot read {path}: {exc.strerror}") from None


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def show(doc: Any) -> None:
    console.print_json(json.dumps(doc, ensure_ascii=False))
