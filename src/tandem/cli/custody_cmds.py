"""Commands for ceremonies, key sets, withdrawals, policy and proofs (one module each)."""

from __future__ import annotations

import typer

from tandem.cli import ceremony_cmds, proof_cmds, withdrawal_cmds


def register(app: typer.Typer) -> None:
    ceremony_cmds.register(app)
    withdrawal_cmds.register(app)
    proof_cmds.register(app)
