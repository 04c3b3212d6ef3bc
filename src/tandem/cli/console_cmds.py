"""`tandem console`: the member's local web UI (see docs/console.md)."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from tandem.cli.common import ServerOpt, console
from tandem.client import Client
from tandem.errors import InputError

ConsoleKeystoreOpt = typer.Option(
    ...,
    "--keystore",
    "-k",
    envvar="TANDEM_KEYSTORE",
    help="Your keystore file (made by `tandem id create`). Its passphrase is asked on the console's "
    "first page, once per run.",
)


def console_command(
    keystore: Path = ConsoleKeystoreOpt,
    server: str = ServerOpt,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the link; do not open a browser.")
    ] = False,
    idle_minutes: Annotated[
        int, typer.Option(help="Lock the key again after this many minutes without use.")
    ] = 10,
    port: Annotated[int, typer.Option(help="Local port (0: a random free one).")] = 0,
) -> None:
    """Open your console: a local web page for the queue, reviews and approvals, the audit
    log and proofs. Served on 127.0.0.1 by this install; the passphrase is asked on the page."""
    from tandem.console.server import bind, make_server, opening_url
    from tandem.console.state import ConsoleState

    if idle_minutes < 1:
        raise InputError("--idle-minutes must be at least 1")
    if not keystore.is_file():
        raise InputError(f"no keystore at {keystore}")
    state = ConsoleState(keystore=keystore, client=Client(server), idle_seconds=idle_minutes * 60)
    sock = bind(port)
    srv = make_server(state, sock)
    url = opening_url(state)
    console.print(f"Tandem console for {keystore} (server {server})")
    console.print(f"open: {url}")
    console.print("The link carries this run's token; keep it to yourself. Ctrl-C stops the console.")
    if not no_open:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    state.watch_idle()
    srv.run(sockets=[sock])


def register(app: typer.Typer) -> None:
    app.command("console")(console_command)
