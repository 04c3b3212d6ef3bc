"""`tandem fetch ...`: an auditor downloads a self-verifying file with no keystore and no
session, and checks it offline against the genesis it trusts (ADR 0012).

Only the base install is needed (httpx and the core verifiers); nothing here imports the
server's stack, which ``tests/api/test_auditor_install.py`` checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tandem.cli.common import ServerOpt, console
from tandem.client import Client
from tandem.client import public_files as pf

fetch_app = typer.Typer(
    help="Download a self-verifying file without a session (no keystore needed) and verify it "
    "offline: the signed audit checkpoint, inclusion and consistency proofs, a proof-of-"
    "ownership bundle, a keygen ceremony transcript. Give --genesis with --genesis-hash, or "
    "--pin, to have it checked.",
    no_args_is_help=True,
)

OutOpt = typer.Option("--out", "-o", help="Where to write the file.")
GenesisHashOpt = typer.Option(
    "--genesis-hash",
    help="The genesis hash you were told by another channel; with --genesis, the file is "
    "verified against the service key that genesis names.",
)
GenesisOpt = typer.Option(
    "--genesis", help="The signed genesis file (genesis.json) that hashes to --genesis-hash."
)
PinOpt = typer.Option(
    "--pin",
    help="A pin file (<keystore>.pin.json, or one `tandem pin genesis` wrote) to verify against "
    "instead of --genesis.",
)
TreeSizeOpt = typer.Option("--tree-size", help="Of the tree of this many entries (default: the latest).")


def _fetch_and_verify(
    what: pf.Fetch,
    *,
    server: str,
    out: Path,
    genesis_hash: str | None,
    genesis: Path | None,
    pin: Path | None,
    nonce: str | None = None,
) -> None:
    # The trust is read before anything is fetched, so a wrong pin costs no request.
    trust = pf.trust_from(genesis_hash=genesis_hash, genesis_file=genesis, pin_file=pin)
    data = Client(server).public_files.download(what, out)
    console.print(f"{what.kind} -> {out} ({len(data):,} bytes)")
    if trust is None:
        console.print(
            "[yellow]not verified[/]: pass --genesis genesis.json --genesis-hash HASH (or --pin "
            "FILE) to check it offline"
        )
        return
    try:
        lines = pf.verify(what.kind, data, trust, nonce=nonce)
    except Exception:
        console.print(f"[bold red]FAILED[/]: {out} was written but does not verify")
        raise
    for line in lines:
        console.print(f"  ok: {line}", markup=False, highlight=False)
    console.print(f"[bold green]OK[/]: {out} verifies against genesis {trust.genesis_hash}")


@fetch_app.command("checkpoint")
def fetch_checkpoint(  # noqa: PLR0917 - typer maps options to parameters
    out: Annotated[Path, OutOpt],
    server: str = ServerOpt,
    tree_size: Annotated[int | None, TreeSizeOpt] = None,
    genesis_hash: Annotated[str | None, GenesisHashOpt] = None,
    genesis: Annotated[Path | None, GenesisOpt] = None,
    pin: Annotated[Path | None, PinOpt] = None,
) -> None:
    """The signed audit checkpoint: size, Merkle root and last entry hash of the log."""
    _fetch_and_verify(
        pf.checkpoint(tree_size), server=server, out=out, genesis_hash=genesis_hash, genesis=genesis, pin=pin
    )


@fetch_app.command("inclusion")
def fetch_inclusion(  # noqa: PLR0917 - typer maps options to parameters
    index: Annotated[int, typer.Argument(help="Entry index (0 is the genesis entry).")],
    out: Annotated[Path, OutOpt],
    server: str = ServerOpt,
    tree_size: Annotated[int | None, TreeSizeOpt] = None,
    genesis_hash: Annotated[str | None, GenesisHashOpt] = None,
    genesis: Annotated[Path | None, GenesisOpt] = None,
    pin: Annotated[Path | None, PinOpt] = None,
) -> None:
    """RFC 6962 inclusion proof of one entry (its hash, not its content) in a signed tree."""
    _fetch_and_verify(
        pf.inclusion(index, tree_size),
        server=server,
        out=out,
        genesis_hash=genesis_hash,
        genesis=genesis,
        pin=pin,
    )


@fetch_app.command("consistency")
def fetch_consistency(  # noqa: PLR0917 - typer maps options to parameters
    old: Annotated[int, typer.Argument(help="Older tree size.")],
    new: Annotated[int, typer.Argument(help="Newer tree size.")],
    out: Annotated[Path, OutOpt],
    server: str = ServerOpt,
    genesis_hash: Annotated[str | None, GenesisHashOpt] = None,
    genesis: Annotated[Path | None, GenesisOpt] = None,
    pin: Annotated[Path | None, PinOpt] = None,
) -> None:
    """RFC 6962 consistency proof: the log of size NEW extends the log of size OLD."""
    _fetch_and_verify(
        pf.consistency(old, new), server=server, out=out, genesis_hash=genesis_hash, genesis=genesis, pin=pin
    )


@fetch_app.command("proofs")
def fetch_proofs(  # noqa: PLR0917 - typer maps options to parameters
    challenge_id: Annotated[str, typer.Argument(help="The proof challenge id (pc_...).")],
    out: Annotated[Path, OutOpt],
    server: str = ServerOpt,
    challenge: Annotated[
        str | None, typer.Option("--challenge", help="The challenge nonce you issued (checked if given).")
    ] = None,
    genesis_hash: Annotated[str | None, GenesisHashOpt] = None,
    genesis: Annotated[Path | None, GenesisOpt] = None,
    pin: Annotated[Path | None, PinOpt] = None,
) -> None:
    """A completed proof-of-ownership bundle (the same file `tandem verify proofs` reads)."""
    _fetch_and_verify(
        pf.proofs(challenge_id),
        server=server,
        out=out,
        genesis_hash=genesis_hash,
        genesis=genesis,
        pin=pin,
        nonce=challenge,
    )


@fetch_app.command("transcript")
def fetch_transcript(  # noqa: PLR0917 - typer maps options to parameters
    ceremony_id: Annotated[str, typer.Argument(help="The ceremony id (cer_...).")],
    out: Annotated[Path, OutOpt],
    server: str = ServerOpt,
    genesis_hash: Annotated[str | None, GenesisHashOpt] = None,
    genesis: Annotated[Path | None, GenesisOpt] = None,
    pin: Annotated[Path | None, PinOpt] = None,
) -> None:
    """A keygen ceremony's transcript (public keys, addresses, signed actions). A reshare's
    transcript carries sealed shares and is read with a session (`tandem ceremony transcript`)."""
    _fetch_and_verify(
        pf.transcript(ceremony_id),
        server=server,
        out=out,
        genesis_hash=genesis_hash,
        genesis=genesis,
        pin=pin,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(fetch_app, name="fetch")
