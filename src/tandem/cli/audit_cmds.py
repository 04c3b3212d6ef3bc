"""`tandem audit ...`: export, offline verification, inclusion and consistency proofs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from tandem.cli.common import (
    KeystoreOpt,
    ServerOpt,
    console,
    load_member,
    read_json,
    run_cli,
    show,
    write_json,
)
from tandem.client import Client
from tandem.core import audit, merkle
from tandem.core.membership import LogState
from tandem.errors import InputError, VerificationError


def verify_export_file(
    file: Path, checkpoint: dict[str, object], key: bytes, *, genesis_hash: str | None = None
) -> tuple[audit.VerifyReport, int]:
    """Structure, chain, Merkle root and checkpoint; every actor signature against the
    membership in force at its point of the log; and every effect on membership, policy
    and address book recomputed from the member-signed proposals and approvals (an
    entry the service key wrote alone is refused, naming it)."""
    raw_lines = [line for line in file.read_bytes().split(b"\n") if line]
    state = LogState(genesis_hash_pin=genesis_hash)
    with Progress(
        TextColumn("verifying"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=len(raw_lines) < 20000,
    ) as progress:
        task = progress.add_task("verify", total=len(raw_lines))
        report = audit.verify_export(
            raw_lines,
            checkpoint,
            key,
            replay=state.observe_entry,
            progress=lambda n: progress.update(task, completed=n),
        )
    if state.service_sign_public is not None and state.service_sign_public != key:
        raise VerificationError("the log's genesis names another service key than the one given")
    return report, state.signatures_verified


def register(audit_app: typer.Typer) -> None:
    @audit_app.command("export")
    def export(
        out: Annotated[Path, typer.Option(help="Directory for audit.jsonl and checkpoint.json.")] = Path(
            "audit-export"
        ),
        keystore: Path = KeystoreOpt,
        server: str = ServerOpt,
    ) -> None:
        """Download the whole log (JSON Lines) and the signed checkpoint that covers it."""

        def go() -> None:
            cl = Client(server)
            lines, checkpoint = cl.audit_export(load_member(keystore))
            out.mkdir(parents=True, exist_ok=True)
            (out / "audit.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            write_json(out / "checkpoint.json", checkpoint)
            write_json(out / "service-key.json", cl.deployment()["service"])
            console.print(
                f"{len(lines)} entries -> {out / 'audit.jsonl'}, checkpoint -> {out / 'checkpoint.json'}"
            )

        run_cli(go)

    @audit_app.command("verify")
    def verify(
        file: Annotated[Path, typer.Argument(help="audit.jsonl from `tandem audit export`.")],
        checkpoint: Annotated[
            Path | None, typer.Option(help="Checkpoint JSON (default: beside the file).")
        ] = None,
        service_key: Annotated[
            str | None,
            typer.Option(
                help="Service signing public key (hex), obtained independently of the export. "
                "Default: service-key.json beside the file."
            ),
        ] = None,
        genesis_hash: Annotated[
            str | None,
            typer.Option(help="The genesis hash you pinned; the log must start from that genesis."),
        ] = None,
    ) -> None:
        """Verify an export offline: hash chain, every actor signature, every membership,
        policy and address-book effect against its signed proposal and approvals, Merkle
        root, signed checkpoint. Names the first bad entry and exits non-zero on any problem."""

        def go() -> None:
            cp = read_json(checkpoint or file.parent / "checkpoint.json")
            key_hex = service_key or read_json(file.parent / "service-key.json")["sign_public"]
            try:
                key = bytes.fromhex(key_hex)
            except ValueError:
                raise InputError("--service-key must be hex") from None
            report, signed = verify_export_file(file, cp, key, genesis_hash=genesis_hash)
            console.print(
                f"[green]OK[/] {report.entries} entries; root {report.root}; "
                f"{signed} actor signatures re-verified; checkpoint signed by {audit.key_id(key)}"
            )

        run_cli(go)

    @audit_app.command("members")
    def members(
        genesis_hash: Annotated[
            str, typer.Option(help="The genesis hash you pinned when you joined the deployment.")
        ],
        keystore: Path = KeystoreOpt,
        server: str = ServerOpt,
    ) -> None:
        """The members as the log justifies them (from your pinned genesis, through
        member-signed proposals and approvals), checked against the server's list; a
        member or key the log does not justify is refused, naming it."""

        def go() -> None:
            from tandem import client_log

            rows = client_log.trusted_members(
                Client(server), load_member(keystore), genesis_hash_pin=genesis_hash
            )
            for m in sorted(rows, key=lambda r: (r.role.value, r.name)):
                console.print(f"{m.id}  {m.role.value:<9}  {m.name}")
            console.print(f"[green]OK[/] {len(rows)} members, each justified by the log")

        run_cli(go)

    @audit_app.command("inclusion")
    def inclusion(
        index: Annotated[int, typer.Argument(help="Entry index.")],
        keystore: Path = KeystoreOpt,
        server: str = ServerOpt,
        tree_size: Annotated[int | None, typer.Option(help="Tree size (default: latest).")] = None,
    ) -> None:
        """Fetch and check an RFC 6962 inclusion proof of one entry in a signed checkpoint."""

        def go() -> None:
            cl = Client(server)
            params = {"tree_size": tree_size} if tree_size else {}
            doc = cl.get(load_member(keystore), f"/v1/audit/inclusion/{index}", **params)
            cp = audit.verify_checkpoint(
                doc["checkpoint"], bytes.fromhex(cl.deployment()["service"]["sign_public"])
            )
            merkle.verify_inclusion(
                bytes.fromhex(doc["entry"]["hash"]),
                index,
                doc["tree_size"],
                [bytes.fromhex(p) for p in doc["proof"]],
                bytes.fromhex(cp["root"]),
            )
            show(doc)
            console.print(f"[green]OK[/] entry {index} is in the signed tree of size {doc['tree_size']}")

        run_cli(go)

    @audit_app.command("consistency")
    def consistency(
        old: Annotated[int, typer.Argument(help="Older tree size.")],
        new: Annotated[int, typer.Argument(help="Newer tree size.")],
        keystore: Path = KeystoreOpt,
        server: str = ServerOpt,
    ) -> None:
        """Prove the log of size NEW extends the log of size OLD without rewriting it."""

        def go() -> None:
            cl = Client(server)
            doc = cl.get(load_member(keystore), "/v1/audit/consistency", old=old, new=new)
            key = bytes.fromhex(cl.deployment()["service"]["sign_public"])
            a = audit.verify_checkpoint(doc["old_checkpoint"], key)
            b = audit.verify_checkpoint(doc["new_checkpoint"], key)
            merkle.verify_consistency(
                old,
                new,
                bytes.fromhex(a["root"]),
                bytes.fromhex(b["root"]),
                [bytes.fromhex(p) for p in doc["proof"]],
            )
            console.print(f"[green]OK[/] tree {new} is an append-only extension of tree {old}")

        run_cli(go)
