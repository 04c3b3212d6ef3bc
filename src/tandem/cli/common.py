"""Shared CLI plumbing: options, keystores, prompts, JSON files and output. What a command
raises becomes a message and an exit status in one place, :mod:`tandem.cli.errors_boundary`."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Column, Table

from tandem.cli import errors_boundary
from tandem.client import DEFAULT_SERVER, Client
from tandem.client import pin as client_pin
from tandem.core.canonical import loads_strict
from tandem.core.identity import MIN_PASSPHRASE_LENGTH, MemberSecrets, check_passphrase
from tandem.errors import FloatNotAllowedError, InputError, KeystoreError, NotFoundError

# soft_wrap: lines are never broken by rich itself, so hashes, ids and paths stay whole
# for copy-paste and scripts whatever the terminal width (a pipe counts as 80 columns).
console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = errors_boundary.err_console


# Wide enough for any row of ids, hashes and addresses: piped output is never wrapped.
PIPED_WIDTH = 10_000


class WholeTable(Table):
    """In a terminal, a cell that does not fit folds onto the next line (never an
    ellipsis); piped or redirected, rows are never wrapped at all, so a script or grep
    sees each id, fingerprint and address whole on its row."""

    def __rich_console__(self, console: Any, options: Any) -> Any:
        if not console.is_terminal:
            options = options.update(width=PIPED_WIDTH)
            for column in self.columns:
                column.no_wrap = True
        yield from super().__rich_console__(console, options)


def whole_table(*columns: str | Column, **kwargs: Any) -> Table:
    """A table whose cells are never cut short: an address, hash or id that does not fit
    is folded onto the next line in a terminal, and never wrapped when piped. What an
    approver or an auditor reads must be the whole value, whatever the terminal width."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    for c in cols:
        c.overflow = "fold"
    return WholeTable(*cols, **kwargs)


# For commands whose output is JSON already: --json is accepted, so scripts can pass it
# to every command that shows or lists something.
JsonAlreadyOpt = typer.Option(False, "--json", help="Accepted for scripts; this command prints JSON already.")
LimitOpt = typer.Option(
    None,
    "--limit",
    min=1,
    help="Show only the first N, oldest first (without it, every one, read page by page).",
)
JsonOpt = typer.Option(
    False, "--json", help="Print the raw JSON (base units, ids, Unix seconds) instead of the table."
)


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


PASSPHRASE_TRIES = 3


def passphrase(*, confirm: bool = False) -> str:
    """The keystore passphrase: TANDEM_PASSPHRASE, or asked. A new one (``confirm``) is
    checked against the rule before it is asked a second time."""
    env = os.environ.get("TANDEM_PASSPHRASE")
    if env:
        if confirm:
            check_passphrase(env)
        return env
    if not sys.stdin.isatty():
        raise KeystoreError("no passphrase: set TANDEM_PASSPHRASE or run in a terminal")
    if not confirm:
        return getpass.getpass("Keystore passphrase: ")
    for _ in range(PASSPHRASE_TRIES):
        first = getpass.getpass(f"New keystore passphrase (at least {MIN_PASSPHRASE_LENGTH} characters): ")
        try:
            check_passphrase(first)
        except KeystoreError as exc:
            err_console.print(f"{exc.message}; try again")
            continue
        if getpass.getpass("Repeat passphrase: ") == first:
            return first
        err_console.print("the two passphrases differ; try again")
    raise KeystoreError(f"no passphrase set after {PASSPHRASE_TRIES} tries; nothing was written")


