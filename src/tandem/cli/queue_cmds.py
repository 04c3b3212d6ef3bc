"""`tandem queue`: everything waiting for this member, as the console's queue page shows
it, in a terminal: approvals given and required, who asked (by name), time left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tandem.cli import common
from tandem.cli.common import (
    JsonOpt,
    KeystoreOpt,
    ServerOpt,
    console,
    load_member,
    show,
    whole_table,
)


def _mine(flag: bool, done: bool) -> str:
    return "approved by you" if done else ("yours to decide" if flag else "")


def queue_command(keystore: Path = KeystoreOpt, server: str = ServerOpt, as_json: bool = JsonOpt) -> None:
    """What waits for a decision: withdrawals, proposals (membership, policy, address book)
    and ceremonies, with approvals given/required, who asked, and time left."""
    from tandem.console import pages

    cl = common.client(server)
    member = load_member(keystore)
    directory = pages.directory(cl, member)
    waiting: dict[str, Any] = pages.queue(cl, member, directory)
    if as_json:
        show(waiting)
        return
    if directory.warning:
        common.err_console.print(f"warning: {directory.warning}")
    _print(waiting)


def _print(waiting: dict[str, Any]) -> None:
    if not any(waiting.values()):
        console.print("nothing is waiting for a decision")
        return
    if waiting["withdrawals"]:
        columns = ("withdrawal", "amount", "destination", "requested by", "approvals", "", "time left")
        table = whole_table(*columns, "fingerprint", title="Withdrawals")
        for w in waiting["withdrawals"]:
            dest = f"{w['destination']} ({w['label']})" if w["label"] else f"{w['destination']} (no label)"
            table.add_row(
                w["id"],
                f"{w['amount']} on {w['chain']}",
                dest,
                w["requester"],
                f"{w['given']}/{w['required']} ({w['required_text']})",
                _mine(w["mine_to_approve"], w["approved_by_me"]),
                f"{w['time_left']} (until {w['expires']})",
                w["fingerprint"],
            )
        console.print(table)
    if waiting["proposals"]:
        table = whole_table(
            "proposal", "what", "proposed by", "approvals", "", "time left", title="Proposals"
        )
        for p in waiting["proposals"]:
            table.add_row(
                p["id"],
                p["summary"],
                p["proposer"],
                f"{p['given']}/{p['required']}",
                _mine(p["mine_to_decide"], p["approved_by_me"]),
                f"{p['time_left']} (until {p['expires']})",
            )
        console.print(table)
    if waiting["ceremonies"]:
        table = whole_table(
            "ceremony", "kind", "status", "proposed by", "approvals", "time left", title="Ceremonies"
        )
        for c in waiting["ceremonies"]:
            table.add_row(
                c["id"],
                str(c["kind"]),
                str(c["status"]),
                c["proposer"],
                str(c["given"]) + (" (yours given)" if c["approved_by_me"] else ""),
                f"{c['time_left']} (until {c['expires']})",
            )
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("queue")(queue_command)