def open_keystore(path: Path) -> tuple[MemberSecrets, str]:
    """The member's secrets and the passphrase that opened them. Typed passphrases get
    three tries; one from TANDEM_PASSPHRASE gets one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from None
    tries = 1 if os.environ.get("TANDEM_PASSPHRASE") else PASSPHRASE_TRIES
    for left in range(tries - 1, -1, -1):
        secret = passphrase()
        try:
            return MemberSecrets.from_keystore(data, secret), secret
        except KeystoreError as exc:
            if left == 0 or not exc.message.startswith("wrong passphrase"):
                raise
            err_console.print(f"wrong passphrase for {path}; {left} {'try' if left == 1 else 'tries'} left")
    raise AssertionError("unreachable")  # pragma: no cover


def load_member(path: Path) -> MemberSecrets:
    """Open the keystore; its genesis pin (``<stem>.pin.json`` beside it) becomes what
    every client call of this command trusts for that member."""
    member, _ = open_keystore(path)
    client_pin.remember_keystore(member.member_id, path)
    return member


def normal_totp(code: str) -> str:
    """A code as people type it ("123 456", "123-456") reduced to its six digits."""
    digits = re.sub(r"[\s-]", "", code)
    if len(digits) != 6 or not digits.isascii() or not digits.isdigit():
        raise InputError("a TOTP code is the 6 digits your authenticator app shows (spaces are fine)")
    return digits


def client(server: str) -> Client:
    return Client(server)


def totp_code(cl: Client, member: MemberSecrets, totp: str | None, from_keystore: bool) -> str:
    if totp:
        return normal_totp(totp)
    if from_keystore:
        return cl.members.totp_code(member)
    try:
        typed = str(typer.prompt("TOTP code from your authenticator", hide_input=False))
    except (typer.Abort, EOFError):
        raise InputError(
            "no TOTP code: type it when asked, or pass --totp CODE (scripts may set TANDEM_TOTP)"
        ) from None
    return normal_totp(typed)


def show_totp_seed(member: MemberSecrets) -> None:
    """The seed for an authenticator app: a QR code drawn in the terminal (Unicode half
    blocks) beside the otpauth:// URI, for apps that take the text."""
    import io

    import segno

    uri = member.otpauth_uri()
    drawn = io.StringIO()
    segno.make(uri, error="m").terminal(out=drawn, compact=True)
    console.print("Scan this with your authenticator app (shown once, on this screen only):")
    console.print(drawn.getvalue(), markup=False, end="")
    console.print(f"or add it by hand: {uri}", markup=False)


def rewrite_keystore(path: Path, member: MemberSecrets, secret: str, *, keep_totp_seed: bool) -> None:
    """Replace ``path`` with ``member``'s keystore (same passphrase and scrypt cost)."""
    cost = int(loads_strict(path.read_bytes())["kdf"]["log2_n"])
    tmp = path.with_name(path.name + ".new")
    tmp.touch(mode=0o600)
    tmp.write_bytes(member.to_keystore(secret, log2_n=cost, keep_totp_seed=keep_totp_seed))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    """A JSON file, parsed strictly; a refusal names the file and where in it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"no file {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return loads_strict(data)
    except FloatNotAllowedError as exc:
        raise FloatNotAllowedError(f"{path}: {_where_floats(data) or exc.message}") from None
    except InputError as exc:
        raise type(exc)(f"{path}: {exc.message}", details=exc.details) from None


AMOUNT_WORDS = ("amount", "limit", "fee", "price", "value", "balance", "max", "min")


def _where_floats(data: bytes) -> str | None:
    """Which fields of a document hold a floating-point number, and what to write there."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    found: list[tuple[str, float]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, float):
            found.append((where, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(doc, "")
    if not found:
        return None
    parts = []
    for where, value in found[:3]:
        last = where.rsplit(".", 1)[-1].lower()
        if any(word in last for word in AMOUNT_WORDS):
            parts.append(f'{where} is {value!r}: write an amount as a decimal string, e.g. "{value}"')
        else:
            parts.append(f"{where} is {value!r}: write a whole number, e.g. {int(value)}")
    return "floating-point numbers are not accepted; " + "; ".join(parts)


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def show(doc: Any) -> None:
    console.print_json(json.dumps(doc, ensure_ascii=False))
